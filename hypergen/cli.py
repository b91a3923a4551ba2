"""`hypergen` command line: each command translates its arguments into one call of the typed API.

Options are generated from the API (cli_options): the fields of a config dataclass (BuildConfig,
TrainConfig, EvalConfig) or the keyword parameters of an api function, so each default, rule and help
text lives once, there. This file only names commands, maps option names and prints results. Heavy
imports happen inside commands (commands whose options come from Lightning modules are built only
when invoked), so `hypergen --help` starts fast. A HypergenError becomes a one-line `error: ...` on
stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from hypergen import api  # imports nothing heavy
from hypergen.cli_options import Fields, LazyGroup, lazy, typed
from hypergen.errors import HypergenError

app = typer.Typer(help="Describe a task in words, get a working LoRA adapter.", no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False, cls=LazyGroup, rich_markup_mode=None)
data_app = typer.Typer(help="Task data: fetch BIG-bench or the OpenAI evals into the cache.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")
zoo_app = typer.Typer(help="The expert zoo: build, list, pack.", no_args_is_help=True, cls=LazyGroup, rich_markup_mode=None)
app.add_typer(zoo_app, name="zoo")

JSON = Annotated[bool, typer.Option("--json", help="Print JSON.")]
# the API's names -> the command line's (its options predate the API's names)
PATHS = {"zoo_path": "zoo", "encoder_name": "encoder"}


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
@typed(kw=Fields(api.setup))
def setup(kw):
    """Download and convert SmolLM2-135M-Instruct and all-MiniLM-L6-v2 into the cache (once)."""
    for k, v in api.setup(**kw).items():
        typer.echo(f"{k}: {v}")


@app.command()
@_friendly
@typed(kw=Fields(api.info))
def info(kw, as_json: JSON = False):
    """Base model, device, cache paths and package versions."""
    facts = api.info(**kw)
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
@typed(kw=Fields(api.answer))
def answer(text: Annotated[list[str], typer.Argument(help="One or more inputs to answer.")], kw, as_json: JSON = False):
    """The base model (or base + adapter) answers the inputs."""
    outs = api.answer(text, **kw)
    if as_json:
        return _print_json({"answers": [{"input": t, "answer": a} for t, a in zip(text, outs)], "adapter": kw.get("adapter")})
    for a in outs:
        typer.echo(a)


@data_app.command("fetch")
@_friendly
@typed(kw=Fields(api.fetch_data))
def data_fetch(source: Annotated[str, typer.Argument(help=f"Which data: {', '.join(api.DATA_SOURCES)}.")], kw):
    """Download a task source from PyPI and extract only its task files into the cache."""
    typer.echo(str(api.fetch_data(source, **kw)))


@zoo_app.command("build")
@lazy
def zoo_build():
    """Train one expert LoRA per task (resumable: rerun to continue after any interruption)."""
    from hypergen.zoo.build import BuildConfig

    # the experts' own seed sets the LoRA's init; progress bars are the build's own business
    @_friendly
    @typed(cfg=Fields(BuildConfig, exclude=("init_seed", "progress")))
    def build(cfg):
        built = api.zoo_build(cfg)
        if built.reports:
            typer.echo(f"zoo: {built.root} ({built.experts} experts)")

    return build


@zoo_app.command("multitask")
@lazy
def zoo_multitask():
    """Train the multi-task LoRA baseline on all zoo tasks together (kept when rerun with the same settings)."""
    from hypergen.zoo.build import BuildConfig

    # what build_multitask does not use or sets itself (its steps are --steps below); a kept adapter is
    # retrained by deleting its folder, as the "kept" message says, so --refresh is left out too
    unused = ("steps", "select", "init_seed", "progress", "eval_instances", "max_new_tokens", "devices", "strategy", "accelerator", "oracle", "seed_from", "refresh", "parallel")

    @_friendly
    @typed(cfg=Fields(BuildConfig, exclude=unused), kw=Fields(api.zoo_multitask))
    def multitask(cfg, kw):
        rec = api.zoo_multitask(cfg, **kw)
        typer.echo(f"multitask: {rec['n_train']} examples from {len(rec['config']['tasks'])} tasks, {rec['seconds']} s")

    return multitask


@zoo_app.command("list")
@_friendly
@typed(kw=Fields(api.zoo_list, rename={"path": "zoo"}))
def zoo_list(kw, as_json: JSON = False):
    """Each expert with its description, steps, base score and expert score."""
    rows = api.zoo_list(**kw)
    if as_json:
        return _print_json(rows)
    typer.echo(f"{'expert':42} {'metric':8} {'base':>6} {'expert':>6} {'steps':>5}  description")
    for r in rows:
        typer.echo(f"{r['name'][:42]:42} {r['metric']:8} {r['base_score']:6.3f} {r['expert_score']:6.3f} {r['steps']:5d}  {r['description'][:70]}")
    better = sum(r["gain"] > 0 for r in rows)
    typer.echo(f"{len(rows)} experts; {better} beat the base on their own task.")


@zoo_app.command("report")
@_friendly
@typed(kw=Fields(api.zoo_report, rename={"path": "zoo"}))
def zoo_report(kw):
    """Write the zoo table (base vs expert score per task) and its summary line."""
    typer.echo(str(api.zoo_report(**kw)))


@zoo_app.command("pack")
@_friendly
def zoo_pack(
    source: Annotated[str, typer.Argument(help="A built zoo folder.")],
    dest: Annotated[str, typer.Argument(help="Where to write the compact int8 copy (e.g. zoo/).")],
):
    """Copy a built zoo into a compact one for shipping (int8, final adapters, no trajectories)."""
    typer.echo(str(api.zoo_pack(source, dest)))


@app.command()
@_friendly
@typed(kw=Fields(api.generate, exclude=("activate",), rename={**PATHS, "inputs": "input"}))
def generate(description: Annotated[str, typer.Argument(help="The task in plain words.")], kw, as_json: JSON = False):
    """Describe a task, get a LoRA adapter: written as a PEFT folder and used on --input right away."""
    inputs = kw.get("inputs") or []
    res = api.generate(description, **kw, activate=bool(inputs))
    summary = {**res.summary(), "out": kw.get("out")}
    summary["answers"] = [{"input": i, "answer": a} for i, a in zip(inputs, res.answers)]
    if as_json:
        return _print_json(summary)
    for w in res.warnings:
        typer.echo(f"warning: {w}", err=True)
    typer.echo(f"generator: {res.generator}   rank {res.weights.rank}, {res.weights.num_params():,} params")
    typer.echo(f"checkpoint: {res.checkpoint}" if res.checkpoint else "checkpoint: none (a baseline built on the zoo)")
    typer.echo("nearest experts:")
    for n in res.neighbors:
        weight = f"  weight {n.weight:.3f}" if n.weight is not None else ""
        typer.echo(f"  {n.similarity:6.3f}  {n.name}{weight}")
    if not res.in_range:
        typer.echo(f"outside the zoo's range (max similarity {res.max_similarity:.2f})")
    if res.uncertainty:
        typer.echo("uncertainty: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in res.uncertainty.items()))
    typer.echo("time: " + ", ".join(f"{k} {v:.1f} ms" for k, v in res.timings_ms.items()))
    if kw.get("out"):
        typer.echo(f"adapter: {kw['out']}")
    for i, a in zip(inputs, res.answers):
        typer.echo(f"> {i}\n{a}")


@app.command("generators")
@_friendly
def generators_list(as_json: JSON = False):
    """The registered generator families."""
    from hypergen.generators import get_family

    default = api.default_generator()  # looks for checkpoints on disk: once
    # prompt_description: the default mode (the description in the prompt too), on the default's row
    rows = []
    for n in api.list_generators():
        trainable = get_family(n).trainable
        ckpt = api.checkpoint_path(n) if trainable else None
        rows.append({"name": n, "trainable": trainable, "checkpoint": str(ckpt) if ckpt else None, "default": n == default,
                     **({"prompt_description": api.DEFAULT_PROMPT_DESCRIPTION} if n == default else {})})
    if as_json:
        return _print_json(rows)
    mode = ", answers with the description in the prompt too" if api.DEFAULT_PROMPT_DESCRIPTION else ""
    for r in rows:
        kind = "baseline" if not r["trainable"] else "trained" if r["checkpoint"] else f"untrained (hypergen train {r['name']})"
        typer.echo(f"{r['name']:10} {kind}{f'  (default{mode})' if r['default'] else ''}")


@app.command("generator-pack")
@_friendly
def generator_pack(
    source: Annotated[str, typer.Argument(help="A trained generator folder (generator.json + generator.safetensors).")],
    dest: Annotated[str, typer.Argument(help="Where to write the compact int8 copy (e.g. generators/t2l).")],
):
    """Copy a trained generator into a compact one for shipping (int8 matrices, no training-only tensors)."""
    typer.echo(str(api.pack_generator(source, dest)))


@app.command()
@lazy
def train():
    """Train a generator on the zoo with Lightning (resumable: rerun to continue; --export saves a stopped run's best)."""
    from dataclasses import replace

    from hypergen.generators.train import TrainConfig

    @_friendly
    @typed(cfg=Fields(TrainConfig, exclude=("progress",)), kw=Fields(api.train, exclude=("cfg",), rename=PATHS))
    def train(
        generator: Annotated[str, typer.Argument(help="The family to train (`hypergen generators` lists them).")],
        cfg,
        kw,
        settings: Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="a setting of the family's own config (e.g. --set noise=0.5 for t2l); repeatable; part of the run's identity, except serving-only ones (t2l's guidance: with --export, another setting of the same run).")] = None,
        as_json: JSON = False,
    ):
        from hypergen.generators import get_family

        family = get_family(generator).Config.parse(settings or [], family=generator)
        summary = api.train(generator, replace(cfg, progress=not as_json), **kw, **family)
        if summary["global_rank"] != 0:
            return  # under ddp every rank runs this command; rank 0 reports
        if as_json:
            return _print_json({k: v for k, v in summary.items() if k != "history"})
        if "exported_from" in summary:
            val = f", validation NLL {summary['val_nll']:.4f}" if summary["val_nll"] is not None else ""
            typer.echo(f"{generator}: exported step {summary['step']}{val} from {summary['exported_from']}")
        else:
            typer.echo(f"{generator}: {summary['seconds']} s on {summary['world_size']} process(es); final {summary['final']}")
        if "val" in summary:
            typer.echo(f"held-out experts: mean relative dW error {summary['val']['mean']:.3f}")
        typer.echo(f"saved to {summary['out']}")

    return train


