"""Choose t2l's guidance on validation families, never on held-out ones: answer NLL against g.

    .venv/bin/python bench/guidance_val.py --run 0=generators/t2l --run 1=DIR1 --run 2=DIR2 [--grid 0,1,2,3] [--out F.json]

Each --run SEED=DIR is a t2l trained with the Makefile's SFT_RUN and `--seed SEED` (DIR: its generator folder).
Its validation families are the ones that seed set apart (4 whole families, never trained on by that run, and
apart from the held-out split). For each validation task, its first 2 descriptions and first 6 validation
examples, the description in the prompt (the default mode) or not (--no-prompt), score the answer NLL per token
under the adapter f(mu) + g (f(e) - f(mu)) (hypergen.generators.t2l, guidance) made from
- own: the task's description; other: the next validation task's first description; gibberish: nonsense.
g = 0 is one adapter for every description (the mean training description's), g = 1 the adapter as trained.
Means over each family's rows, then over families. The prepared tasks come from the cache of the run's
arguments (or are made again: ~7 min). Lower is better.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine

from hypergen import api
from hypergen.eval.protocol import GIBBERISH
from hypergen.eval.stats import family_means
from hypergen.generators.sft import batch_examples, prepare_sft, rows_nll
from hypergen.generators.train import TrainConfig

DESCRIPTIONS, EXAMPLES, BATCH = 2, 6, 8


def family_mean(rows: list[tuple[str, float]]) -> float:
    """Rows (task, NLL) -> each task's mean, then each family's (eval.stats.family_means), then their mean."""
    by_task: dict[str, list[float]] = {}
    for t, x in rows:
        by_task.setdefault(t, []).append(x)
    fam = family_means({t: sum(v) / len(v) for t, v in by_task.items()})
    return sum(fam.values()) / len(fam)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, metavar="SEED=DIR", help="a t2l of the SFT_RUN recipe with --seed SEED; repeatable")
    ap.add_argument("--grid", default="0,1,2,3", help="guidance values, comma-separated")
    ap.add_argument("--no-prompt", action="store_true", help="score the adapter alone (default: the description in the prompt too)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    grid = [float(g) for g in args.grid.split(",")]
    t0 = time.perf_counter()
    res, enc = api.resident(None, "auto"), api.encoder("minilm")
    bank, zoo = api.bank(), api.zoo(None)
    gib = enc.encode([GIBBERISH])[0].float()
    record = {"machine": machine(), "command": "bench/guidance_val.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "prompt_description": not args.no_prompt, "descriptions": DESCRIPTIONS, "examples": EXAMPLES, "runs": {}}
    for spec in args.run:
        seed, _, folder = spec.partition("=")
        # the Makefile's SFT_RUN: only the fields that decide the prepared tasks and the validation families matter here
        cfg = TrainConfig(objective="sft", tasks="descriptions", extra_suite="openai_evals", sft_examples=EXAMPLES, seed=int(seed), logger="none")
        sft = prepare_sft(bank, zoo, res, cfg, encoder=enc)
        gen = api.get_generator("t2l", checkpoint=folder, base_model=res.name).eval()
        rows, conds = [], {"own": [], "other": [], "gibberish": []}
        val = [i for i, t in enumerate(sft.val) if t.val]
        for n, i in enumerate(val):
            task, nxt = sft.val[i], sft.val[val[(n + 1) % len(val)]]
            k = min(EXAMPLES, len(task.val))
            for v in range(min(DESCRIPTIONS, len(task.cond))):
                rows.append([i, v, int(not args.no_prompt), *range(k), *[-1] * (EXAMPLES - k)])
                conds["own"].append(task.cond[v])
                conds["other"].append(nxt.cond[0])
                conds["gibberish"].append(gib)
        examples = batch_examples(sft, torch.tensor(rows), validation=True)
        names = [sft.val[r[0]].name for r in rows]
        out = {"folder": folder, "tasks": [sft.val[i].name for i in val], "rows": len(rows), "nll": {}}
        with torch.no_grad():
            made = {c: gen(torch.stack(x).float()) for c, x in conds.items()}
            for g in grid:
                scores = {}
                for c in ("own", "other", "gibberish") if g else ("own",):  # g = 0: one adapter for all three
                    flat = gen.guide(made[c], g)  # what generate() makes with config.guidance = g
                    nll = torch.cat([rows_nll(res, gen.layout, flat[i : i + BATCH], examples[i : i + BATCH]) for i in range(0, len(rows), BATCH)])
                    scores[c] = round(family_mean(list(zip(names, nll.tolist()))), 4)
                if not g:
                    scores = dict.fromkeys(("own", "other", "gibberish"), scores["own"])
                scores["other_minus_own"] = round(scores["other"] - scores["own"], 4)
                scores["gibberish_minus_own"] = round(scores["gibberish"] - scores["own"], 4)
                out["nll"][str(g)] = scores
                print(f"seed {seed} g {g}: {scores}", flush=True)
        record["runs"][seed] = out
    record["best_own"] = {s: min(r["nll"], key=lambda g: r["nll"][g]["own"]) for s, r in record["runs"].items()}
    record["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(record["best_own"]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    return record


if __name__ == "__main__":
    main()
