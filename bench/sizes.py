"""Generator sizes at SmolLM2-135M scale (30 layers, q_proj 576->576, v_proj 576->192, rank 8).

    .venv/bin/python bench/sizes.py

Builds each trainable family on a synthetic 8-expert bank of that layout (random weights: sizes do not
depend on values) and writes the "sizes" section of docs/generators.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from common import write_section

from hypergen.generators import ExpertBank, Layout, build, get_family, registered


def smollm2_bank(n: int = 8) -> ExpertBank:
    paths, a_shapes, b_shapes = [], [], []
    for layer in range(30):
        for name, out in (("q_proj", 576), ("v_proj", 192)):
            paths.append(f"model.layers.{layer}.self_attn.{name}")
            a_shapes.append((8, 576))
            b_shapes.append((out, 8))
    layout = Layout(tuple(paths), tuple(a_shapes), tuple(b_shapes), 16.0)
    g = torch.Generator().manual_seed(0)
    flat = torch.randn(n, layout.numel, generator=g) * 0.01
    emb = torch.nn.functional.normalize(torch.randn(n, 384, generator=g), dim=-1)
    return ExpertBank([f"e{i}" for i in range(n)], emb, [e[None] for e in emb], flat, [f[None].repeat(3, 1) for f in flat], layout, {"base_model": "SmolLM2-135M-Instruct"})


def main() -> None:
    bank = smollm2_bank()
    lines = [
        f"Adapter: {bank.layout.numel:,} weights (rank 8 on q_proj + v_proj of 30 layers). Command: `.venv/bin/python bench/sizes.py`.",
        "",
        "| generator | learned parameters | checkpoint fp16 MB |",
        "|---|---:|---:|",
    ]
    for name in sorted(registered()):
        if not get_family(name).trainable:
            continue
        gen = build(name, bank)
        n = sum(v.numel() for v in gen.state_for_save().values())
        lines.append(f"| {name} | {n:,} | {2 * n / 2**20:.1f} |")
    lines += ["", "Baselines (nearest, mix, lego, multitask) learn nothing: they read the zoo itself (~0.9 MB per expert in fp16)."]
    body = "\n".join(lines)
    print(body)
    write_section("generators.md", "sizes", body)


if __name__ == "__main__":
    main()
