"""SG-LoRA: semantic-guided LoRA generation (a semantic prior from the closest experts + a CVAE).

1. Semantic prior. Cosine similarity of the description to every expert; the top-K (default 4) get
   softmax(sim / T) weights w_k. Over each expert's trajectory checkpoints we have a mean m_k and a
   variance v_k (normalised weight space). The prior is
       mean  mu_p  = sum_k w_k m_k
       var   s2_p  = sum_k w_k v_k  +  sum_k w_k (m_k - mu_p)^2      (law of total variance:
                     within-expert spread + between-expert disagreement)
2. Generative model. A CVAE whose condition c = [description embedding, encoding of mu_p, log s2_p]
   has a learned prior p(z | c); the per-layer decoder emits a correction to mu_p:
       x_hat = mu_p + D(z, c)
   trained with MSE(x_hat, x) + beta * KL(q(z | x, c) || p(z | c)). During training an expert never
   sees itself among its own top-K (leave-one-out), so the model learns to go beyond its neighbours.
At inference z ~ p(z | c); samples=1 uses the prior mean of z (deterministic).
With the sft objective the same model trains on the task NLL through the base (CVAEGenerator.sft_adapter):
the prior still comes from the top-K experts (a zoo task's own expert left out), the decoder corrects it. The result lists the
experts used and their weights; the prior variance is reported as the method's own uncertainty.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hypergen.errors import HypergenError
from hypergen.generators.bank import ExpertBank
from hypergen.generators.base import GeneratorConfig
from hypergen.generators.cvae import CVAEGenerator
from hypergen.generators.decoder import AdapterEncoder, Normalizer, mlp
from hypergen.generators.registry import register_generator
from hypergen.generators.results import Sampled


@dataclass
class SGConfig(GeneratorConfig):
    """latent: size of z. hidden: decoder/encoder width. beta: KL weight (bf16/fp32-safe, not ~1e-8).
    var_floor: added to the prior variance before taking logs (normalised units)."""

    latent: int = 32
    hidden: int = 128
    beta: float = 1e-2
    var_floor: float = 1e-4

    def __post_init__(self):
        super().__post_init__()
        for k in ("latent", "hidden"):
            if getattr(self, k) < 1:
                raise HypergenError(f"SGConfig.{k} must be >= 1; got {getattr(self, k)}.")
        if self.beta < 0 or self.var_floor <= 0:
            raise HypergenError(f"SGConfig.beta must be >= 0 and var_floor > 0; got {self.beta}, {self.var_floor}.")


class SGLoRA(CVAEGenerator):
    """The CVAE core (cvae.py) with offset = the semantic prior mean and a learned prior p(z | c)."""

    def __init__(self, config: SGConfig, bank: ExpertBank):
        super().__init__(config, bank)
        L, H, Z, D = bank.layout, config.hidden, config.latent, bank.emb.shape[1]
        self.norm = Normalizer(L).fit(bank.flat)
        # per-expert trajectory mean and variance, normalised: what the semantic prior mixes
        means = torch.stack([self.norm.encode(t).mean(0) for t in bank.traj])
        vars_ = torch.stack([self.norm.encode(t).var(0, unbiased=False) for t in bank.traj])
        self.register_buffer("m", means, persistent=False)  # (N, P)
        self.register_buffer("v", vars_, persistent=False)  # (N, P)
        self.prior_enc = AdapterEncoder(L, H)
        C = D + H + 1
        self.cond_dim = C
        self.p_z = mlp(C, H, 2 * Z)  # learned prior p(z | c)
        self.init_cvae(C, Z, H)

    def semantic_prior(self, cond: torch.Tensor, exclude: torch.Tensor | None = None):
        """cond (B, D) -> mu_p (B, P), s2_p (B, P), top-k idx (B, K), weights (B, K)."""
        if exclude is not None and bool((exclude < 0).any()):  # sft rows of tasks with no expert exclude nothing
            sims = self.bank.similarities(cond).masked_fill(F.one_hot(exclude.clamp_min(0), len(self.bank)).bool() & (exclude >= 0)[:, None], float("-inf"))
            s, idx = sims.topk(min(self.config.top_k, len(self.bank) - 1), dim=1)
            w = torch.softmax(s / self.config.temperature, dim=1)
        else:
            _, idx, w = self.bank.top_k(cond, self.config.top_k, self.config.temperature, exclude)
        m, v = self.m[idx], self.v[idx]  # (B, K, P)
        mu = (w[..., None] * m).sum(1)
        s2 = (w[..., None] * v).sum(1) + (w[..., None] * (m - mu[:, None]) ** 2).sum(1)
        return mu, s2, idx, w

    def condition(self, cond, mu, s2):
        log_var = torch.log(s2 + self.config.var_floor).mean(1, keepdim=True)  # overall prior uncertainty
        return torch.cat([cond, self.prior_enc(mu), log_var], 1)

    def training_loss(self, batch):
        x = self.norm.encode(batch["target"])
        mu, s2, _, _ = self.semantic_prior(batch["cond"], exclude=batch["index"])
        c = self.condition(batch["cond"], mu, s2)
        out = self.cvae_loss(x, c, offset=mu, prior=self.p_z(c).chunk(2, -1))
        out["prior_mse"] = ((mu - x) ** 2).mean()  # what the neighbours' mix alone would score: a yardstick
        return out

    def adapter_for_training(self, cond, batch):
        mu, s2, _, _ = self.semantic_prior(cond, exclude=batch["index"])
        c = self.condition(cond, mu, s2)
        return self.sft_adapter(c, batch["index"], offset=mu, prior=self.p_z(c).chunk(2, -1))

    def sample(self, cond, n, gen, extra=None):
        mu, s2, idx, w = self.semantic_prior(cond[None])
        c = self.condition(cond[None], mu, s2)
        z = self.latents(*self.p_z(c).chunk(2, -1), n, gen)
        x = self.decode(z, c.expand(n, -1), mu)
        var = s2[0] * self.norm.scale() ** 2
        return Sampled(self.norm.decode(x), dict(zip(idx[0].tolist(), w[0].tolist())), var)

register_generator("sg", SGConfig, SGLoRA)
