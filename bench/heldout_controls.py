"""Does a generator's adapter carry its description to unseen tasks? Reference-answer NLL on held-out tasks.

    .venv/bin/python bench/heldout_controls.py --generator t2l [--checkpoint DIR] [--instances 8] [--out F.json]

For each held-out task of the BIG-bench split (the evaluation's tasks and descriptions; its first N test
instances in the split's order, not the evaluation's seeded draw, as every published run of this script
scored), the teacher-forced NLL per token of the reference answer (hypergen.scoring.reference_nll, the
content metric of `hypergen eval`) under:
- base: no adapter; base+desc: the description in the prompt;
- own / other / gibberish: the generator's adapter for the task's description, another task's, nonsense;
- own+desc / other+desc / gibberish+desc: that adapter, and the task's own description in the prompt too
  (does the adapter's description still matter when the prompt holds the task's?).
Lower is better. Means over tasks and over families (each family counts once). This is the quick check
of the held-out controls; `hypergen eval` is the full protocol (answers, accuracy, CIs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine

from hypergen import api
from hypergen.eval.protocol import GIBBERISH, EvalConfig, plan
from hypergen.eval.stats import family_means
from hypergen.scoring import reference_nll

CONDITIONS = ("base", "base+desc", "own", "other", "gibberish", "own+desc", "other+desc", "gibberish+desc")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", default="t2l")
    ap.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the usual lookup)")
    ap.add_argument("--instances", type=int, default=8, help="test instances per task (the first N in the split's order)")
    ap.add_argument("--out", default=None, help="also write the JSON record here")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    tasks = plan(EvalConfig(split="heldout", instances=args.instances, seeds=1, methods=("base",)))
    res, enc = api.resident(None, "auto"), api.encoder("minilm")
    gen = api.get_generator(args.generator, checkpoint=args.checkpoint, base_model=res.name)
    t_loaded = time.perf_counter()
    per: dict[str, dict[str, float]] = {c: {} for c in CONDITIONS}
    for et in tasks:
        test = et.test[: args.instances]
        adapters = {d: gen.generate(enc.encode([text])[0]).weights for d, text in (("own", et.description), ("other", et.other_description), ("gibberish", GIBBERISH))}
        for c in CONDITIONS:
            which = c.split("+")[0]
            if which == "base":
                res.deactivate()
            else:
                res.activate(adapters[which], name="bench")
            per[c][et.task.name] = reference_nll(res, test, description=et.description if c.endswith("+desc") else None)
        res.deactivate()
    record = {
        "machine": machine(),
        "command": "bench/heldout_controls.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "generator": args.generator,
        "checkpoint": str(gen.checkpoint) if gen.checkpoint else None,
        "tasks": len(tasks),
        "families": len(family_means(per["base"])),
        "instances": args.instances,
        "nll_task_mean": {c: round(sum(v.values()) / len(v), 4) for c, v in per.items()},
        "nll_family_mean": {c: round(sum(f.values()) / len(f), 4) for c, f in ((c, family_means(v)) for c, v in per.items())},
        "per_task": {c: {t: round(x, 4) for t, x in v.items()} for c, v in per.items()},
        "seconds": round(time.perf_counter() - t0, 1),  # all of it: planning, model loads and scoring
        "scoring_seconds": round(time.perf_counter() - t_loaded, 1),  # generating the adapters and scoring them
    }
    fam = record["nll_family_mean"]
    record["own_minus_other"] = round(fam["own"] - fam["other"], 4)  # < 0: the own description helps
    record["own_minus_gibberish"] = round(fam["own"] - fam["gibberish"], 4)
    record["own_minus_other_desc"] = round(fam["own+desc"] - fam["other+desc"], 4)  # the same, with the description in the prompt
    record["own_minus_gibberish_desc"] = round(fam["own+desc"] - fam["gibberish+desc"], 4)
    print(json.dumps({k: v for k, v in record.items() if k != "per_task"}, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    main()
