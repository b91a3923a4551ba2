"""End to end in a real browser: `hypergen app` serves the page on a free local port (tiny zoo and model,
fake encoder), headless Chromium types a description and inputs, clicks generate and sees the adapted
answers. (docs/app.png is the real app: bench/app_screenshot.py.)

Needs Debian's `chromium` and `chromium-driver`; skipped without them unless HYPERGEN_REQUIRE_BROWSER=1 (CI).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from hypergen.testing import app_healthy, headless_chromium

pytestmark = pytest.mark.slow
# HYPERGEN_SCREENSHOT=PATH keeps the tiny-model screenshot; docs/app.png comes from bench/app_screenshot.py
SCREENSHOT = os.environ.get("HYPERGEN_SCREENSHOT")
DESCRIPTION = "Give the antonym of the word: the word with the opposite meaning."


@pytest.fixture()
def browser():
    """(chromium, chromedriver); asked for before `server`, so a missing browser skips before the app starts."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = [n for n, p in (("chromium", chromium), ("chromium-driver", driver)) if not p]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        msg = f"browser test needs {', '.join(missing)}: apt-get install -y chromium chromium-driver; pip install -e '.[test]'"
        if os.environ.get("HYPERGEN_REQUIRE_BROWSER") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return chromium, driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_command(port: int, zoo: str, base: str) -> list[str]:
    """`hypergen app ...` on the tiny zoo and model."""
    opts = {"port": port, "zoo": zoo, "base": base, "encoder": "fake", "generator": "mix", "device": "cpu"}
    return [sys.executable, "-m", "hypergen.cli", "app", *[x for k, v in opts.items() for x in (f"--{k}", str(v))]]


@pytest.fixture()
def server(tiny_zoo, tiny_path, tmp_path):
    port = _free_port()
    log = open(tmp_path / "server.log", "w+")
    proc = subprocess.Popen(_serve_command(port, str(tiny_zoo.root), str(tiny_path)), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        if not app_healthy(url, proc, timeout=120):
            log.seek(0)
            pytest.fail(f"the app did not start (exit {proc.poll()}):\n{log.read()[-3000:]}")
        yield url, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the CLI and the streamlit process it started
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_describe_generate_and_answer_in_chromium(browser, server, tmp_path):
    chromium, chromedriver = browser
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, log = server
    profile = tempfile.mkdtemp(prefix="hypergen-chromium-")
    driver = headless_chromium(chromium, chromedriver, profile)
    try:
        wait = WebDriverWait(driver, 120)
        driver.get(url)
        area = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, 'textarea[aria-label="Describe the task"]')))
        area.send_keys(DESCRIPTION)
        driver.find_element(By.CSS_SELECTOR, 'textarea[aria-label="Inputs, one per line"]').send_keys("hot\nbig")
        driver.find_element(By.XPATH, '//button[.//p[text()="Generate adapter"]]').click()
        table = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, '[data-testid="stTable"]')))
        headers = [h.text for h in table.find_elements(By.CSS_SELECTOR, "th")]
        assert any(h.startswith("adapted") for h in headers) and any(h.startswith("base") for h in headers), headers  # "+ description" in the +desc mode
        rows = [r.find_elements(By.CSS_SELECTOR, "th,td") for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")]
        assert [r[0].text for r in rows] == ["hot", "big"]
        page = driver.find_element(By.TAG_NAME, "body").text
        assert "Nearest experts" in page and "Zoo map" in page and " ms" in page and "Download adapter" in page
        assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg')) >= 2)
        time.sleep(1.5)  # let the charts finish drawing
        shot = Path(SCREENSHOT) if SCREENSHOT else tmp_path / "app.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    except Exception:
        log.seek(0)
        print("server log:\n" + log.read()[-3000:])
        raise
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
