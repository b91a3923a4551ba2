"""Adapter activation / swap in the resident model versus reloading the base.

    .venv/bin/python bench/swap.py [--runs 200] [--device auto] [--gguf]

Writes the "swap" section of docs/benchmarks.md. Adapters are two random rank-8 q/v LoRAs (seeds 1 and 2).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from common import machine, p50, p90, timeit, write_section

from hypergen.base import load_base
from hypergen.config import LoraSpec
from hypergen.lora import LoraWeights


def random_adapter(model, seed: int) -> LoraWeights:
    g = torch.Generator().manual_seed(seed)
    shapes = LoraSpec().shapes(model)
    return LoraWeights({p: (0.01 * torch.randn(8, i, generator=g), 0.01 * torch.randn(o, 8, generator=g)) for p, (o, i) in shapes.items()}, 16.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--reload-runs", type=int, default=20)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--gguf", action="store_true", help="also time one conversion from the GGUF file (~20 s)")
    args = ap.parse_args()

    res = load_base(device=args.device)
    sync = res.device.type == "cuda"
    a, b = random_adapter(res.model, 1), random_adapter(res.model, 2)
    t = time.perf_counter()
    res.activate(a)
    first_ms = (time.perf_counter() - t) * 1000
    flip = iter(range(10**9))
    swap = timeit(lambda: res.activate(a if next(flip) % 2 else b), args.runs, sync=sync)
    res.load_adapter("other", b)
    switch = timeit(lambda: res.activate("other" if next(flip) % 2 else "default"), args.runs, sync=sync)
    deact = timeit(res.deactivate, args.runs, sync=sync)

    def reload():
        m = load_base(device=args.device)
        del m

    reload_ms = timeit(reload, args.reload_runs, warmup=1, sync=sync)
    rows = [
        ("first activation (adds the peft slot, once per rank/targets)", [first_ms]),
        ("swap: new LoraWeights into the active slot (in-place copy)", swap),
        ("switch between two loaded adapters (set_adapter)", switch),
        ("deactivate (back to the base)", deact),
        ("reload the base from the safetensors cache", reload_ms),
    ]
    if args.gguf:
        import tempfile

        from hypergen import assets

        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            assets.convert_smollm2(Path(tmp))
            rows.append(("convert from the GGUF in the wheel (first setup only)", [(time.perf_counter() - t) * 1000]))

    lines = [
        f"Machine: {machine()}. Device: {res.device}. Base: {res.name} (fp32), adapters rank 8 on q_proj+v_proj "
        f"({a.num_params():,} params), seeds 1 and 2. Command: `.venv/bin/python bench/swap.py --runs {args.runs}{' --gguf' if args.gguf else ''}`.",
        "",
        "| operation | runs | p50 ms | p90 ms |",
        "|---|---:|---:|---:|",
    ]
    for name, xs in rows:
        lines.append(f"| {name} | {len(xs)} | {p50(xs):.3f} | {p90(xs):.3f} |")
    ratio = p50(reload_ms) / p50(swap)
    lines += ["", f"Swap p50 is {p50(swap):.3f} ms, {ratio:,.0f}x faster than reloading the base (target: <= 5 ms)."]
    body = "\n".join(lines)
    print(body)
    write_section("benchmarks.md", f"swap-{res.device.type}", body)


if __name__ == "__main__":
    main()
