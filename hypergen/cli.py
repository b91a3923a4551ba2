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

from hypergen.api import MAX_SAMPLES  # the api module itself imports nothing heavy
from hypergen.errors import HypergenError

app = typer.Typer(help="Describe a task in words, get a working LoRA adapter.", no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Task data: fetch BIG-bench into the cache.", no_args_is_help=True)
app.add_typer(data_app, name="data")
zoo_app = typer.Typer(help="The expert zoo: build, list, pack.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")


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


def _build_config(suite, split, tasks, limit, out, steps, batch_size, lr, max_tokens, rank, base, device, devices, strategy, eval_instances, logger):
    from hypergen.config import LoraSpec
    from hypergen.zoo.build import BuildConfig
    from hypergen.zoo.expert import ExpertConfig

    expert = ExpertConfig(steps=steps, batch_size=batch_size, lr=lr, max_tokens=max_tokens, lora=LoraSpec(rank=rank, alpha=2.0 * rank), logger=logger)
    kw = dict(suite=suite, split=split, tasks=tasks or None, limit=limit, expert=expert, base=base, device=device, devices=devices, strategy=strategy, eval_instances=eval_instances)
    if out:
        kw["out"] = out
    return BuildConfig(**kw)


_SUITE = typer.Option(help="'bigbench' (the cache) or a path: BIG-bench task.json tree, SNI folder, JSONL.")
_OUT = typer.Option(help="Zoo folder (default ~/.cache/hypergen/zoo/bigbench).")


@zoo_app.command("build")
@_friendly
def zoo_build(
    suite: Annotated[str, _SUITE] = "bigbench",
    split: Annotated[Optional[str], typer.Option(help="Split file (default data/splits/bigbench.json for bigbench).")] = None,
    tasks: Annotated[Optional[list[str]], typer.Option("--tasks", help="Task names (repeat); default: the split's zoo tasks.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Build the first N tasks.")] = 60,
    out: Annotated[Optional[str], _OUT] = None,
    steps: Annotated[int, typer.Option(help="Training steps per expert.")] = 100,
    batch_size: Annotated[int, typer.Option()] = 8,
    lr: Annotated[float, typer.Option()] = 1e-3,
    max_tokens: Annotated[int, typer.Option(help="Token budget of prompt + answer.")] = 128,
    rank: Annotated[int, typer.Option(help="LoRA rank (alpha = 2 * rank).")] = 8,
    base: Annotated[Optional[str], typer.Option(help="A local HF model folder instead of SmolLM2.")] = None,
    device: Annotated[str, typer.Option()] = "auto",
    devices: Annotated[int, typer.Option(help="Processes to shard tasks across (Lightning Fabric launch).")] = 1,
    strategy: Annotated[str, typer.Option(help="Launch strategy for --devices > 1, e.g. ddp, ddp_spawn.")] = "ddp",
    eval_instances: Annotated[int, typer.Option(help="Test instances scored per task.")] = 50,
    logger: Annotated[str, typer.Option(help="wandb (offline unless WANDB_MODE=online), csv or none.")] = "wandb",
    oracle: Annotated[bool, typer.Option(help="Build the held-out tasks' reference experts into a separate oracle zoo (for `hypergen eval`).")] = False,
    seed_from: Annotated[Optional[str], typer.Option(help="A packed zoo (e.g. zoo/) whose experts count as built: continue it on a fresh machine.")] = None,
    refresh: Annotated[bool, typer.Option(help="Also retrain built experts trained with another config (e.g. before early stopping); pick them with --tasks.")] = False,
):
    """Train one expert LoRA per task (resumable: rerun to continue after any interruption)."""
    from hypergen import api

    cfg = _build_config(suite, split, tasks, limit, out, steps, batch_size, lr, max_tokens, rank, base, device, devices, strategy, eval_instances, logger)
    if oracle or seed_from or refresh:
        from dataclasses import replace

        cfg = replace(cfg, oracle=oracle, seed_from=seed_from, refresh=refresh)
    path = api.zoo_build(cfg)
    import os

    if os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0":  # with --devices N every rank runs this
        typer.echo(f"zoo: {path} ({len(api.zoo(path))} experts)")


@zoo_app.command("multitask")
@_friendly
def zoo_multitask(
    suite: Annotated[str, _SUITE] = "bigbench",
    limit: Annotated[Optional[int], typer.Option(help="Use the first N zoo tasks.")] = 60,
    out: Annotated[Optional[str], _OUT] = None,
    steps: Annotated[int, typer.Option()] = 400,
    per_task: Annotated[int, typer.Option(help="Train instances taken from each task.")] = 100,
    batch_size: Annotated[int, typer.Option()] = 8,
    lr: Annotated[float, typer.Option()] = 1e-3,
    base: Annotated[Optional[str], typer.Option()] = None,
    device: Annotated[str, typer.Option()] = "auto",
    logger: Annotated[str, typer.Option()] = "wandb",
):
    """Train the multi-task LoRA baseline on all zoo tasks together."""
    from hypergen import api

    cfg = _build_config(suite, None, None, limit, out, steps, batch_size, lr, 128, 8, base, device, 1, "ddp", 0, logger)
    rec = api.zoo_multitask(cfg, steps=steps, per_task=per_task)
    typer.echo(f"multitask: {rec['n_train']} examples from {len(rec['config']['tasks'])} tasks, {rec['seconds']} s")


@zoo_app.command("list")
@_friendly
def zoo_list(
    zoo: Annotated[Optional[str], typer.Option(help="Zoo folder (default: the shipped zoo/).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
):
    """Each expert with its description, steps, base score and expert score."""
    from hypergen import api

    rows = api.zoo_list(zoo)
    if as_json:
        return _print_json(rows)
    typer.echo(f"{'expert':42} {'metric':8} {'base':>6} {'expert':>6} {'steps':>5}  description")
    for r in rows:
        typer.echo(f"{r['name'][:42]:42} {r['metric']:8} {r['base_score']:6.3f} {r['expert_score']:6.3f} {r['steps']:5d}  {r['description'][:70]}")
    better = sum(r["gain"] > 0 for r in rows)
    typer.echo(f"{len(rows)} experts; {better} beat the base on their own task.")


@zoo_app.command("report")
@_friendly
def zoo_report(
    zoo: Annotated[Optional[str], typer.Option(help="Zoo folder (default: the shipped zoo/).")] = None,
    out: Annotated[str, typer.Option(help="Markdown file to write.")] = "docs/zoo.md",
    command: Annotated[str, typer.Option(help="The command that built the zoo, quoted in the report.")] = "hypergen zoo build --limit 60 --steps 100",
):
    """Write the zoo table (base vs expert score per task) and its summary line."""
    from hypergen import api
    from hypergen.zoo.report import write_report

    typer.echo(str(write_report(api.zoo(zoo), out, command)))


@zoo_app.command("pack")
@_friendly
def zoo_pack(
    source: Annotated[str, typer.Argument(help="A built zoo folder.")],
    dest: Annotated[str, typer.Argument(help="Where to write the compact int8 copy (e.g. zoo/).")],
):
    """Copy a built zoo into a compact one for shipping (int8, final adapters, no trajectories)."""
    from hypergen import api

    typer.echo(str(api.zoo_pack(source, dest)))


@app.command()
@_friendly
def generate(
    description: Annotated[str, typer.Argument(help="The task in plain words.")],
    generator: Annotated[Optional[str], typer.Option(help="Generator family (default: the best by evaluation). `hypergen generators` lists them.")] = None,
    out: Annotated[Optional[str], typer.Option(help="Write the adapter here as a PEFT folder.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Let --out replace an existing adapter folder or write into a non-empty folder (other files are kept).")] = False,
    input: Annotated[Optional[list[str]], typer.Option("--input", help="Answer this input with the adapter active (repeat).")] = None,
    samples: Annotated[int, typer.Option(help=f"Adapters to sample, 1-{MAX_SAMPLES} (the spread is reported; the adapter is their mean).")] = 1,
    seed: Annotated[Optional[int], typer.Option(help="Sampling seed, 0 to 2**63-1.")] = None,
    zoo: Annotated[Optional[str], typer.Option(help="Zoo folder (default: shipped zoo/).")] = None,
    checkpoint: Annotated[Optional[str], typer.Option(help="Generator checkpoint folder (default: generators/NAME).")] = None,
    base: Annotated[Optional[str], typer.Option(help="A local HF model folder instead of SmolLM2.")] = None,
    device: Annotated[str, typer.Option()] = "auto",
    encoder: Annotated[str, typer.Option(help="minilm (real) or fake (tests).")] = "minilm",
    max_new_tokens: Annotated[int, typer.Option(min=1, max=2048)] = 32,
    prompt_description: Annotated[bool, typer.Option("--prompt-description", help="Answer --input with the description in the prompt too (held-out ROUGE-L of sg: 0.173 -> 0.240).")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
):
    """Describe a task, get a LoRA adapter: written as a PEFT folder and used on --input right away."""
    from hypergen import api

    activate = bool(input)
    res = api.generate(
        description, generator, samples=samples, seed=seed, out=out, force=force, inputs=input, activate=activate, zoo_path=zoo,
        checkpoint=checkpoint, base=base, device=device, encoder_name=encoder, max_new_tokens=max_new_tokens,
        prompt_description=prompt_description,
    )
    summary = res.summary()
    summary["out"] = out
    summary["answers"] = [{"input": i, "answer": a} for i, a in zip(input or [], res.answers)]
    if as_json:
        return _print_json(summary)
    for w in res.warnings:
        typer.echo(f"warning: {w}", err=True)
    typer.echo(f"generator: {res.generator}   rank {res.weights.rank}, {res.weights.num_params():,} params")
    typer.echo("nearest experts:")
    for n in res.neighbors:
        weight = f"  weight {n.weight:.3f}" if n.weight is not None else ""
        typer.echo(f"  {n.similarity:6.3f}  {n.name}{weight}")
    if not res.in_range:
        typer.echo(f"outside the zoo's range (max similarity {res.max_similarity:.2f})")
    if res.uncertainty:
        typer.echo("uncertainty: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in res.uncertainty.items()))
    typer.echo("time: " + ", ".join(f"{k} {v:.1f} ms" for k, v in res.timings_ms.items()))
    if out:
        typer.echo(f"adapter: {out}")
    for i, a in zip(input or [], res.answers):
        typer.echo(f"> {i}\n{a}")


@app.command("generators")
@_friendly
def generators_list(as_json: Annotated[bool, typer.Option("--json")] = False):
    """The registered generator families."""
    from hypergen import api
    from hypergen.generators import get_family

    rows = [{"name": n, "trainable": get_family(n).trainable, "default": n == api.default_generator()} for n in api.list_generators()]
    if as_json:
        return _print_json(rows)
    for r in rows:
        typer.echo(f"{r['name']:10} {'trained' if r['trainable'] else 'baseline'}{'  (default)' if r['default'] else ''}")


@app.command()
@_friendly
def train(
    generator: Annotated[str, typer.Argument(help="Family to train: sg, icm, abmll.")],
    objective: Annotated[str, typer.Option(help="recon (match expert weights) or sft (loss through the base model).")] = "recon",
    zoo: Annotated[Optional[str], typer.Option(help="Zoo folder (default: shipped zoo/, else the cache build).")] = None,
    out: Annotated[Optional[str], typer.Option(help="Checkpoint folder (default ~/.cache/hypergen/generators/NAME).")] = None,
    steps: Annotated[int, typer.Option()] = 1000,
    batch_size: Annotated[int, typer.Option()] = 16,
    lr: Annotated[float, typer.Option()] = 1e-3,
    seed: Annotated[int, typer.Option()] = 0,
    val_experts: Annotated[Optional[list[str]], typer.Option("--val-experts", help="Expert names held out to measure reconstruction (repeat).")] = None,
    devices: Annotated[int, typer.Option(help="Lightning devices (processes) per node.")] = 1,
    strategy: Annotated[str, typer.Option(help="Lightning strategy: auto, ddp, ddp_spawn, fsdp.")] = "auto",
    num_nodes: Annotated[int, typer.Option()] = 1,
    accelerator: Annotated[str, typer.Option(help="auto, cpu, gpu.")] = "auto",
    encoder: Annotated[str, typer.Option(help="minilm (real) or fake (tests).")] = "minilm",
    base: Annotated[Optional[str], typer.Option(help="Base model folder for --objective sft.")] = None,
    logger: Annotated[str, typer.Option(help="wandb (offline by default), csv or none.")] = "wandb",
    init: Annotated[Optional[str], typer.Option(help="Start from this saved checkpoint of the same family (e.g. a recon run, then --objective sft).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
):
    """Train a generator on the zoo with Lightning (resumable; rerun to continue)."""
    from hypergen import api
    from hypergen.generators.train import TrainConfig

    cfg = TrainConfig(
        objective=objective, steps=steps, batch_size=batch_size, lr=lr, seed=seed, val_experts=tuple(val_experts or ()),
        devices=devices, strategy=strategy, num_nodes=num_nodes, accelerator=accelerator, logger=logger, progress=not as_json,
    )
    summary = api.train(generator, cfg, zoo_path=zoo, out=out, encoder_name=encoder, base=base, init=init)
    if summary["global_rank"] != 0:
        return  # under ddp every rank runs this command; rank 0 reports
    if as_json:
        return _print_json({k: v for k, v in summary.items() if k != "history"})
    typer.echo(f"{generator}: {summary['seconds']} s on {summary['world_size']} process(es); final {summary['final']}")
    if "val" in summary:
        typer.echo(f"held-out experts: mean relative dW error {summary['val']['mean']:.3f}")
    typer.echo(f"saved to {summary['out']}")


@app.command("eval")
@_friendly
def eval_cmd(
    suite: Annotated[str, _SUITE] = "bigbench",
    split: Annotated[str, typer.Option(help="heldout | seen | all (all: every task of the suite counts as unseen).")] = "heldout",
    methods: Annotated[Optional[list[str]], typer.Option("--methods", help="Methods to compare (repeat); default all. GENERATOR+desc (e.g. sg+desc): its adapter with the description in the prompt too.")] = None,
    instances: Annotated[int, typer.Option(help="Test instances per task.")] = 50,
    seeds: Annotated[int, typer.Option()] = 3,
    controls: Annotated[bool, typer.Option(help="Score gibberish / other-task descriptions too.")] = True,
    out: Annotated[str, typer.Option(help="Folder for results.json, report.md and plots.")] = "docs/results",
    zoo: Annotated[Optional[str], typer.Option()] = None,
    oracle_zoo: Annotated[Optional[str], typer.Option(help="Zoo of experts trained on held-out tasks (upper reference).")] = None,
    tasks: Annotated[Optional[list[str]], typer.Option("--tasks", help="Only these tasks (repeat).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N tasks.")] = None,
    base: Annotated[Optional[str], typer.Option()] = None,
    device: Annotated[str, typer.Option()] = "auto",
    encoder: Annotated[str, typer.Option(help="minilm (real) or fake (tests).")] = "minilm",
    long_budget: Annotated[Optional[int], typer.Option(help="Also answer with up to N new tokens (e.g. 32) on seed 0: a separate ROUGE-L column.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
):
    """Held-out evaluation of every method on the same instances (resumable: rerun to continue)."""
    from hypergen import api
    from hypergen.eval.protocol import ALL_METHODS, EvalConfig

    kw = dict(suite=suite, split=split, methods=tuple(methods or ALL_METHODS), instances=instances, seeds=seeds, controls=controls, out=out,
              zoo=zoo, tasks=tuple(tasks) if tasks else None, limit=limit, base=base, device=device, encoder=encoder, long_budget=long_budget)
    if oracle_zoo:
        kw["oracle_zoo"] = oracle_zoo
    summary = api.evaluate(EvalConfig(**kw), progress=not as_json)
    if as_json:
        return _print_json(summary)
    typer.echo((__import__("pathlib").Path(out) / "report.md").read_text())


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
