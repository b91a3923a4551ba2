"""Held-out score against the number of training tasks (issue 17.7): train t2l on N tasks, measure, plot.

    .venv/bin/python bench/scaling.py --sizes 60 200 0 --steps 400 --out docs/results/scaling [--work /tmp/scaling]

For each size N (0 = every training task), in order, resumable (a size whose JSON is in --out is done; a
killed training continues from its last checkpoint):
1. `hypergen train t2l` with the CPU pilot's settings (docs/experiments.md) and `--max-tasks N`: the same
   4 validation families for every N, and a seeded, nested subset of the training tasks
   (hypergen.generators.sft.first_tasks), for `--steps` steps; then `--export` writes the run's best checkpoint on validation;
2. bench/heldout_controls.py on it (31 held-out tasks, 17 families, `--instances` each): reference-answer NLL
   of the adapter for the task's own description, another task's and gibberish, alone and with the
   description in the prompt;
3. the plot (scaling.png; left: family-weighted NLL of each condition against N, log scale, base and
   base + description as lines; right: own minus other / gibberish) and scaling.json, from every size
   measured so far.
`--point N=FILE` adds a heldout_controls JSON measured elsewhere (e.g. the 400-step pilot on every task,
docs/results/sft_pilot/heldout.json) instead of training that size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine

# the CPU pilot's command (docs/experiments.md), less --steps / --out
PILOT = ["--objective", "sft", "--tasks", "descriptions", "--batch-size", "8", "--sft-examples", "1", "--lr", "3e-4",
         "--warmup", "20", "--val-every", "100", "--ckpt-every", "50", "--logger", "csv"]
CURVES = ("own", "other", "gibberish", "own+desc")


def hypergen(*args: str) -> None:
    """Run the CLI, its output and progress bar shown."""
    print("$ hypergen " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-c", "from hypergen.cli import main; main()", *args], check=True)


def measure(n: int, args) -> dict:
    """Train (or resume) and export size n, then its held-out controls."""
    import heldout_controls

    work = args.work / (str(n) if n else "all")
    run = ["train", "t2l", *PILOT, *(["--max-tasks", str(n)] if n else []), "--steps", str(args.steps), "--seed", str(args.seed), "--out", str(work)]
    t0 = time.perf_counter()
    hypergen(*run)  # ends by writing work/train.json, with the task counts
    tasks = json.loads((work / "train.json").read_text())["sft_tasks"]
    hypergen(*run, "--export")  # the best checkpoint on validation
    best = json.loads((work / "train.json").read_text())
    trained = time.perf_counter() - t0
    record = heldout_controls.main(["--checkpoint", str(work), "--instances", str(args.instances)])
    return record | {"size": n, "train_tasks": tasks["train"], "train_families": tasks["families"], "val_tasks": tasks["val"], "steps": args.steps,
                     "best_step": best["step"], "best_val_nll": best["val_nll"], "train_seconds_this_call": round(trained, 1)}


def plot(points: dict[int, dict], path: Path) -> None:
    """Left: family-weighted NLL of each condition against N; right: the controls (own minus other / gibberish)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    xs = sorted(points)
    fam = lambda x, c: points[x]["nll_family_mean"][c]  # noqa: E731
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
    for c in CURVES:
        ax.plot(xs, [fam(x, c) for x in xs], marker="o", label=f"t2l, {c}")
    for c, style in (("base", ":"), ("base+desc", "--")):
        ax.axhline(fam(xs[-1], c), color="grey", linestyle=style, label=c)
    ax.set_ylabel("answer NLL per token, family mean (lower is better)")
    ax.set_title("held-out families: t2l's adapter", fontsize=9)
    for other, style in (("other", "-"), ("gibberish", "--")):
        bx.plot(xs, [fam(x, "own") - fam(x, other) for x in xs], marker="o", linestyle=style, label=f"own - {other}")
    bx.axhline(0, color="grey", linewidth=0.8)
    bx.set_ylabel("NLL difference (< 0: the own description helps)")
    bx.set_title("held-out controls", fontsize=9)
    for a in (ax, bx):
        a.set_xscale("log")
        a.set_xticks(xs, [str(x) for x in xs])
        a.xaxis.set_minor_formatter(NullFormatter())
        a.set_xlabel("training tasks")
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[60, 200, 0], help="training-task counts; 0 = all")
    ap.add_argument("--point", action="append", default=[], help="N=FILE: a heldout_controls JSON for size N, not trained here")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--instances", type=int, default=4, help="held-out test instances per task")
    ap.add_argument("--work", type=Path, default=Path("/tmp/scaling"), help="where the runs' generator folders go")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    points: dict[int, dict] = {}
    for spec in args.point:
        n, _, file = spec.partition("=")
        points[int(n)] = json.loads(Path(file).read_text()) | {"size": int(n), "from": file}
    for n in args.sizes:
        done = args.out / f"size_{n or 'all'}.json"
        if not done.is_file():
            done.write_text(json.dumps(measure(n, args), indent=2))
        rec = json.loads(done.read_text())
        points[rec["train_tasks"] if n == 0 else n] = rec
    plot(points, args.out / "scaling.png")
    summary = {"machine": machine(), "command": "bench/scaling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "points": {n: {"nll_family_mean": p["nll_family_mean"], "own_minus_other": p["own_minus_other"],
                              "own_minus_gibberish": p["own_minus_gibberish"], "from": p.get("from", f"size_{p.get('size') or 'all'}.json")}
                          for n, p in sorted(points.items())}}
    (args.out / "scaling.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
