"""`hypergen app`: serve the Streamlit app (app/streamlit_app.py) on one local port.

The app reads its AppSettings (zoo, base model, encoder, generator selected at start, device) from
HYPERGEN_APP_* environment variables, so the same script serves the shipped zoo or, in tests, the tiny
model and fake encoder; their defaults are api.generate's, so the app and the API never disagree.
The command execs into `streamlit run`: the process a user or supervisor signals is the server itself.
Nothing heavy is imported here: `hypergen --help` stays fast.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
from dataclasses import asdict, dataclass, fields
from typing import Annotated

import typer

from hypergen import api, paths
from hypergen.cli_options import Fields, typed
from hypergen.errors import HypergenError

SCRIPT = paths.REPO_ROOT / "app" / "streamlit_app.py"  # only in a source checkout: the wheel ships no app/
_GENERATE = inspect.signature(api.generate).parameters  # the app serves api.generate: its defaults are the app's


@dataclass(frozen=True)
class AppSettings:
    """What the app serves; `hypergen app` passes it to the Streamlit script as HYPERGEN_APP_* variables.

    zoo: the zoo folder (default: HYPERGEN_ZOO, the shipped zoo/, else the cache build). base: a local
    Hugging Face model folder instead of SmolLM2. encoder: the description encoder, minilm (real) or
    fake (tests). generator: the generator selected at start (default: the best by evaluation).
    device: auto, cpu or cuda.
    """

    zoo: str | None = None
    base: str | None = None
    encoder: str = _GENERATE["encoder_name"].default
    generator: str | None = None
    device: str = _GENERATE["device"].default

    def env(self) -> dict[str, str]:
        """The HYPERGEN_APP_* variables for these settings (None: unset, the app's default applies)."""
        return {f"HYPERGEN_APP_{k.upper()}": str(v) for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_env(cls, environ=os.environ) -> AppSettings:
        """The settings the HYPERGEN_APP_* variables give; an unset or empty one keeps its default."""
        given = {f.name: environ.get(f"HYPERGEN_APP_{f.name.upper()}") for f in fields(cls)}
        return cls(**{k: v for k, v in given.items() if v})


@typed(settings=Fields(AppSettings))
def app(port: Annotated[int, typer.Option(help="Port on 127.0.0.1 to serve on.")] = 8501, settings: AppSettings = AppSettings()) -> None:
    """Serve the "describe your task" web app: one resident base model shared by every browser session."""
    if not paths.is_checkout():
        raise HypergenError("`hypergen app` runs from a source checkout of hypergen (an installed wheel ships no app/): clone the repository and pip install -e '.[app]'.")
    if not SCRIPT.is_file():
        raise HypergenError(f"{SCRIPT} is missing from this checkout: restore it (git checkout app/) to run `hypergen app`.")
    if importlib.util.find_spec("streamlit") is None:
        raise HypergenError("Streamlit is not installed: pip install -e '.[app]' (or `make install`).")
    if settings.generator and settings.generator not in api.list_generators():  # the page would quietly pick another
        raise HypergenError(f"Unknown generator {settings.generator!r}; available: {', '.join(api.list_generators())}.")
    from hypergen.base import check_base_folder, pick_device  # torch, only now: a wrong device or base fails here, not on every page

    pick_device(settings.device)
    if settings.base:
        check_base_folder(settings.base)
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(SCRIPT),
        "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false",  # no network here, and none wanted
        "--server.fileWatcherType", "none",
        "--client.showErrorDetails", "none",  # tracebacks go to this terminal, never to the page
        "--client.toolbarMode", "minimal",
    ]
    env = {**os.environ, **settings.env()}
    typer.echo(f"hypergen app: http://127.0.0.1:{port}", err=True)
    sys.stdout.flush()
    sys.stderr.flush()  # exec drops Python's buffers
    # Become the server rather than its parent (POSIX exec): SIGTERM/SIGINT reach streamlit itself, which
    # stops, and no orphan can keep serving the port, not even after a SIGKILL, which no parent could forward.
    try:
        os.execve(sys.executable, cmd, env)
    except OSError as e:
        raise HypergenError(f"Could not start streamlit with {sys.executable}: {e.strerror}.") from None
