"""One expert training step on SmolLM2: every logit versus only the labelled ones (`answer_loss`).

    .venv/bin/python bench/train_step.py [--runs 5] [--device auto]

A batch of 8 real BIG-bench-like examples padded to 128 tokens (a long input, a 3-word answer), LoRA
rank 8 on q_proj + v_proj, fp32; times forward + backward + AdamW step. Writes the "train-step"
section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from common import machine, p50, timeit, write_section

from hypergen.base import load_base
from hypergen.config import LoraSpec
from hypergen.data import answer_loss, collate, encode_example


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    torch.manual_seed(0)
    res = load_base(device=args.device)
    params = res.new_trainable("bench", LoraSpec())
    net = res.forward_model()
    tok = res.tokenizer
    batch = collate([encode_example(tok, f"Claim {i}: " + "the evidence says so " * 40, "it is true", max_tokens=128) for i in range(8)], tok.pad_token_id)
    batch = {k: v.to(res.device) for k, v in batch.items()}
    opt = torch.optim.AdamW(params, lr=1e-4)
    sync = res.device.type == "cuda"

    def step(loss_fn):
        def run():
            opt.zero_grad()
            loss_fn().backward()
            opt.step()

        return run

    full = timeit(step(lambda: net(**batch).loss), args.runs, warmup=1, sync=sync)
    ans = timeit(step(lambda: answer_loss(net, batch)), args.runs, warmup=1, sync=sync)
    n_lab = int((batch["labels"] != -100).sum())
    body = "\n".join(
        [
            f"Machine: {machine()}. Command: `.venv/bin/python bench/train_step.py --runs {args.runs}` (p50 of {args.runs} steps after 1 warm-up).",
            "",
            f"Batch 8 x {batch['input_ids'].shape[1]} tokens ({n_lab} labelled answer tokens), LoRA r=8 on q_proj + v_proj, fp32, forward + backward + AdamW.",
            "",
            "| loss | step p50 s |",
            "|---|---:|",
            f"| every logit (`model(**batch).loss`) | {p50(full) / 1000:.2f} |",
            f"| labelled logits only (`hypergen.data.answer_loss`, what experts train with) | {p50(ans) / 1000:.2f} |",
        ]
    )
    print(body)
    write_section("benchmarks.md", f"train-step-{res.device.type}", body)


if __name__ == "__main__":
    main()
