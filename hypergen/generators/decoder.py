"""Pieces the learned generators share: weight normalisation and the per-layer decoder.

Per-layer decoding keeps generators small: instead of one head over the whole adapter (ICM-LoRA's
flat 1-D CVAE is 283 MB), a shared trunk reads [condition, layer embedding, module embedding] and a
head per module type (q_proj, v_proj) emits that one layer's A and B (Text-to-LoRA's design).
"""

from __future__ import annotations

import torch
from torch import nn

from hypergen.generators.layout import Layout


class Normalizer(nn.Module):
    """Centre on the zoo's mean adapter (per weight), scale by one std per tensor (each A and B).

    Per-weight centring matters: every expert starts from the same random A, so most of each A is that
    shared init. A decoder whose heads are shared across layers cannot reproduce 30 layers of random
    matrices; after centring it only has to produce what distinguishes one task from the others.
    """

    def __init__(self, layout: Layout):
        super().__init__()
        self.sizes = layout.sizes
        self.register_buffer("mean", torch.zeros(layout.numel))  # (P,) the zoo's mean adapter
        self.register_buffer("std", torch.ones(len(self.sizes)))  # one per A / B tensor

    @torch.no_grad()
    def fit(self, flat: torch.Tensor) -> Normalizer:
        """flat: (N, P) example adapters."""
        self.mean.copy_(flat.mean(0))
        for j, part in enumerate(torch.split(flat - self.mean, self.sizes, dim=1)):
            self.std[j] = part.std().clamp_min(1e-8) if part.numel() > 1 else 1.0
        return self

    def _expand(self, v: torch.Tensor) -> torch.Tensor:
        """(n_tensors,) -> (P,): one value per tensor repeated over its weights."""
        return torch.repeat_interleave(v, torch.tensor(self.sizes, device=v.device))

    def encode(self, flat: torch.Tensor) -> torch.Tensor:
        return (flat - self.mean) / self._expand(self.std)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z * self._expand(self.std) + self.mean

    def scale(self) -> torch.Tensor:
        """(P,) per-weight std, to turn variances in normalised space back into weight space."""
        return self._expand(self.std)


class PerLayerDecoder(nn.Module):
    """(B, C) condition -> (B, P) flat adapter, one shared trunk call per (layer, module) row.

    The heads start at zero, so an untrained decoder outputs the normalised mean (all zeros): training
    starts from the average expert rather than from noise.
    """

    def __init__(self, cond_dim: int, layout: Layout, hidden: int = 256, emb: int = 32, out_mult: int = 1):
        super().__init__()
        self.types = layout.module_types
        layers = sorted({layout.layer_of(p) for p in layout.paths})
        self.layer_ids = {l: i for i, l in enumerate(layers)}
        self.layer_emb = nn.Embedding(len(layers), emb)
        self.module_emb = nn.Embedding(len(self.types), emb)
        self.trunk = nn.Sequential(
            nn.Linear(cond_dim + 2 * emb, hidden), nn.SiLU(), nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.SiLU(), nn.LayerNorm(hidden)
        )
        sizes = {}
        self.rows: dict[str, list[int]] = {t: [] for t in self.types}  # module type -> layer rows, in layout order
        self.order: list[tuple[str, int]] = []  # flat layout position -> (type, position in that type's rows)
        for i, p in enumerate(layout.paths):
            t = p.rsplit(".", 1)[-1]
            sizes[t] = layout.sizes[2 * i] + layout.sizes[2 * i + 1]
            self.order.append((t, len(self.rows[t])))
            self.rows[t].append(self.layer_ids[layout.layer_of(p)])
        # out_mult=2 lets a family emit a mean and a log-variance per weight from the same trunk
        self.out_mult = out_mult
        self.heads = nn.ModuleDict({t: nn.Linear(hidden, out_mult * sizes[t]) for t in self.types})
        for h in self.heads.values():
            nn.init.zeros_(h.weight)
            nn.init.zeros_(h.bias)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        B = cond.shape[0]
        per_type = {}
        for ti, t in enumerate(self.types):
            rows = torch.tensor(self.rows[t], device=cond.device)
            L = len(rows)
            x = torch.cat(
                [cond[:, None].expand(B, L, -1), self.layer_emb(rows)[None].expand(B, L, -1), self.module_emb.weight[ti][None, None].expand(B, L, -1)], -1
            )  # (B, L, C + 2E)
            per_type[t] = self.heads[t](self.trunk(x))  # (B, L, out_mult * size_t)
        if self.out_mult == 1:
            return torch.cat([per_type[t][:, j] for t, j in self.order], -1)  # (B, P)
        # (B, out_mult, P): each head's output is out_mult chunks of the module's flat size
        return torch.stack([torch.cat([per_type[t][:, j].chunk(self.out_mult, -1)[m] for t, j in self.order], -1) for m in range(self.out_mult)], 1)


class AdapterEncoder(nn.Module):
    """(B, P) flat adapter -> (B, H) summary: a linear map per module type, averaged over layers.

    The VAE families need q(z | adapter); reading each layer with a shared per-type projection keeps
    the encoder as small as the decoder instead of a (P x H) matrix.
    """

    def __init__(self, layout: Layout, hidden: int = 256):
        super().__init__()
        self.layout = layout
        self.types = layout.module_types
        self.proj = nn.ModuleDict()
        self.index: dict[str, list[int]] = {t: [] for t in self.types}
        for i, p in enumerate(layout.paths):
            t = p.rsplit(".", 1)[-1]
            self.index[t].append(i)
            self.proj[t] = nn.Linear(layout.sizes[2 * i] + layout.sizes[2 * i + 1], hidden)
        self.out = nn.Sequential(nn.SiLU(), nn.LayerNorm(hidden))

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        chunks = torch.split(flat, self.layout.sizes, dim=1)
        acc = 0
        for t in self.types:
            x = torch.stack([torch.cat([chunks[2 * i], chunks[2 * i + 1]], 1) for i in self.index[t]], 1)  # (B, L_t, size_t)
            acc = acc + self.proj[t](x).mean(1)
        return self.out(acc / len(self.types))


def mlp(i: int, h: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.SiLU(), nn.Linear(h, o))
