"""Two bench/generator_reach.py results on the same training families: the larger one restricted to the smaller's.

    .venv/bin/python bench/reach_subset.py LARGER.json SMALLER.json

Runs with `--every 2` and `--every 4` score different numbers of training families; the summary (best, random,
nearest, ...) depends on them. This recomputes both summaries over the families SMALLER scored (a subset of
LARGER's) and the held-out tasks both scored, and prints them one a line. Needs the prepared-tasks file the runs
used (their family embeddings) and MiniLM (the held-out descriptions); a few seconds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generator_reach import family_descriptions, newest_prepared, summary, unit_embeddings

from hypergen import api, paths
from hypergen.eval.protocol import EvalConfig, plan


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    big, small = (json.loads(Path(f).read_text()) for f in sys.argv[1:])
    if not set(small["families"]) <= set(big["families"]):
        sys.exit("The second file's training families are not all among the first's.")
    prepared = paths.home() / "cache" / "sft" / small["prepared"]
    fams = family_descriptions(prepared if prepared.is_file() else newest_prepared())
    train = [f"train:{f}" for f in small["families"]]
    tasks = [t for t in small["nll"] if t in big["nll"]]
    descs = {et.task.name: et.description for et in plan(EvalConfig(split="heldout", instances=small["instances"], seeds=1, methods=("base",)))}
    fam_emb, task_emb = unit_embeddings(fams, train, api.encoder("minilm"), [descs[t] for t in tasks])
    for name, rec in zip(sys.argv[1:], (big, small)):
        nll = {t: {k: v for k, v in rec["nll"][t].items() if not k.startswith("train:") or k in train} for t in tasks}
        out = summary(nll, train, fam_emb, task_emb)
        print(name, json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
