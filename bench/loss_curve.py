"""Plot a generator run's train and validation loss (PNG + CSV) from its checkpoint or train.json.

    .venv/bin/python bench/loss_curve.py RUN --out docs/results/NAME/loss.png [--title "..."] [--smooth 10]

RUN: a run's checkpoint (`~/.cache/hypergen/runs/generators/<run>/ckpt/last.ckpt`, whose "hypergen_history"
holds every logged step, also across resumes), or a generator folder's train.json ("history"). The train
curve is the answer NLL of the logged steps, smoothed by a moving average over `--smooth` points; the
validation curve is the NLL on the held-apart families, and where the run logged it (runs since
2026-12-01) the same rows with each adapter made from another validation task's description: the gap
between the two is the held-out control during training; where it logged it (runs since 2026-12-03), the
adapter spread on the right axis (hypergen.generators.sft.adapter_spread: 0 = one adapter for every
description). The CSV beside the PNG has the raw points.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def history(run: Path) -> list[dict]:
    if run.suffix == ".ckpt":
        import torch

        ck = torch.load(run, map_location="cpu", weights_only=False)
        if "hypergen_history" not in ck:
            raise SystemExit(f"{run} has no hypergen_history (made before the history was kept in checkpoints).")
        return ck["hypergen_history"]
    return json.loads(run.read_text())["history"]


def smooth(values: list[float], k: int) -> list[float]:
    return [sum(values[max(0, i - k + 1) : i + 1]) / len(values[max(0, i - k + 1) : i + 1]) for i in range(len(values))]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="the PNG; the CSV goes beside it")
    ap.add_argument("--title", default="")
    ap.add_argument("--smooth", type=int, default=10, help="moving-average window over logged train points")
    args = ap.parse_args(argv)

    hist = history(args.run)
    train = sorted((h["step"], h["nll"]) for h in hist if "nll" in h)
    val = sorted((h["step"], h["val_nll"]) for h in hist if "val_nll" in h)
    other = sorted((h["step"], h["val_nll_other"]) for h in hist if "val_nll_other" in h)
    spread = sorted((h["step"], h["adapter_spread"]) for h in hist if "adapter_spread" in h)
    extra = [k for k, pts in (("val_nll_other", other), ("adapter_spread", spread)) if pts]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "train_nll", "val_nll", *extra])
        w.writerows([(s, round(v, 5), "", *[""] * len(extra)) for s, v in train])
        at = {h["step"]: h for h in hist if "val_nll" in h}
        w.writerows([(s, "", round(v, 5), *[round(at[s][k], 5) if k in at[s] else "" for k in extra]) for s, v in val])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot([s for s, _ in train], smooth([v for _, v in train], args.smooth), label=f"train answer NLL (moving average of {args.smooth})", lw=1.2)
    if val:
        ax.plot([s for s, _ in val], [v for _, v in val], "o-", label="validation NLL (unseen families)", lw=1.5)
    if other:
        ax.plot([s for s, _ in other], [v for _, v in other], "s--", label="validation, another task's description", lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("answer NLL per token")
    ax.set_title(args.title or args.run.parent.parent.name)
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()
    if spread:  # runs since 2026-12-03: how far the descriptions move the adapter (Layout.spread), right axis
        ax2 = ax.twinx()
        ax2.plot([s for s, _ in spread], [v for _, v in spread], "^:", color="tab:purple", label="adapter spread (right axis, 0-1)", lw=1.2)
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("adapter spread")
        handles = [a + b for a, b in zip(handles, ax2.get_legend_handles_labels())]
    ax.legend(*handles)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"{args.out}: {len(train)} train points, {len(val)} validation points" + (f", last validation {val[-1][1]:.3f} at step {val[-1][0]}" if val else ""))


if __name__ == "__main__":
    main()
