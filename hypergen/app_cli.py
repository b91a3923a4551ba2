"""`hypergen app`: serve the Streamlit app (app/streamlit_app.py) on one local port.

The app reads its zoo, base model, encoder and default generator from HYPERGEN_APP_* environment
variables, so the same script serves the shipped zoo or, in tests, the tiny model and fake encoder.
The command execs into `streamlit run`: the process a user or supervisor signals is the server itself.
Nothing heavy is imported here: `hypergen --help` stays fast.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Annotated, Optional

import typer

from hypergen import paths
from hypergen.errors import HypergenError

SCRIPT = paths.REPO_ROOT / "app" / "streamlit_app.py"


def app_env(zoo: str | None = None, base: str | None = None, encoder: str | None = None, generator: str | None = None, device: str | None = None) -> dict[str, str]:
    """The HYPERGEN_APP_* variables for the given options (None = the app's default)."""
    opts = {"ZOO": zoo, "BASE": base, "ENCODER": encoder, "GENERATOR": generator, "DEVICE": device}
    return {f"HYPERGEN_APP_{k}": str(v) for k, v in opts.items() if v is not None}


def app(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 to serve on.")] = 8501,
    zoo: Annotated[Optional[str], typer.Option(help="Zoo folder (default: shipped zoo/).")] = None,
    base: Annotated[Optional[str], typer.Option(help="A local HF model folder instead of SmolLM2.")] = None,
    encoder: Annotated[str, typer.Option(help="minilm (real) or fake (tests).")] = "minilm",
    generator: Annotated[Optional[str], typer.Option(help="Generator selected at start (default: the best by evaluation).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Serve the "describe your task" web app: one resident base model shared by every browser session."""
    if importlib.util.find_spec("streamlit") is None:
        raise HypergenError("Streamlit is not installed: pip install -e '.[app]' (or `make install`).")
    if not SCRIPT.is_file():
        raise HypergenError(f"{SCRIPT} is missing: `hypergen app` runs from a source checkout of hypergen.")
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(SCRIPT),
        "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false",  # no network here, and none wanted
        "--server.fileWatcherType", "none",
        "--client.showErrorDetails", "none",  # tracebacks go to this terminal, never to the page
        "--client.toolbarMode", "minimal",
    ]
    env = {**os.environ, **app_env(zoo, base, encoder, generator, device)}
    typer.echo(f"hypergen app: http://127.0.0.1:{port}", err=True)
    sys.stdout.flush()
    sys.stderr.flush()  # exec drops Python's buffers
    # Become the server rather than its parent (POSIX exec): SIGTERM/SIGINT reach streamlit itself, which
    # stops, and no orphan can keep serving the port, not even after a SIGKILL, which no parent could forward.
    try:
        os.execve(sys.executable, cmd, env)
    except OSError as e:
        raise HypergenError(f"Could not start streamlit with {sys.executable}: {e.strerror}.") from None
