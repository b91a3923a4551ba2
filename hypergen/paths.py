"""Where hypergen keeps things outside git: one cache root, overridable with HYPERGEN_HOME."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The source checkout in an editable install; in an installed wheel, just site-packages."""
SHIPPED_DATA = Path(__file__).resolve().parent / "_shipped"
"""Where a wheel carries the committed data files (setup.py copies data/splits and data/descriptions)."""


def shipped_data(rel: str) -> Path:
    """A committed data file ("splits/bigbench.json"): data/<rel> in a source checkout, the wheel's copy
    otherwise, so `pip install .` finds the split and the training descriptions too."""
    return REPO_ROOT / "data" / rel if is_checkout() else SHIPPED_DATA / rel


def is_checkout() -> bool:
    """Whether hypergen runs from its source tree (an editable install or the repo on sys.path)."""
    return (REPO_ROOT / "pyproject.toml").is_file()


def home() -> Path:
    """The cache root (models, downloads, task data, runs). Default ~/.cache/hypergen."""
    return Path(os.environ.get("HYPERGEN_HOME", Path.home() / ".cache" / "hypergen")).expanduser()


def downloads_dir() -> Path:
    """Wheels and sdists fetched from PyPI with `pip download --no-deps`."""
    return home() / "downloads"


def models_dir() -> Path:
    """Converted models: plain safetensors folders that load in ~0.5 s."""
    return home() / "models"


def data_dir() -> Path:
    """Third-party task data, extracted in place (never copied into the repo)."""
    return home() / "data"


def runs_dir() -> Path:
    """Training runs: checkpoints, logs, W&B offline files. HYPERGEN_RUNS moves them alone (the tests
    use a temporary folder, so they never leave runs in the user's cache)."""
    return Path(os.environ["HYPERGEN_RUNS"]).expanduser() if os.environ.get("HYPERGEN_RUNS") else home() / "runs"


@contextmanager
def atomic_folder(final: Path):
    """Yield a temporary sibling folder; on success it replaces `final` in one rename, on failure it is
    removed. Readers never see a half-written folder, whatever kills the writer: an old `final` is renamed
    aside (a dot-folder, which the zoo sweeps) before the new one takes its name, so a kill leaves it whole
    or absent, never half deleted."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    old = final.parent / f"{tmp.name}-old"
    try:
        yield tmp
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
