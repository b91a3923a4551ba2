"""Training numbers of the trained generators, beside the baselines, on the experts they never saw.

    .venv/bin/python bench/generators_report.py [--generators generators] [--zoo zoo]

For each trained checkpoint (generators/NAME/train.json, written by `hypergen train`), reads its
training summary (command, steps, wall time, final loss terms) and measures the relative error of the
generated weight update dW against the experts held out of its training (`--val-experts`), next to
what the baselines give for the same descriptions on the same bank (the zoo minus those experts) and
next to the zero update (the plain base: error 1.0 by definition). Writes the "training" section of
docs/generators.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import MISSING, fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, write_section

from hypergen import api
from hypergen.generators import ExpertBank, build, get_family, load_generator
from hypergen.generators.train import TrainConfig

BASELINES = ("nearest", "mix", "lego")
# training settings left out of the commands: shown already, or how the run was logged, checkpointed or spread
QUIET = {"objective", "steps", "batch_size", "lr", "val_experts", "progress", "logger", "ckpt_every", "log_every", "devices", "strategy", "num_nodes", "accelerator", "bf16"}


def command(name: str, train: dict, init: str | None, out: str, zoo: str | None = None, step: int | None = None, last: bool = False, config: dict | None = None) -> str:
    """The `hypergen train` command that made a generator. An exported sft checkpoint (step: the step it was
    taken at; last: its run's last checkpoint rather than its best on validation) says so: its run's --steps
    only bounded how far the run could go (--lr-decay, not --steps, shapes the learning rate), and the last
    command of a stopped run may have named another number."""
    parts = [f"hypergen train {name}", f"--objective {train['objective']}", f"--steps {train['steps']}", f"--batch-size {train['batch_size']}", f"--lr {train['lr']}"]
    # every other training setting that differs from TrainConfig's default (QUIET aside)
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    parts += [f"--{k.replace('_', '-')} {v}" for k, v in train.items() if k in defaults and k not in QUIET and v != defaults[k]]
    if train.get("tasks", "zoo") != "zoo":  # trained on described tasks (the Makefile's SFT_RUN), not on the zoo
        parts += ["--export", "--export-last"] if last else ["--export"]
    elif zoo:
        parts.append(f"--zoo {zoo}")
    parts += [f"--val-experts {v}" for v in train.get("val_experts", [])]
    if config and not init:  # the family's own settings that differ from its defaults (--set)
        defaults = get_family(name).Config().to_dict()
        parts += [f"--set {k}={v}" for k, v in config.items() if k in defaults and v != defaults[k]]
    if init:
        parts.append(f"--init {init}")
    text = " ".join(parts + [f"--out {out}"]).replace(str(Path.home()), "~")
    if not step:
        return f"`{text}`"
    return f"`{text}` (exported: step {step}, the run's {'last' if last else 'best on validation'})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--generators", default="generators")
    ap.add_argument("--zoo", default=None)
    args = ap.parse_args()
    z = api.zoo(args.zoo)
    enc = api.encoder("minilm")
    lines = [f"Machine: {machine()}. Zoo: {z.root} ({len(z.names())} experts). Command: `.venv/bin/python bench/generators_report.py" + (f" --zoo {args.zoo}" if args.zoo else "") + "`.", ""]
    rows, val_rows = [], []
    for folder in sorted(Path(args.generators).glob("*/train.json")):
        folder = folder.parent
        summary = json.loads((folder / "train.json").read_text())
        meta = json.loads((folder / "generator.json").read_text())
        name, train = meta["family"], summary["train"]
        final = summary.get("final") or {}
        terms = ", ".join(f"{k} {v:.3g}" for k, v in final.items() if k != "step")
        # an exported sft checkpoint (t2l, mtlora) records the step it was taken at and no wall time
        rows.append(f"| {name} | {train['objective']} | {summary.get('step') or train['steps']} | {summary.get('seconds', '-')} | {terms} |")
        init = summary.get("init")
        first = Path(init) / "train.json" if init else None
        if first is not None and first.is_file():  # the warm start's own command first
            warm = json.loads(first.read_text())
            lines.append(f"- `{name}` (warm start): {command(name, warm['train'], None, init, warm.get('zoo'))}")
        elif init:
            lines.append(f"- `{name}` (warm start): its `--init` folder {init.replace(str(Path.home()), '~')} is not on this machine: the Makefile's rebuild-zoo-generators makes it")
        last = summary.get("step") is not None and summary.get("val_nll") is None  # export_run: no validation score = its last checkpoint
        out = str(folder)
        if "packed" in meta:  # the Makefile trains and exports beside, then packs into the shipped folder
            out = str(api.generators_dir() / f"{name}.fp32")
        made = command(name, train, init, out, summary.get("zoo"), summary.get("step"), last, meta.get("config"))
        if "packed" in meta:
            made += f", then `hypergen generator-pack {out} {folder}`".replace(str(Path.home()), "~")
        lines.append(f"- `{name}`: {made}")
        val = list(train.get("val_experts", []))
        if not val:
            continue
        bank = ExpertBank.from_zoo(z, enc, names=meta["experts"])
        gen = load_generator(folder, bank, family=name)
        errs = {name: api.validation_error(gen, z, val)["rel_l2_dW"]}
        for b in BASELINES:
            errs[b] = api.validation_error(build(b, bank), z, val)["rel_l2_dW"]
        val_rows.append((name, val, errs))
    lines += ["", "| generator | objective | steps | seconds | final loss terms |", "|---|---|---:|---:|---|", *rows, ""]
    for name, val, errs in val_rows:
        methods = list(errs)
        lines += [
            f"Relative error ||dW_gen - dW_expert|| / ||dW_expert|| on the {len(val)} experts held out of `{name}`'s training "
            "(1.0 = the plain base, no update; lower is better):",
            "",
            "| expert | " + " | ".join(methods) + " |",
            "|---|" + "---:|" * len(methods),
            *[f"| {v} | " + " | ".join(f"{errs[m][v]:.3f}" for m in methods) + " |" for v in val],
            "| **mean** | " + " | ".join(f"**{sum(errs[m].values()) / len(val):.3f}**" for m in methods) + " |",
            "",
        ]
    body = "\n".join(lines)
    print(body)
    write_section("generators.md", "training", body)


if __name__ == "__main__":
    main()
