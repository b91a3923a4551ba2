"""Description -> adapter active in the resident model: latency per generator, versus training an expert.

    .venv/bin/python bench/generate.py [--zoo PATH] [--runs 40] [--families nearest mix lego sg ...]

Each run uses a different description (cycling through a fixed list), so the encoder never sees a
cached input. Trained families use their checkpoint (generators/NAME); a family without one is timed
untrained and marked so (its speed does not depend on its weights). Writes the "generate" section of
docs/benchmarks.md. Seed 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, p50, p90, write_section

from hypergen import api

DESCRIPTIONS = [
    "Label each tweet as sarcastic or not.",
    "Decide whether the two sentences mean the same thing. Answer Yes or No.",
    "Translate the English word into French.",
    "Give the antonym of the word.",
    "Classify the movie review as positive or negative.",
    "Answer the arithmetic question with a number.",
    "Say which of the options completes the sentence most plausibly.",
    "Identify the language of the given sentence.",
    "Is the statement about physics true or false?",
    "Unscramble the letters to form an English word.",
    "Pick the emotion expressed by the emoji sequence.",
    "Determine whether the argument contains a logical fallacy.",
    "Find the date that is one week after the given date.",
    "Tell whether the sentence about sports is plausible.",
    "Convert the quantity to the requested unit.",
    "Answer the multiple-choice science question.",
    "Sort the words in alphabetical order.",
    "Detect whether the joke relies on dark humor.",
    "Choose the correct ordering of adjectives.",
    "Recognize the word drawn in ASCII art.",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo", default=None)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--families", nargs="*", default=None)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    from hypergen.generators import build, get_family

    zoo = api.zoo(args.zoo)
    families = args.families or api.list_generators()
    model = api.resident(None, args.device)
    enc = api.encoder()
    rows, notes = [], []
    for fam in families:
        cls = get_family(fam)
        try:
            gen = api.get_generator(fam, str(zoo.root) if args.zoo else None)
            label = fam
        except Exception as e:  # no checkpoint (trained family) or no multitask LoRA in the zoo
            if cls.trainable:
                gen = build(fam, api.bank(str(zoo.root) if args.zoo else None))
                label = f"{fam} (untrained, timing only)"
            else:
                notes.append(f"{fam}: skipped ({e})")
                continue
        parts = {"encode": [], "generate": [], "activate": [], "total": []}
        for i in range(args.runs + 3):
            d = DESCRIPTIONS[i % len(DESCRIPTIONS)]
            t0 = time.perf_counter()
            emb = enc.encode([d])[0]
            t1 = time.perf_counter()
            res = gen.generate(emb, description=d)
            t2 = time.perf_counter()
            model.activate(res.weights, name="generated")
            t3 = time.perf_counter()
            if i >= 3:  # warm-up
                for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                    parts[k].append(v * 1000)
        rows.append((label, res.weights.rank, parts))
        model.deactivate()
    train_s = statistics.median(r.seconds for r in zoo.records()) if len(zoo) else float("nan")
    steps = statistics.median(r.steps for r in zoo.records()) if len(zoo) else 0
    lines = [
        f"Machine: {machine()}. Device: {model.device}. Zoo: {len(zoo)} experts ({zoo.root}). Encoder: {enc.name}. "
        f"{args.runs} timed runs per generator after 3 warm-up runs, each on a different description; seed 0. "
        f"Command: `.venv/bin/python bench/generate.py --runs {args.runs}`.",
        "",
        "| generator | rank | encode p50 ms | generate p50 ms | activate p50 ms | total p50 ms | total p90 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, rank, p in rows:
        lines.append(f"| {label} | {rank} | {p50(p['encode']):.1f} | {p50(p['generate']):.1f} | {p50(p['activate']):.2f} | {p50(p['total']):.1f} | {p90(p['total']):.1f} |")
    if rows:
        best = min(p50(p["total"]) for _, _, p in rows)
        lines += ["", f"Training one expert (median over the zoo's records: {steps:.0f} steps, {train_s:.0f} s of Lightning fit; "
                  "the build may have shared the cores with other work, see docs/zoo.md). "
                  f"Generating one: {best:.1f} ms p50 at best, about {train_s * 1000 / best:,.0f}x faster (target: p50 <= 50 ms)."]
    lines += [f"- {n}" for n in notes]
    body = "\n".join(lines)
    print(body)
    write_section("benchmarks.md", f"generate-{model.device.type}", body)


if __name__ == "__main__":
    main()
