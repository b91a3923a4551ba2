"""How far is a held-out task's description from every description a generator trained on?

    .venv/bin/python bench/description_distance.py [--also data/descriptions/openai_evals.json] [--heldout-results docs/results/heldout/results.json] [--out F.json]

A generator maps a description's embedding (all-MiniLM-L6-v2, what the CLI uses) to an adapter, so it can only
carry to an unseen task what it learned near that task's embedding. This measures "near" with the cosine
similarity between descriptions of data/descriptions/bigbench.json (and of each --also file):
- each held-out task's evaluation description against the nearest training description (any task);
- each training task's first description against the nearest description of another task of its own
  family, and of another family: what the training data offers a generator to learn from.
Held-out tasks come from held-out families, so the fair yardstick is "another family". Both in raw cosine
and after centring on the training descriptions' mean (t2l's input: it subtracts that mean and divides by
one scalar). With
--heldout-results (an eval's results.json), also the rank correlation over held-out tasks between that
nearest cosine and each learned method's control gaps in answer NLL (another task's / gibberish description
minus the own one: positive = the own description helps). ~1 min on this 2-core CPU (encoding 8,224
descriptions); no model but the encoder, no randomness.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from common import machine

from hypergen import api
from hypergen.eval.stats import family
from hypergen.text import one_line_for_long_descriptions

ROOT = Path(__file__).resolve().parent.parent


def quartiles(xs: list[float]) -> dict:
    q = statistics.quantiles(xs, n=4)
    return {"n": len(xs), "q1": round(q[0], 3), "median": round(q[1], 3), "q3": round(q[2], 3)}


def spearman(x: list[float], y: list[float]) -> float:
    rank = lambda v: [sorted(v).index(a) for a in v]
    return statistics.correlation(rank(x), rank(y))


def control_correlations(results: Path, nearest: dict[str, float]) -> dict:
    """{method: {"tasks", "other", "gibberish"}}: Spearman of nearest cosine against each control's NLL gap."""
    rows = {(r["task"], r["method"]): r for r in json.loads(results.read_text())["rows"] if not r.get("long")}
    methods, out = {m for _, m in rows}, {}
    for m in sorted(m for m in methods if m + "@other" in methods):
        tasks = [t for t in nearest if all((t, k) in rows for k in (m, m + "@other", m + "@gibberish"))]
        gap = lambda c: [rows[t, m + c]["nll"] - rows[t, m]["nll"] for t in tasks]
        cos = [nearest[t] for t in tasks]
        out[m] = {"tasks": len(tasks), "other": round(spearman(cos, gap("@other")), 2), "gibberish": round(spearman(cos, gap("@gibberish")), 2)}
    return out


def neighbours(train: torch.Tensor, held: torch.Tensor, names: list[str], fams: list[str]) -> dict:
    """Quartiles of the nearest-neighbour cosines: held-out -> training, and a training task's first
    description -> another task of its family / another family."""
    task_id = {n: i for i, n in enumerate(dict.fromkeys(names))}
    fam_id = {f: i for i, f in enumerate(dict.fromkeys(fams))}
    tasks = torch.tensor([task_id[n] for n in names])
    families = torch.tensor([fam_id[f] for f in fams])
    first = [names.index(n) for n in task_id]  # each task's first description
    sims = train[first] @ train.T  # (tasks, descriptions)
    own_family = families[first, None] == families[None, :]
    sibling = own_family & (tasks[first, None] != tasks[None, :])
    has_sibling = sibling.any(1)
    return {
        "heldout_to_nearest_training": quartiles((held @ train.T).max(1).values.tolist()),
        "training_to_nearest_same_family_task": quartiles(sims.masked_fill(~sibling, -2).max(1).values[has_sibling].tolist()),
        "training_to_nearest_other_family": quartiles(sims.masked_fill(own_family, -2).max(1).values.tolist()),
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--descriptions", default=str(ROOT / "data" / "descriptions" / "bigbench.json"))
    ap.add_argument("--also", action="append", default=[], help="another training descriptions file whose tasks count as training "
                    "tasks too (e.g. data/descriptions/openai_evals.json, for --extra-suite openai_evals); repeatable")
    ap.add_argument("--heldout-results", default=None, help="an eval's results.json, e.g. docs/results/heldout/results.json")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    data = json.loads(Path(args.descriptions).read_text())
    for extra in args.also:  # held-out descriptions come from the first file only
        data["tasks"].update(json.loads(Path(extra).read_text())["tasks"])
    names = [t for t, ds in data["tasks"].items() for _ in ds]
    texts = [d["text"] for ds in data["tasks"].values() for d in ds]
    heldout = {t: ds[0]["text"] for t, ds in data["heldout"].items()}
    enc = api.encoder("minilm")
    with torch.no_grad(), one_line_for_long_descriptions():
        train = torch.nn.functional.normalize(enc.encode(texts), dim=-1)
        held = torch.nn.functional.normalize(enc.encode(list(heldout.values())), dim=-1)

    fams = [family(n) for n in names]
    record = {"machine": machine(), "command": "bench/description_distance.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "encoder": "all-MiniLM-L6-v2", "training_tasks": len(data["tasks"]), "training_descriptions": len(texts),
              "training_families": len(set(fams)), "heldout": {}, "summary": {}}
    sims = held @ train.T
    for (task, _), row in zip(heldout.items(), sims):
        i = int(row.argmax())
        record["heldout"][task] = {"nearest": names[i], "cosine": round(float(row[i]), 3)}
    # raw cosine, and cosine after centring on the training descriptions' mean: what t2l's input sees
    # (it subtracts that mean and divides by one scalar spread, which leaves cosines as they are)
    mu = train.mean(0, keepdim=True)
    centred = (torch.nn.functional.normalize(train - mu, dim=-1), torch.nn.functional.normalize(held - mu, dim=-1))
    for label, (tr, he) in (("raw", (train, held)), ("centred", centred)):
        record["summary"][label] = neighbours(tr, he, names, fams)
    if args.heldout_results:
        record["summary"]["spearman_nearest_cosine_vs_control_gap"] = control_correlations(
            Path(args.heldout_results), {t: v["cosine"] for t, v in record["heldout"].items()})
    print(json.dumps(record["summary"], indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    return record


if __name__ == "__main__":
    main()
