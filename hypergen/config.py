"""Configuration dataclasses shared across hypergen. Each validates itself and says how to fix a bad value."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from hypergen.errors import HypergenError


@dataclass
class LoraSpec:
    """Which LoRA an expert or generator produces.

    rank: LoRA rank r. alpha: scale numerator (delta W = alpha / r * B A); None = 2 * rank.
    target_modules: linear-layer names inside each decoder block (Text-to-LoRA uses q_proj, v_proj).
    layers: which decoder layers; None = all of them.
    init_seed: seed for A's random init when training from scratch.
    """

    rank: int = 8
    alpha: float | None = None
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    layers: tuple[int, ...] | None = None
    init_seed: int = 0

    def __post_init__(self):
        if self.rank < 1:
            raise HypergenError(f"LoraSpec.rank must be >= 1; got {self.rank}.")
        if self.alpha is None:
            self.alpha = 2.0 * self.rank  # a scale of 2 at every rank, as the zoo was built
        if self.alpha <= 0:
            raise HypergenError(f"LoraSpec.alpha must be > 0; got {self.alpha}.")
        if not self.target_modules:
            raise HypergenError("LoraSpec.target_modules is empty; name at least one linear layer, e.g. ('q_proj', 'v_proj').")
        self.target_modules = tuple(self.target_modules)
        if self.layers is not None:
            self.layers = tuple(self.layers)

    def shapes(self, model: torch.nn.Module) -> dict[str, tuple[int, int]]:
        """module path -> (out, in) for every targeted Linear of `model`, in layer order."""
        out = {}
        for path, mod in model.named_modules():
            mod = getattr(mod, "base_layer", mod)
            parts = path.split(".")
            if not isinstance(mod, torch.nn.Linear) or parts[-1] not in self.target_modules or "layers" not in parts:
                continue
            if "lora_A" in parts or "lora_B" in parts or "base_layer" in parts:
                continue
            layer = int(parts[parts.index("layers") + 1])
            if self.layers is None or layer in self.layers:
                out[path] = (mod.out_features, mod.in_features)
        if not out:
            raise HypergenError(f"The base model has no Linear layers named {list(self.target_modules)} inside its decoder layers.")
        return out

    def to_dict(self) -> dict:
        return asdict(self)
