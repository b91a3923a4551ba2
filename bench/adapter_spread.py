"""How much do a generator's adapters differ from one description to another? Layout.spread in weight space.

    .venv/bin/python bench/adapter_spread.py [CHECKPOINT ...] [--init] [--zoo] [--prepared FILE] [--out F.json]

For each t2l CHECKPOINT (a generator folder; `shipped` = generators/t2l), the adapters it makes from one
description of every family in a prepared-tasks file (its first task's `reader` description, as
bench/generator_reach.py takes them; default: the newest file in the cache), and their spread
(hypergen.generators.layout.Layout.spread): sqrt(mean ||dW_i - mean dW||^2 / mean ||dW_i||^2), 0 when every
description gets one adapter, ~1 when the adapters have nothing in common. `--init`: an untrained t2l (seed 0)
on the same descriptions; `--zoo`: the shipped zoo's experts, one per task. Also the norms of the mean adapter's
dW and of a typical one (root mean square), summed over modules. A training run logs the same number at each
validation (`adapter_spread`, on up to 64 of its training families and its validation ones).
Weight space cannot tell whether the differences help a task (bench/generator_reach.py scores that); it says
cheaply whether there are any. Seconds per checkpoint on a 2-core CPU; no randomness but `--init`'s seed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine
from generator_reach import family_descriptions, newest_prepared

from hypergen import api
from hypergen.assets import SMOLLM2_HUB_ID as BASE
from hypergen.generators import build

def norms(flat: torch.Tensor, layout) -> tuple[float, float]:
    """(||mean dW||, sqrt(mean ||dW_i||^2)) over all modules."""
    each, mean = layout.energies(flat)
    return mean**0.5, each**0.5


@torch.no_grad()
def adapters(gen, emb: torch.Tensor) -> torch.Tensor:
    gen.eval()
    return torch.cat([gen(emb[i : i + 32]) for i in range(0, len(emb), 32)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="*", help="t2l generator folders; `shipped` = generators/t2l")
    ap.add_argument("--init", action="store_true", help="an untrained t2l (seed 0) too")
    ap.add_argument("--zoo", action="store_true", help="the shipped zoo's experts too")
    ap.add_argument("--prepared", type=Path, default=None)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    t0 = time.perf_counter()
    prepared = a.prepared or newest_prepared()
    emb = torch.stack([e for _, _, e in family_descriptions(prepared).values()]).float()
    bank = api.get_generator("nearest", base_model=BASE).bank
    rows = {}

    def record(name: str, flat: torch.Tensor) -> None:
        mean, each = norms(flat, bank.layout)
        rows[name] = {"adapters": len(flat), "spread": round(bank.layout.spread(flat), 4), "mean_dw_norm": round(mean, 4), "rms_dw_norm": round(each, 4)}
        print(f"{name}: {rows[name]} ({time.perf_counter() - t0:.0f} s)", flush=True)

    if a.zoo:
        record("zoo experts", bank.flat)
    if a.init:
        torch.manual_seed(0)
        gen = build("t2l", bank)
        gen.fit_conditions(emb)  # as training does on its own descriptions
        record("t2l untrained (seed 0)", adapters(gen, emb))
    for ck in a.checkpoints:
        gen = api.get_generator("t2l", checkpoint=None if ck == "shipped" else ck, base_model=BASE)
        record(ck, adapters(gen, emb))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"command": " ".join(sys.argv), "machine": machine(), "prepared": prepared.name,
                                     "families": len(emb), "wall_s": round(time.perf_counter() - t0), "results": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
