"""A finished held-out evaluation without some families or tasks: how much do they carry its headline?

    .venv/bin/python bench/heldout_families.py --drop metaphor_boolean --drop fact_checker [--results DIR] [--out F.json]
    .venv/bin/python bench/heldout_families.py --learnable 0.05 [--results DIR] [--out F.json]

Reads the rows of a `hypergen eval` run (DIR/results.json, default docs/results/heldout), leaves out every
task of the named families and recomputes the summary on the rest with the evaluation's own code
(hypergen.eval.stats.summarize: family- and task-weighted means, oracle gap closed, controls, the bar).
Nothing is scored again. Made for families a generator trained near: until 2026-12-01 the shipped `t2l`
and the cached `mtlora` had trained on metaphor_understanding/lit2met and vitaminc_fact_verification,
built from the data of held-out metaphor_boolean and fact_checker/fever (split.SAME_SOURCE); the run
without them is docs/results/heldout/without_same_source.json.
--learnable M keeps only the tasks whose oracle expert (trained on the task itself) beats the base by more
than M in the main score: where not even that expert moves the answers (binary multiple choice at chance,
tasks no adapter of this size learns), no description can, and those tasks only add noise to the controls.
The kept set is chosen by the oracle and base rows alone, never by a generator's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

from hypergen.errors import HypergenError
from hypergen.eval.stats import family, summarize

HEAD = ("main", "nll")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="docs/results/heldout", help="a hypergen eval --out folder")
    ap.add_argument("--drop", action="append", default=[], help="a family to leave out (repeat the flag)")
    ap.add_argument("--learnable", type=float, default=None, metavar="M",
                    help="keep only tasks whose oracle's main score beats the base's by more than M")
    ap.add_argument("--out", default=None, help="write both summaries' headlines here as JSON")
    args = ap.parse_args(argv)
    data = json.loads((Path(args.results) / "results.json").read_text())
    # the run's settings as recorded: summarize reads a few of them; no EvalConfig, which checks that today's
    # checkpoints exist (a finished run is read, nothing is scored)
    cfg = SimpleNamespace(**data["config"])
    rows = data["rows"]
    unknown = sorted(set(args.drop) - {family(r["task"]) for r in rows})
    if unknown:
        raise HypergenError(f"No task of {unknown} in {args.results}; its families: {sorted({family(r['task']) for r in rows})}.")
    if not args.drop and args.learnable is None:
        raise HypergenError("Say what to leave out: --drop FAMILY (repeatable) and/or --learnable M.")
    kept = [r for r in rows if family(r["task"]) not in args.drop]
    if args.learnable is not None:
        main = {(r["task"], r["method"]): r["main"] for r in rows if not r.get("long") and r["method"] in ("base", "oracle")}
        tasks = {r["task"] for r in rows}
        missing = sorted(t for t in tasks if (t, "oracle") not in main or (t, "base") not in main)
        if missing:
            raise HypergenError(f"--learnable needs each task's oracle and base rows; {len(missing)} tasks lack one (e.g. {missing[0]}).")
        kept = [r for r in kept if round(main[r["task"], "oracle"] - main[r["task"], "base"], 9) > args.learnable]  # 0.65 - 0.6 is not > 0.05
    both = {"all": summarize(rows, cfg), "kept": summarize(kept, cfg)}
    out = {"results": args.results, "dropped": sorted(args.drop), "learnable": args.learnable, "kept_tasks": sorted({r["task"] for r in kept}), "families": {k: s["families"] for k, s in both.items()},
           "tasks": {k: s["tasks"] for k, s in both.items()}, "methods": {}, "controls": {}, "bar": both["kept"]["bar"]}
    print(f"{'method':14s} " + "  ".join(f"{h}: all / kept" for h in ("main, family", "NLL, family", "main gap closed, family")))
    for m, e in both["all"]["methods"].items():
        k = both["kept"]["methods"].get(m, {})
        row = {f"{h}_family": [e.get(f"{h}_family"), k.get(f"{h}_family")] for h in HEAD}
        row["main_family_oracle_gap_closed"] = [e.get("main_family_oracle_gap_closed"), k.get("main_family_oracle_gap_closed")]
        out["methods"][m] = row
        print(f"{m:14s} " + "  ".join(" / ".join("-" if v is None else f"{v:.3f}" for v in vals) for vals in row.values()))
    for m, c in both["kept"]["controls"].items():
        out["controls"][m] = {k: [both["all"]["controls"].get(m, {}).get(k), v] for k, v in c.items()
                              if k in ("aligned_minus_other", "aligned_minus_gibberish") or (k.endswith("_family") and "ci95" not in k)}
    print("controls in main, own minus another task's / gibberish description, all -> kept (task-weighted; family-weighted):")
    for m, c in out["controls"].items():
        print(f"  {m:14s} " + "; ".join(" / ".join(f"{c[k][0]:+.3f} -> {c[k][1]:+.3f}" if None not in c[k] else "-" for k in keys)
                                      for keys in (("aligned_minus_other", "aligned_minus_gibberish"), ("aligned_minus_other_family", "aligned_minus_gibberish_family"))))
    print(f"families {out['families']['all']} -> {out['families']['kept']}, tasks {out['tasks']['all']} -> {out['tasks']['kept']}; the bar on the kept ones: "
          + json.dumps({k: v for k, v in out["bar"].items() if k != "checks"}))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
