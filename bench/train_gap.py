"""On the training tasks, how much does a t2l generator's adapter depend on the task's description?

    .venv/bin/python bench/train_gap.py CHECKPOINT [CHECKPOINT ...] [--out F.json]

For each checkpoint (a t2l generator folder), in eval mode, the answer NLL of 12 fixed batches of 8 training
rows (TrainBatches of the shipped run's flags, seed 0, steps 5000-5011: the same rows for every checkpoint)
under each row's own adapter, and the mean over row pairs of (NLL under the next row's adapter, made from
another task's description) minus (NLL under the own one), paired as the contrast term pairs them
(hypergen.generators.sft.partners). Positive: the description decides the adapter on tasks it trained on.
The held-out counterpart is bench/heldout_controls.py. ~1 min on this 2-core CPU once the sft cache exists.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from common import machine

from hypergen import api
from hypergen.generators import ExpertBank, load_generator
from hypergen.generators.sft import TrainBatches, prepare_sft, sft_step
from hypergen.generators.train import TrainConfig

def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    # the shipped run's data flags (Makefile SFT_RUN): the same tasks, examples and validation families
    cfg = TrainConfig(objective="sft", tasks="descriptions", batch_size=8, sft_examples=1, logger="none")
    z, enc = api.zoo(None), api.encoder("minilm")
    bank = ExpertBank.from_zoo(z, enc)
    sft = prepare_sft(bank, z, api.resident(None, "cpu"), cfg, encoder=enc)
    batches = [TrainBatches(sft, 8, 0)[s] for s in range(5000, 5012)]
    record = {"machine": machine(), "command": "bench/train_gap.py " + " ".join(argv if argv is not None else sys.argv[1:]), "rows": 8 * len(batches), "checkpoints": {}}
    for ck in args.checkpoints:
        g = load_generator(ck, bank, family="t2l", base_model=bank.meta.get("base_model")).eval()
        own, gap = [], []
        with torch.no_grad():
            for b in batches:
                out = sft_step(g, sft, b, contrast=1.0)  # any weight > 0 scores the pairs
                own.append(float(out["nll"]))
                gap.append(float(out["other_minus_own"]))
        record["checkpoints"][ck] = {"own_nll": round(sum(own) / len(own), 4), "other_minus_own": round(sum(gap) / len(gap), 4)}
        print(ck, record["checkpoints"][ck], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    main()
