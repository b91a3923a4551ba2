"""Baselines every learned generator must beat, behind the same protocol.

nearest:   the single most similar expert.
mix:       softmax(similarity / T) weighted mix of the top-K experts (the exact sum of their weight
           updates, so the rank grows to K * r).
lego:      LoRA-LEGO: the top-K experts' rank-1 components ("minimal semantic units") clustered into
           r groups and averaged, giving one rank-r adapter.
multitask: one LoRA trained on all zoo tasks together; ignores the description.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hypergen.errors import HypergenError
from hypergen.generators.bank import ExpertBank
from hypergen.generators.base import Generator, GeneratorConfig
from hypergen.generators.registry import register_generator
from hypergen.generators.results import Sampled
from hypergen.lora import LoraWeights, mix


class Nearest(Generator):
    def sample(self, cond, n, gen, extra=None):
        i = int(self.bank.similarities(cond[None])[0].argmax())
        return Sampled(self.bank.flat[i][None].expand(n, -1), {i: 1.0})


class Mix(Generator):
    def sample(self, cond, n, gen, extra=None):
        _, idx, w = self.bank.top_k(cond[None], self.config.top_k, self.config.temperature)
        idx, w = idx[0].tolist(), w[0].tolist()
        base = self.bank.meta.get("base_model", "")
        exact = mix([self.layout.unflatten(self.bank.flat[i], base) for i in idx], w, how="concat")  # rank K*r
        # the flat vector (LoraHub average at rank r) only fills the protocol; the adapter is the exact mix
        flat = (torch.tensor(w)[:, None] * self.bank.flat[idx]).sum(0)
        return Sampled(flat[None].expand(n, -1), dict(zip(idx, w)), adapter=exact)


@dataclass
class LegoConfig(GeneratorConfig):
    """iters: k-means iterations when clustering rank-1 units."""

    iters: int = 20

    def __post_init__(self):
        super().__post_init__()
        if self.iters < 0:
            raise HypergenError(f"LegoConfig.iters must be >= 0; got {self.iters}.")


class Lego(Generator):
    def sample(self, cond, n, gen, extra=None):
        _, idx, w = self.bank.top_k(cond[None], self.config.top_k, self.config.temperature)
        idx, w = idx[0].tolist(), w[0]
        L = self.layout
        r = L.rank
        out = []
        experts = [torch.split(self.bank.flat[i], L.sizes) for i in idx]
        g = torch.Generator().manual_seed(self.config.seed)
        for m in range(len(L.paths)):
            # rank-1 units of every expert: u_j = [a_j (in), b_j (out)], weighted by the expert's mix weight
            A = torch.cat([e[2 * m].view(L.a_shapes[m]) for e in experts], 0)  # (K r, in)
            B = torch.cat([e[2 * m + 1].view(L.b_shapes[m]) for e in experts], 1)  # (out, K r)
            wu = w.repeat_interleave(r)  # (K r,)
            units = torch.cat([A, B.T], 1)  # (K r, in + out)
            labels = _kmeans(units / units.norm(dim=1, keepdim=True).clamp_min(1e-12), r, self.config.iters, g)
            A_new, B_new = torch.zeros_like(A[:r]), torch.zeros_like(B[:, :r])
            for c in range(r):
                sel = labels == c
                if sel.any():
                    # sum_u w_u b_u a_u ~= (sum_u w_u b_u) a_c when the cluster's units share a direction:
                    # A gets the weighted mean, B the weighted sum (exact if all a_u in the cluster agree)
                    A_new[c] = (wu[sel][:, None] * A[sel]).sum(0) / wu[sel].sum()
                    B_new[:, c] = (wu[sel][None] * B[:, sel]).sum(1)
            out += [A_new.reshape(-1), B_new.reshape(-1)]
        flat = torch.cat(out)
        return Sampled(flat[None].expand(n, -1), dict(zip(idx, w.tolist())))


def _kmeans(x: torch.Tensor, k: int, iters: int, g: torch.Generator) -> torch.Tensor:
    """Cosine k-means on unit rows; returns (N,) labels. Deterministic for a given generator state."""
    centers = x[torch.randperm(len(x), generator=g)[:k]].clone()
    labels = torch.zeros(len(x), dtype=torch.long)
    for _ in range(iters):
        labels = (x @ centers.T).argmax(1)
        for c in range(k):
            sel = labels == c
            if sel.any():
                centers[c] = torch.nn.functional.normalize(x[sel].mean(0), dim=0)
    return labels


class Multitask(Generator):
    uses_description = False  # one adapter for every task: the yardstick the others must beat

    def __init__(self, config, bank: ExpertBank):
        super().__init__(config, bank)
        mt = bank.meta.get("multitask")
        if mt is None:
            raise HypergenError("The zoo has no multi-task LoRA; train it with `hypergen zoo multitask`.")
        self.register_buffer("mt", self.layout.flatten(mt if isinstance(mt, LoraWeights) else LoraWeights.load(mt)), persistent=False)

    def sample(self, cond, n, gen, extra=None):
        return Sampled(self.mt[None].expand(n, -1))


# registration order is the order the eval lists methods in: the description-blind yardstick first
register_generator("multitask", GeneratorConfig, Multitask)
register_generator("nearest", GeneratorConfig, Nearest)
register_generator("mix", GeneratorConfig, Mix)
register_generator("lego", LegoConfig, Lego)
