"""One sft step of a generator on SmolLM2: t2l emits 8 adapters, the frozen base runs once over 8 rows.

    .venv/bin/python bench/sft_step.py [--runs 5] [--device auto] [--write]

8 rows, each its own task (description) and one example padded to 128 tokens (the batch of
bench/train_step.py, so the two compare), per-row LoRA rank 8 on q_proj + v_proj through
hypergen.rowlora, fp32; times generator forward + base forward + backward + AdamW on the generator.
The bank (layout and neighbours only) is the shipped zoo's; descriptions use the fake encoder, whose
cost is not part of a step. --write puts the "sft-step" section into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from common import machine, p50, timeit, write_section

from hypergen.base import load_base
from hypergen.data import encode_example
from hypergen.generators import ExpertBank, build
from hypergen.generators.sft import SftData, TaskData, TrainBatches, sft_step
from hypergen.text import FakeEncoder
from hypergen.zoo.store import Zoo

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    res = load_base(device=args.device)
    enc = FakeEncoder()
    bank = ExpertBank.from_zoo(Zoo(REPO / "zoo"), enc, trajectories=False).to(res.device)
    gen = build("t2l", bank).to(res.device)
    tok = res.tokenizer
    tasks = []
    for i in range(args.rows):
        ex = encode_example(tok, f"Claim {i}: " + "the evidence says so " * 40, "it is true", max_tokens=128)
        tasks.append(TaskData(f"task{i}/x", enc.encode([f"Decide whether claim {i} is true."]), [ex], []))
    sft = SftData(res, tasks, [], 1, list(bank.names))
    batch = TrainBatches(sft, args.rows, seed=0)[0]
    opt = torch.optim.AdamW(gen.parameters(), lr=1e-4)
    sync = res.device.type == "cuda"

    def run():
        opt.zero_grad()
        sft_step(gen, sft, batch)["loss"].backward()
        opt.step()

    t = timeit(run, args.runs, warmup=1, sync=sync)
    n_params = sum(p.numel() for p in gen.parameters())
    body = "\n".join(
        [
            f"Machine: {machine()}. Command: `.venv/bin/python bench/sft_step.py --runs {args.runs}` (p50 of {args.runs} steps after 1 warm-up).",
            "",
            f"t2l ({n_params / 1e6:.2f} M parameters) emits {args.rows} adapters; the frozen base runs once over {args.rows} rows x 128 tokens, "
            "each row with its own adapter (hypergen.rowlora), fp32, forward + backward + AdamW on the generator.",
            "",
            "| step | p50 s | min s |",
            "|---|---:|---:|",
            f"| sft, t2l, {args.rows} rows x 128 tokens | {p50(t) / 1000:.2f} | {min(t) / 1000:.2f} |",
        ]
    )
    print(body)
    if args.write:
        write_section("benchmarks.md", f"sft-step-{res.device.type}", body)


if __name__ == "__main__":
    main()
