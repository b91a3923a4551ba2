"""docs/app.png: `hypergen app` with the shipped zoo, real SmolLM2 + MiniLM and the default generator, driven
in headless Chromium (Debian's chromium + chromium-driver, selenium), one description and two inputs.

    .venv/bin/python bench/app_screenshot.py [--out docs/app.png] [--port 8765]

The browser test (tests/test_app_browser.py) checks the same flow on the tiny model in CI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

DESCRIPTION = "Label each tweet as sarcastic or not. Answer Yes or No."
INPUTS = "Great, another Monday. Just what I needed.\nThe sunset tonight was beautiful."


def main() -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from hypergen.testing import app_healthy, headless_chromium

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/app.png")
    ap.add_argument("--port", type=int, default=8765)
    args = ap.parse_args()
    hypergen = str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "hypergen")
    proc = subprocess.Popen([hypergen, "app", "--port", str(args.port)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{args.port}"
    try:
        if not app_healthy(url, proc, timeout=120):
            raise SystemExit(f"the app did not start on {url}")
        driver = headless_chromium(shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver"))
        try:
            wait = WebDriverWait(driver, 300)
            driver.get(url)
            wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, 'textarea[aria-label="Describe the task"]'))).send_keys(DESCRIPTION)
            driver.find_element(By.CSS_SELECTOR, 'textarea[aria-label="Inputs, one per line"]').send_keys(INPUTS)
            driver.find_element(By.XPATH, '//button[.//p[text()="Generate adapter"]]').click()
            table = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, '[data-testid="stTable"]')))
            for row in table.find_elements(By.CSS_SELECTOR, "tbody tr"):
                print(" | ".join(c.text for c in row.find_elements(By.CSS_SELECTOR, "th,td")))
            if driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'):
                raise SystemExit("the app showed an exception")
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg')) >= 2)
            time.sleep(2)  # let the charts finish drawing
            driver.save_screenshot(args.out)
            print(f"wrote {args.out}")
        finally:
            driver.quit()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)


if __name__ == "__main__":
    main()
