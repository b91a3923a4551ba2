"""ExpertBank: the zoo as tensors (embeddings, flattened adapters, trajectories) that generators build on."""

from __future__ import annotations

import torch
from torch import nn

from hypergen.errors import HypergenError
from hypergen.generators.layout import Layout


class ExpertBank(nn.Module):
    """Experts as tensors: description embeddings, final adapters and trajectories, flattened.

    names: N expert names. emb: (N, D) embedding of each expert's default description.
    variants: list of (k_i, D) embeddings of every description variant (training augmentation).
    flat: (N, P) final adapters. traj: list of (t_i, P) trajectory checkpoints (final included).
    meta: base_model, encoder (name) and zoo (path); the api adds the zoo's multitask LoRA.
    """

    def __init__(self, names, emb, variants, flat, traj, layout: Layout, meta: dict):
        super().__init__()
        self.names = list(names)
        self.layout = layout
        self.meta = dict(meta)
        self.register_buffer("emb", emb.float(), persistent=False)
        self.register_buffer("flat", flat.float(), persistent=False)
        self.variants = [v.float() for v in variants]
        self.traj = [t.float() for t in traj]

    @classmethod
    def from_zoo(cls, zoo, encoder, *, trajectories: bool = True, names: list[str] | None = None) -> ExpertBank:
        records = [r for r in zoo.records() if names is None or r.name in names]
        if not records:
            raise HypergenError(f"The zoo at {zoo.root} has no experts; build it with `hypergen zoo build`.")
        first = zoo.weights(records[0].name)
        layout = Layout.of(first)
        flat, traj, variants = [], [], []
        for r in records:
            flat.append(layout.flatten(zoo.weights(r.name)))
            traj.append(torch.stack([layout.flatten(w) for _, w in zoo.trajectory(r.name)]) if trajectories else flat[-1][None])
            variants.append(encoder.encode(r.descriptions))
        emb = torch.stack([v[0] for v in variants])
        meta = {"base_model": first.base_model or zoo.meta.get("base_model", ""), "encoder": encoder.name, "zoo": str(zoo.root)}
        return cls([r.name for r in records], emb, variants, torch.stack(flat), traj, layout, meta)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def dim(self) -> int:
        """D, the size of the description embeddings (the encoder's)."""
        return self.emb.shape[1]

    def similarities(self, cond: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of (B, D) unit embeddings to every expert: (B, N)."""
        return cond @ self.emb.T

    def top_k(self, cond: torch.Tensor, k: int, temperature: float, exclude: torch.Tensor | None = None):
        """(sims (B, k), idx (B, k), softmax weights (B, k)); `exclude` (B,) masks one expert per row."""
        sims = self.similarities(cond)
        if exclude is not None:
            sims = sims.scatter(1, exclude[:, None], float("-inf"))
        k = min(k, len(self) - (exclude is not None))
        s, idx = sims.topk(k, dim=1)
        return s, idx, torch.softmax(s / temperature, dim=1)
