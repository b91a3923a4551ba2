"""Generator sizes at SmolLM2-135M scale (30 layers, q_proj 576->576, v_proj 576->192, rank 8).

    .venv/bin/python bench/sizes.py

Builds each trainable family on a synthetic 8-expert bank of that layout (random weights: sizes do not
depend on values) and writes the "sizes" section of docs/generators.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_section

from hypergen.generators import build, get_family, registered
from hypergen.testing import smollm2_bank


def main() -> None:
    bank = smollm2_bank(8)
    lines = [
        f"Adapter: {bank.layout.numel:,} weights (rank 8 on q_proj + v_proj of 30 layers). Command: `.venv/bin/python bench/sizes.py`.",
        "",
        "| generator | learned parameters | checkpoint fp16 MB | shipped fp16 MB (without training-only tensors) |",
        "|---|---:|---:|---:|",
    ]
    for name in sorted(registered()):
        if not get_family(name).trainable:
            continue
        gen = build(name, bank)
        state = gen.state_for_save()
        n = sum(v.numel() for v in state.values())
        shipped = sum(v.numel() for k, v in state.items() if not (gen.training_only and k.startswith(gen.training_only)))
        lines.append(f"| {name} | {n:,} | {2 * n / 2**20:.1f} | {2 * shipped / 2**20:.1f} |")
    lines += ["", "generators/ ships only what generation needs: a CVAE's posterior encoder q(z | x, c) is used by the training loss alone, so it is "
              "saved apart (training.safetensors, git-ignored) and `--init` needs the folder `hypergen train` wrote.",
              "", "Baselines (nearest, mix, lego, multitask) learn nothing: they read the zoo itself (0.5 MB per expert in a packed int8 zoo)."]
    body = "\n".join(lines)
    print(body)
    write_section("generators.md", "sizes", body)


if __name__ == "__main__":
    main()
