"""hypergen as users install it: build the wheel, install it (not editable) into a fresh venv, run it from
outside the repository.

The fresh venv borrows the project venv's dependencies through a .pth line naming its site-packages: a path
line adds that folder to sys.path without running the .pth files in it, so the editable install's finder
(__editable__.hypergen-*.pth) stays out and `import hypergen` can only find the installed wheel. Offline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from hypergen.paths import REPO_ROOT

pytestmark = pytest.mark.slow
DESCRIPTION = "Give the antonym of the word."
# What a clone holds, less what building or running leaves behind.
NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "training.safetensors")


def _run(cmd, cwd, env, check=True):
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, f"{cmd[0]} ... failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(bin folder, env, folder outside the repo) of a fresh venv holding only the built wheel."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HYPERGEN_"))}
    env.update(HYPERGEN_HOME=str(tmp / "home"), PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    # Build from a copy: setuptools leaves build/ behind, and a stale build/lib would slip into the wheel.
    src = shutil.copytree(REPO_ROOT, tmp / "src", ignore=NOT_SOURCE)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", src, "-w", tmp / "wheels"], tmp, env)
    (wheel,) = (tmp / "wheels").glob("hypergen-*.whl")

    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp, env)
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, env).stdout.strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}  # this venv's: torch, pip, ...
    (site / "project-deps.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    # The new venv's own python runs pip, so the `hypergen` script it writes starts that python.
    _run([python, "-m", "pip", "install", "--no-deps", "--ignore-installed", wheel], tmp, env)
    return wheel, venv / "bin", env, tmp


def test_wheel_holds_the_package_and_its_data(installed):
    wheel = installed[0]
    names = zipfile.ZipFile(wheel).namelist()
    sources = {p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "hypergen").rglob("*.py")}
    assert sources <= set(names), sources - set(names)  # every module, new subpackages included
    assert {"hypergen/_shipped/splits/bigbench.json", "hypergen/_shipped/descriptions/bigbench.json"} <= set(names)
    assert not [n for n in names if n.split("/")[0] in ("tests", "data", "zoo", "generators", "app")]


def test_installed_hypergen_is_the_wheel_and_finds_its_data(installed):
    _, bin_dir, env, outside = installed
    code = ("import hypergen, hypergen.paths as p; from hypergen.tasks import load_split; "
            "from hypergen.tasks.descriptions import load_descriptions; "
            "print(hypergen.__file__, p.is_checkout(), load_split().counts['heldout'], len(load_descriptions()) > 0)")  # fmt: skip
    out = _run([bin_dir / "python", "-c", code], outside, env).stdout.split()
    assert Path(out[0]).is_relative_to(bin_dir.parent) and out[1] == "False"
    assert int(out[2]) > 0 and out[3] == "True"


def test_installed_cli_generates_from_outside_the_repo(installed, tiny_zoo, tiny_path):
    _, bin_dir, env, outside = installed
    assert "generate" in _run([bin_dir / "hypergen", "--help"], outside, env).stdout
    args = [bin_dir / "hypergen", "generate", DESCRIPTION, "--generator", "nearest", "--encoder", "fake", "--base", tiny_path, "--device", "cpu"]
    r = _run([*args, "--zoo", tiny_zoo.root, "--out", outside / "adapter", "--input", "hot"], outside, env)
    assert "generator: nearest" in r.stdout
    assert (outside / "adapter" / "adapter_model.safetensors").is_file()


def test_installed_cli_without_a_zoo_says_where_it_looks(installed, tiny_path):
    _, bin_dir, env, outside = installed
    r = _run([bin_dir / "hypergen", "generate", DESCRIPTION, "--generator", "nearest", "--encoder", "fake", "--base", tiny_path], outside, env, check=False)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    message = r.stderr.strip()
    assert len(message.splitlines()) == 1, message
    # Where it looked (the cache build) and how to point it at the shipped zoo.
    assert str(Path(env["HYPERGEN_HOME"]) / "zoo") in message and "HYPERGEN_ZOO" in message, message


def test_installed_cli_finds_the_zoo_through_hypergen_zoo(installed, tiny_zoo, tiny_path):
    _, bin_dir, env, outside = installed
    r = _run([bin_dir / "hypergen", "generate", DESCRIPTION, "--generator", "nearest", "--encoder", "fake", "--base", tiny_path, "--device", "cpu"],
             outside, {**env, "HYPERGEN_ZOO": str(tiny_zoo.root)})  # fmt: skip
    assert "generator: nearest" in r.stdout


def test_installed_app_says_it_needs_a_source_checkout(installed, tiny_zoo):
    _, bin_dir, env, outside = installed
    r = _run([bin_dir / "hypergen", "app", "--zoo", tiny_zoo.root], outside, env, check=False)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "source checkout" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
