"""Layout: LoraWeights <-> one flat vector, so that every family speaks the same vector language."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from hypergen.errors import HypergenError
from hypergen.lora import LoraWeights


@dataclass(frozen=True)
class Layout:
    """Module paths with their (r, in) and (out, r) shapes, in layer order; flat = [A0, B0, A1, B1, ...]."""

    paths: tuple[str, ...]
    a_shapes: tuple[tuple[int, int], ...]
    b_shapes: tuple[tuple[int, int], ...]
    alpha: float

    @classmethod
    def of(cls, w: LoraWeights) -> Layout:
        return cls(tuple(w.modules), tuple(tuple(a.shape) for a, _ in w.modules.values()), tuple(tuple(b.shape) for _, b in w.modules.values()), w.alpha)

    @property
    def rank(self) -> int:
        return self.a_shapes[0][0]

    @property
    def sizes(self) -> list[int]:
        """Flat sizes of [A0, B0, A1, B1, ...]."""
        return [n for a, b in zip(self.a_shapes, self.b_shapes) for n in (a[0] * a[1], b[0] * b[1])]

    @property
    def numel(self) -> int:
        return sum(self.sizes)

    @property
    def module_types(self) -> list[str]:
        return sorted({p.rsplit(".", 1)[-1] for p in self.paths})

    def layer_of(self, path: str) -> int:
        parts = path.split(".")
        return int(parts[parts.index("layers") + 1])

    def flatten(self, w: LoraWeights) -> torch.Tensor:
        if tuple(w.modules) != self.paths:
            raise HypergenError("Adapter modules differ from the generator's layout: it was made for another base or LoRA spec.")
        # fold a different alpha into B so every flat vector means the same dW
        k = w.scaling / (self.alpha / self.rank)
        return torch.cat([t.reshape(-1).float() for a, b in w.modules.values() for t in (a, b * k)])

    def unflatten(self, flat: torch.Tensor, base_model: str = "") -> LoraWeights:
        """(P,) -> LoraWeights; views into `flat`, no copy."""
        parts = torch.split(flat, self.sizes)
        mods = {p: (parts[2 * i].view(self.a_shapes[i]), parts[2 * i + 1].view(self.b_shapes[i])) for i, p in enumerate(self.paths)}
        return LoraWeights(mods, self.alpha, base_model)

    def energies(self, flat: torch.Tensor) -> tuple[float, float]:
        """(mean_i ||dW_i||^2, ||mean_i dW_i||^2) of N adapters (N, P), summed over modules, dW = B A: the first
        from r x r products (||B A||^2 = sum (B^T B) * (A A^T)), the second from one matmul per module; no dW_i
        is formed."""
        parts, each, mean = torch.split(flat.detach().float(), self.sizes, dim=1), 0.0, 0.0
        for i in range(len(self.paths)):
            a = parts[2 * i].reshape(-1, *self.a_shapes[i])  # (N, r, in)
            b = parts[2 * i + 1].reshape(-1, *self.b_shapes[i])  # (N, out, r)
            each += (b.mT @ b * (a @ a.mT)).sum().item() / len(flat)
            mean += (b.transpose(0, 1).reshape(b.shape[1], -1) @ a.reshape(-1, a.shape[2]) / len(flat)).square().sum().item()
        return each, mean

    def spread(self, flat: torch.Tensor) -> float:
        """How much N adapters (N, P) differ, in 0..1: sqrt(mean ||dW_i - mean dW||^2 / mean ||dW_i||^2) over all
        modules. 0: one adapter for every row; ~1: nothing in common (experts of unrelated tasks)."""
        if len(flat) < 2:
            raise HypergenError(f"The spread of adapters needs at least 2 of them; got {len(flat)}.")
        each, mean = self.energies(flat)  # mean ||dW_i - mean dW||^2 = each - mean
        return max(0.0, 1 - mean / each) ** 0.5 if each > 0 else 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Layout:
        return cls(tuple(d["paths"]), tuple(map(tuple, d["a_shapes"])), tuple(map(tuple, d["b_shapes"])), d["alpha"])
