"""Per-row adapters: 8 inputs with 8 different adapters in one batch, against 8 sequential swap + answer.

    .venv/bin/python bench/rows.py [--tokens 32] [--runs 3] [--threads N] [--device auto] [--out rows.json] [--base DIR]

Adapters are random rank-8 q/v LoRAs (seeds 1-8, made as bench/swap.py makes them); seed 0 otherwise.
Each mode gives the same 8 greedy answers of up to --tokens new tokens:
- rows: one `answer(texts, adapters=[...])` call (hypergen.rowlora: batched matmul per row, no slot swap);
- slots: one `answer(texts, adapter_names=[...])` call with the 8 adapters preloaded as peft slots;
- sequential: for each input, `activate(adapter)` (an in-place swap) then `answer([text])`.
The modes take turns in every run, so load from other processes falls on each alike. On a shared CPU
pass --threads 1: with two OpenMP threads on two busy cores, a call now and then runs 10-20x slower
(a thread waits at each barrier for its descheduled partner), whatever the mode.
Prints one JSON record (machine, settings, p50 seconds, throughput ratios, answers that agree). It writes
no docs page: docs/benchmarks.md is written from a run on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from common import machine, p50, timeit
from swap import random_adapter

from hypergen.base import load_base

TEXTS = [
    "Write a short story about a dragon who learns to bake bread.",
    "Explain how a bicycle stays upright while moving.",
    "Describe a walk through a busy market in the morning.",
    "List some reasons people enjoy gardening and explain each one.",
    "Tell me about the history of the printing press.",
    "Write a letter to a friend about your summer holidays.",
    "Explain why the sky looks blue during the day.",
    "Describe how to cook a simple vegetable soup, step by step.",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=32, help="new tokens per answer (greedy)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--base", default=None, help="a local HF model folder instead of SmolLM2 (e.g. a tiny one, to try the script)")
    ap.add_argument("--out", default=None, help="also write the JSON record to this file")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)

    res = load_base(args.base, device=args.device)
    sync = res.device.type == "cuda"
    ws = [random_adapter(res.model, seed) for seed in range(1, len(TEXTS) + 1)]
    names = [f"a{i}" for i in range(len(ws))]
    for name, w in zip(names, ws):
        res.load_adapter(name, w)
    n = args.tokens
    out = {}

    def rows():
        out["rows"] = res.answer(TEXTS, adapters=ws, max_new_tokens=n)

    def slots():
        out["slots"] = res.answer(TEXTS, adapter_names=names, max_new_tokens=n)

    def sequential():
        answers = []
        for w, text in zip(ws, TEXTS):
            res.activate(w)  # same rank and modules as the slot: copied in place
            answers += res.answer([text], max_new_tokens=n)
        out["sequential"] = answers

    modes = {"rows": rows, "slots": slots, "sequential": sequential}
    ms = {k: [] for k in modes}
    for i in range(1 + args.runs):  # round 0 warms up
        for k, fn in modes.items():
            t = timeit(fn, 1, warmup=0, sync=sync)
            ms[k] += t if i else []
    s = {k: p50(v) / 1000 for k, v in ms.items()}
    tok = res.tokenizer
    record = {
        "machine": machine(),
        "device": str(res.device),
        "base": res.name,
        "dtype": str(next(res.model.parameters()).dtype),
        "command": "bench/rows.py " + " ".join(sys.argv[1:]),
        "seed": 0,
        "adapters": f"{len(ws)} random LoRAs, rank 8 on q_proj+v_proj, seeds 1-{len(ws)}",
        "inputs": len(TEXTS),
        "max_new_tokens": n,
        "runs": args.runs,
        "p50_s": {k: round(v, 4) for k, v in s.items()},
        "answers_per_s": {k: round(len(TEXTS) / v, 3) for k, v in s.items()},
        "ratio_rows_vs_sequential": round(s["sequential"] / s["rows"], 2),
        "ratio_rows_vs_slots": round(s["slots"] / s["rows"], 2),
        # the same 8 answers either way, up to rare greedy ties broken by float rounding
        "rows_answers_equal_sequential": sum(a == b for a, b in zip(out["rows"], out["sequential"])),
        "new_tokens_per_answer": [len(tok(a, add_special_tokens=False)["input_ids"]) for a in out["rows"]],
    }
    text = json.dumps(record, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(f"one batched per-row call is {record['ratio_rows_vs_sequential']}x the throughput of {len(TEXTS)} sequential swap + answer", file=sys.stderr)


if __name__ == "__main__":
    main()
