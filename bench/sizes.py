"""Generator sizes at SmolLM2-135M scale (30 layers, q_proj 576->576, v_proj 576->192, rank 8).

    .venv/bin/python bench/sizes.py

Builds each trainable family on a synthetic 8-expert bank of that layout (random weights: sizes do not
depend on values), reads the shipped checkpoints' sizes in generators/, and writes the "sizes" section of
docs/generators.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_section

from hypergen.generators import build, get_family, registered
from hypergen.paths import REPO_ROOT
from hypergen.testing import smollm2_bank


def shipped(name: str) -> str:
    """The shipped checkpoint's size on disk in MB and its storage, or "-" when generators/ has none."""
    folder = REPO_ROOT / "generators" / name
    if not (folder / "generator.json").is_file():
        return "-"
    packed = json.loads((folder / "generator.json").read_text()).get("packed")
    return f"{(folder / 'generator.safetensors').stat().st_size / 2**20:.1f} ({packed or 'fp16'})"


def main() -> None:
    bank = smollm2_bank(8)
    lines = [
        f"Adapter: {bank.layout.numel:,} weights (rank 8 on q_proj + v_proj of 30 layers). Command: `.venv/bin/python bench/sizes.py`.",
        "",
        "| generator | learned parameters | checkpoint fp16 MB | generation-only fp16 MB | shipped in generators/ MB |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in sorted(registered()):
        if not get_family(name).trainable:
            continue
        gen = build(name, bank)
        state = gen.state_for_save()
        n = sum(v.numel() for v in state.values())
        kept = sum(v.numel() for k, v in state.items() if not (gen.training_only and k.startswith(gen.training_only)))
        lines.append(f"| {name} | {n:,} | {2 * n / 2**20:.1f} | {2 * kept / 2**20:.1f} | {shipped(name)} |")
    lines += ["", "generators/ ships only what generation needs: a CVAE's posterior encoder q(z | x, c) is used by the training loss alone, so it is "
              "saved apart (training.safetensors, git-ignored) and `--init` needs the folder `hypergen train` wrote. "
              "A packed checkpoint (`hypergen generator-pack SRC DEST`) stores its matrices of >= 65,536 entries in int8 per row "
              "(t2l: 0.2% relative error on the generated dW, `bench/pack_error.py`); mtlora's matrices are all smaller, so its packed copy is fp16.",
              "", "Baselines (nearest, mix, lego, multitask) learn nothing: they read the zoo itself (0.5 MB per expert in a packed int8 zoo)."]
    body = "\n".join(lines)
    print(body)
    write_section("generators.md", "sizes", body)


if __name__ == "__main__":
    main()
