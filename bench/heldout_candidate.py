"""Score a trained generator that does not ship on the held-out split, beside everything that does.

    .venv/bin/python bench/heldout_candidate.py FAMILY EXPORT --label "what it is" --out docs/results/X.json [--work DIR]

EXPORT: a trained generator folder (`hypergen train ... --export --out EXPORT`). It is packed as the shipped
ones are (`hypergen generator-pack`, int8; a packed one is copied as it is) into WORK/generators/FAMILY, beside links to the other shipped
generators, and `hypergen eval --split heldout --recorded-oracle` runs on WORK/eval, a copy of
docs/results/heldout: the rows of every other method are reused (their keys are unchanged), only FAMILY's are
scored (its methods, +desc, and the other-task and gibberish controls: 13-21 min for t2l, ~6 min for mtlora on
this 2-core CPU). Resumable: rerun with the same --work. The JSON holds FAMILY's rows of the summary, its
controls, and issue 17's bar as that evaluation computes it (the default's checks; they move with the candidate
when it is the default's family or its fair baseline mtlora). Nothing in generators/ or docs/results/heldout changes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine

from hypergen import api

REPO = Path(__file__).resolve().parent.parent
KEEP = ("main_family", "main", "nll_family", "mc_accuracy_family", "mc_accuracy_bc_family", "gen_rougeL", "main_family_oracle_gap_closed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("family", help="the generator family the candidate belongs to (t2l, mtlora, sg, ...)")
    ap.add_argument("export", type=Path, help="the trained generator folder (generator.json + generator.safetensors)")
    ap.add_argument("--label", required=True, help="what the candidate is (run, recipe, step), written into the JSON")
    ap.add_argument("--out", type=Path, required=True, help="the JSON to write")
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a new temporary one); reuse it to resume")
    args = ap.parse_args()

    if not (args.export / "generator.json").is_file():
        sys.exit(f"{args.export} holds no trained generator (generator.json); export the run first (`hypergen train ... --export`).")
    shadow = api.generators_dir() / args.family
    if shadow.exists():  # the user's trained generators are found before HYPERGEN_GENERATORS'
        sys.exit(f"{shadow} would be scored instead of the candidate: move it away first.")
    work = args.work or Path(tempfile.mkdtemp(prefix=f"heldout-{args.family}-"))
    gens, out = work / "generators", work / "eval"
    if not out.exists():
        shutil.copytree(REPO / "docs" / "results" / "heldout", out)
    if not (gens / args.family).exists():
        gens.mkdir(parents=True, exist_ok=True)
        for g in (REPO / "generators").iterdir():
            if g.is_dir() and g.name != args.family and not (gens / g.name).exists():
                (gens / g.name).symlink_to(g.resolve())
        if "packed" in json.loads((args.export / "generator.json").read_text()):  # e.g. a shipped one with another setting
            shutil.copytree(args.export, gens / args.family)
        else:
            api.pack_generator(args.export, gens / args.family)
    cmd = [sys.executable, "-m", "hypergen.cli", "eval", "--split", "heldout", "--out", str(out), "--recorded-oracle", "--json"]
    print(f"{' '.join(cmd)}  (HYPERGEN_GENERATORS={gens})", flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "HYPERGEN_GENERATORS": str(gens)}, stdout=subprocess.DEVNULL)

    summary = json.loads((out / "results.json").read_text())["summary"]
    mine = lambda m: m == args.family or m.startswith((f"{args.family}+", f"{args.family}@"))  # noqa: E731
    result = {
        "candidate": args.label,
        "family": args.family,
        "command": f"bench/heldout_candidate.py {args.family} EXPORT --label ... (hypergen eval --split heldout --recorded-oracle "
                   "on a copy of docs/results/heldout with EXPORT packed in place of the shipped one)",
        "machine": machine(),
        "note": "main_family = family-weighted; main = over tasks",
        "methods": {m: {k: v[k] for k in KEEP if k in v} for m, v in summary["methods"].items() if mine(m)},
        "controls": {m: v for m, v in summary["controls"].items() if mine(m)},
        "bar": summary["bar"],
        "scoring_minutes": summary.get("scoring_minutes"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for m, v in result["methods"].items():
        print(f"{m:24s} main {v['main_family']:.3f}  NLL {v['nll_family']:.2f}")
    for c in result["bar"]["checks"]:
        print(f"bar: {c['check']}: {c['value']:+.3f} (target {c['target']}){' met' if c['met'] else ''}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