@app.command("eval")
@lazy
def eval_cmd():
    """Held-out evaluation of every method on the same instances (resumable: rerun to continue)."""
    from hypergen.eval import EvalConfig, run  # eval sits above the api; the api never imports it

    @_friendly
    @typed(cfg=Fields(EvalConfig))
    def evaluate(cfg, as_json: JSON = False):
        summary = run(cfg, progress=not as_json)
        if as_json:
            return _print_json(summary)
        typer.echo((Path(cfg.out) / "report.md").read_text())

    return evaluate


from hypergen.app_cli import app as _serve_app  # noqa: E402  (imports no streamlit)

app.command("app")(_friendly(_serve_app))


def main() -> None:
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation chatter is not for users
    _check_utf8(sys.argv[1:])
    app()


def _check_utf8(args: list[str]) -> None:
    """Undecodable bytes in argv arrive as lone surrogates, which the tokenizers reject with a TypeError."""
    for i, a in enumerate(args, 1):
        try:
            a.encode("utf-8")
        except UnicodeEncodeError:
            shown = a.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            typer.echo(f"error: argument {i} ({shown[:40]}) is not valid UTF-8: pass text (and paths) as UTF-8, e.g. set LANG=C.UTF-8 in the terminal.", err=True)
            sys.exit(1)


if __name__ == "__main__":
    sys.exit(main())
