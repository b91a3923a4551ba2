"""T2L: the Text-to-LoRA reference design (Charakorn et al., ICML 2025), trained with the SFT loss only.

    e      = (description embedding - mu) / s            mu, s: mean and RMS spread of the training
                                                          descriptions' embeddings (fit_conditions)
    h_l,m  = trunk([e, layer embedding l, module embedding m])     one shared MLP for every module
    A, B   = head_m(h_l,m) / 128                          a linear head per module type -> that
                                                          layer's A (r, in) and B (out, r)
Unlike sg, icm and abmll it needs no expert: it learns only through the frozen base's answer NLL
(objectives = ("sft",), hypergen.generators.sft). The bank gives the layout and the neighbours that
generate() reports, nothing else.

What a feasibility run on SmolLM2 taught (the project's design notes, shared/DESIGN.md outside this
repository, "A feasibility run"):
- Plain output heads at lr 3e-4 diverged (loss 2.9 -> 8-10): each A/B entry hangs on ~256 trunk
  outputs, so Adam moves it much more per step than an ordinary LoRA's. Outputs scaled by
  head_scale = 1/128 and a short warm-up (TrainConfig.warmup) trained stably (3.75 -> 1.20).
- Centring and rescaling the embeddings by the training statistics helped.
- With few tasks a description can act as a task id: embedding dropout and Gaussian noise during
  training (dropout, noise) make nearby descriptions share an adapter.
Guidance (hypergen's, not the paper's; config.guidance, default 1): at generation only, the adapter is
carried away from the one the mean training description makes, f(mu) + g (f(e) - f(mu)), as classifier-free
guidance does for diffusion models: g > 1 weighs what the description adds over the average task more.
Training and validation never use it; it is set per generator folder (`--export --set guidance=G` writes
another setting of the same run). docs/experiments.md, "Guidance", says what it does on held-out tasks.
Initialisation: A starts as peft's random A (its head's bias), B near zero, so the first adapter is
almost the base and B learns from the first step, as an ordinary LoRA does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hypergen.errors import HypergenError
from hypergen.generators.bank import ExpertBank
from hypergen.generators.base import Generator, GeneratorConfig
from hypergen.generators.decoder import PerLayerDecoder
from hypergen.generators.registry import register_generator
from hypergen.generators.results import Sampled


@dataclass
class T2LConfig(GeneratorConfig):
    """hidden: trunk width. emb: size of the layer and module embeddings. head_scale: factor on the
    heads' outputs (1/128, see module doc). dropout / noise: embedding dropout rate and std of the
    Gaussian noise added to the normalised embedding while training (0 turns each off).
    guidance: how far generate() carries the adapter from the mean description's, f(mu) + g (f(e) - f(mu))
    (1 = as trained; serving only, not part of a run's identity: see the module doc)."""

    hidden: int = 256
    emb: int = 32
    head_scale: float = 1 / 128
    dropout: float = 0.1
    noise: float = 0.1
    guidance: float = 1.0

    SERVE_ONLY = ("guidance",)

    def __post_init__(self):
        super().__post_init__()
        if self.guidance < 0:
            raise HypergenError(f"T2L guidance must be >= 0 (1 = the adapter as trained); got {self.guidance}.")
        if self.hidden < 1 or self.emb < 1:
            raise HypergenError(f"T2L hidden and emb must be >= 1; got {self.hidden}, {self.emb}.")
        if not 0 < self.head_scale <= 1:
            raise HypergenError(f"T2L head_scale must be in (0, 1] (default 1/128); got {self.head_scale}.")
        if not 0 <= self.dropout < 1 or self.noise < 0:
            raise HypergenError(f"T2L dropout must be in [0, 1) and noise >= 0; got {self.dropout}, {self.noise}.")


class T2L(Generator):
    trainable = True
    objectives = ("sft",)

    def __init__(self, config: T2LConfig, bank: ExpertBank):
        super().__init__(config, bank)
        L, D = bank.layout, bank.dim
        self.register_buffer("cond_mean", torch.zeros(D))  # saved: the statistics are part of the model
        self.register_buffer("cond_scale", torch.ones(()))
        self.fit_conditions(torch.cat(bank.variants))  # until training fits its own descriptions
        self.decoder = PerLayerDecoder(D, L, hidden=config.hidden, emb=config.emb)
        a_size = {p.rsplit(".", 1)[-1]: (L.sizes[2 * i], L.a_shapes[i][1]) for i, p in enumerate(L.paths)}
        with torch.no_grad():
            for t, head in self.decoder.heads.items():
                n_a, n_in = a_size[t]
                head.reset_parameters()  # the decoder zeroes its heads; T2L starts from nn.Linear's init
                bound = 1 / math.sqrt(n_in)  # peft's kaiming-uniform A, undone by head_scale
                head.bias[:n_a].uniform_(-bound / config.head_scale, bound / config.head_scale)
                head.bias[n_a:].zero_()

    @torch.no_grad()
    def fit_conditions(self, emb: torch.Tensor) -> None:
        """Centre and scale on these (N, D) embeddings: the normalised ones have unit RMS per dim."""
        self.cond_mean.copy_(emb.mean(0))
        spread = (emb - self.cond_mean).pow(2).sum(1).mean().sqrt() / math.sqrt(emb.shape[1])
        self.cond_scale.copy_(spread.clamp_min(1e-6))

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        """cond (B, D) -> flat adapters (B, P)."""
        e = (cond - self.cond_mean) / self.cond_scale
        if self.training:  # a description must not become a task id
            e = F.dropout(e, self.config.dropout) + self.config.noise * torch.randn_like(e)
        return self.config.head_scale * self.decoder(e)

    def adapter_for_training(self, cond, batch):
        return self(cond), {}

    def guide(self, flat: torch.Tensor, g: float) -> torch.Tensor:
        """Flat adapters (B, P) carried g times as far from the mean training description's (e = 0)."""
        if g == 1:
            return flat
        mean = self(self.cond_mean[None])
        return mean + g * (flat - mean)

    def sample(self, cond, n, gen, extra=None):
        return Sampled(self.guide(self(cond[None]), self.config.guidance).expand(n, -1))


register_generator("t2l", T2LConfig, T2L)
