"""`hypergen` command line: each command is a typed wrapper of one hypergen.api function.

No logic lives here. Heavy imports happen inside commands, so `hypergen --help` starts fast.
A HypergenError becomes a one-line `error: ...` on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Annotated, Optional

import typer

from hypergen.errors import HypergenError

app = typer.Typer(help="Describe a task in words, get a working LoRA adapter.", no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Task data: fetch BIG-bench into the cache.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _friendly(fn):
    """Turn HypergenError into a clean one-line message and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HypergenError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _print_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


@app.command()
@_friendly
def setup(bigbench: Annotated[bool, typer.Option(help="Also fetch the BIG-bench tasks (358 MB download).")] = False):
    """Download and convert SmolLM2-135M-Instruct and all-MiniLM-L6-v2 into the cache (once)."""
    from hypergen import api

    for k, v in api.setup(bigbench=bigbench).items():
        typer.echo(f"{k}: {v}")


@app.command()
@_friendly
def info(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    base: Annotated[Optional[str], typer.Option(help="A local Hugging Face model folder instead of SmolLM2.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
):
    """Base model, device, cache paths and package versions."""
    from hypergen import api

    facts = api.info(base, device)
    if as_json:
        return _print_json(facts)
    for k, v in facts.items():
        if isinstance(v, dict):
            typer.echo(f"{k}:")
            for kk, vv in v.items():
                typer.echo(f"  {kk}: {vv}")
        else:
            typer.echo(f"{k}: {v}")


@app.command()
@_friendly
def answer(
    text: Annotated[list[str], typer.Argument(help="One or more inputs to answer.")],
    adapter: Annotated[Optional[str], typer.Option(help="A PEFT adapter folder to activate.")] = None,
    description: Annotated[Optional[str], typer.Option(help="Put this task description in the prompt.")] = None,
    base: Annotated[Optional[str], typer.Option(help="A local Hugging Face model folder instead of SmolLM2.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    max_new_tokens: Annotated[int, typer.Option(min=1, max=2048)] = 64,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
):
    """The base model (or base + adapter) answers the inputs."""
    from hypergen import api

    outs = api.answer(text, adapter=adapter, description=description, base=base, device=device, max_new_tokens=max_new_tokens)
    if as_json:
        return _print_json({"answers": [{"input": t, "answer": a} for t, a in zip(text, outs)], "adapter": adapter})
    for a in outs:
        typer.echo(a)


@data_app.command("fetch")
@_friendly
def data_fetch(
    source: Annotated[str, typer.Argument(help="Which data: 'bigbench'.")],
    force: Annotated[bool, typer.Option(help="Extract again even if present.")] = False,
):
    """Download a task source from PyPI and extract only its task files into the cache."""
    if source != "bigbench":
        raise HypergenError(f"Unknown data source {source!r}; available: bigbench. For Super-NaturalInstructions, pass your folder with --suite.")
    from hypergen.tasks import fetch_bigbench

    typer.echo(str(fetch_bigbench(force=force)))


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
