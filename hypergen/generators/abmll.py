"""ABMLL: amortized Bayesian meta-learning for LoRA (after "Bayesian Meta-Learning for LLM
fine-tuning", 2025), with the task posterior amortized from the description in one forward pass.

Model (all in normalised weight space: per-tensor z-scores fitted on the zoo, see Normalizer)
    global     p(phi | theta)  = N(mu_g, diag s2_g),         s2_g = exp(logvar_g) + var_floor
    task       q(phi | c)      = N(mu_g + dmu(c), diag s2_q), s2_q = exp(logvar_g + dlv(c) + log r0) + var_floor
    hyperprior mu_g ~ N(0, 1);  log s2_g ~ N(h, hyper_std^2), h = the zoo's mean log-variance per tensor
dmu and dlv come from one PerLayerDecoder(out_mult=2) call on the description embedding c, so a new
task's posterior costs one forward pass; the paper needs K inner gradient steps per task at test time.
mu_g and logvar_g start at the zoo's per-weight mean and variance; r0 = init_post_var makes the task
posterior start narrower than the global distribution (a described task is better known than "any task").

Loss (every term a mean over the P weights, so beta and gamma mean the same at any model size)
    loss = NLL + beta * KL(q(phi | c) || p(phi | theta)) + gamma * R(theta)
    R    = mean(mu_g^2) / 2 + mean(((logvar_g - h) / hyper_std)^2) / 2        (-log hyperprior)
    NLL  recon: -log q(x | c) per weight for the expert's checkpoint x (Gaussian, closed form;
                no base model, trains on CPU in minutes). Its gradient is reweighted per weight by
                var^nll_power (beta-NLL, Seitzer et al. 2022; no gradient through the weight): a plain
                Gaussian NLL scales the mean's gradient by 1/var, so once the posterior widens it
                stops learning its mean (80 tiny-zoo steps: MSE 0.27 -> 0.23 plain, -> 0.16 with 0.5).
                "loss" is the optimised value; "nll" is the unweighted NLL, logged beside it.
         sft:   answer-token cross-entropy through the base with phi = mean + std * eps sampled by
                reparameterisation (`adapter_for_training`, called by hypergen.generators.sft)
gamma defaults to 1/N (N experts): the hyperprior enters the joint once per zoo while the NLL and KL
are averaged over tasks.

Why beta is 0.5 and not ~1e-6: the paper sums the KL over millions of LoRA weights and divides the
token NLL by the token count, so the beta that balances them is tiny and the KL vanished under fp32
rounding (and fully in bf16). Here both are per-weight means, so beta is O(1). Measured on the tiny
test zoo (4 experts x 3 checkpoints, 2 layers, P = 3584), at init:
    recon: NLL 3.13 (reweighted: 0.44), KL 0.68 (r0 = 0.1 gives (r0 - 1 - log r0)/2 = 0.70), R 0.55
           -> loss 0.92 = 0.44 + beta*KL 0.34 + gamma*R 0.14 (gamma = 1/4)
    sft:   token NLL 5.4 (random tiny base), beta*KL 0.34, gamma*R 0.14
after 80 recon steps (batch 8, lr 3e-3): loss 0.40, NLL 0.06, KL 0.11, R 0.49; the posterior mean's
MSE to the checkpoints falls 0.27 -> 0.16 (the global mean alone: 0.27), posterior std 0.17 -> 0.40
(normalised units: it widens to match what the description leaves unexplained).

Sampling: samples=1 gives the posterior mean; n > 1 draws phi ~ q. Sampled.variance is the posterior
variance in weight space (Normalizer.scale()^2 * s2_q), reported as `posterior_rel_std`; averaging
option probabilities over samples gives a calibrated prediction (hypergen.eval.calibration).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from hypergen.errors import HypergenError
from hypergen.generators.bank import ExpertBank
from hypergen.generators.base import Generator, GeneratorConfig
from hypergen.generators.decoder import Normalizer, PerLayerDecoder
from hypergen.generators.registry import register_generator
from hypergen.generators.results import Sampled

LOG_2PI = math.log(2 * math.pi)


@dataclass
class ABMLLConfig(GeneratorConfig):
    """hidden: decoder width. beta: weight of KL(task posterior || global), per-weight means (see
    module doc). gamma: weight of the hyperprior on the global mean/variance; None = 1/N experts.
    init_post_var: task posterior variance / global variance at init (r0 > 0; 1 makes q = p, so the
    KL starts at 0 and gives no early signal).
    var_floor: added to every variance (normalised units: 1e-4 is 1% of a tensor's std).
    hyper_std: std (nats) of the log-normal hyperprior on the global variance. top_k and
    temperature only choose the neighbours reported (ABMLL mixes no experts). nll_power: the
    beta-NLL exponent of the recon objective (0 = plain Gaussian NLL)."""

    hidden: int = 128
    beta: float = 0.5
    gamma: float | None = None
    init_post_var: float = 0.1
    var_floor: float = 1e-4
    hyper_std: float = 2.0
    nll_power: float = 0.5

    def __post_init__(self):
        super().__post_init__()
        if self.hidden < 1:
            raise HypergenError(f"ABMLL hidden must be >= 1; got {self.hidden}.")
        if self.beta < 0 or (self.gamma is not None and self.gamma < 0):
            raise HypergenError(f"ABMLL beta and gamma must be >= 0; got beta={self.beta}, gamma={self.gamma}.")
        if self.init_post_var <= 0:
            raise HypergenError(f"ABMLL init_post_var must be > 0 (e.g. 0.1); got {self.init_post_var}.")
        if not 0 <= self.nll_power <= 1:
            raise HypergenError(f"ABMLL nll_power must be in [0, 1] (0 = plain NLL, 0.5 recommended); got {self.nll_power}.")
        if self.var_floor <= 0 or self.hyper_std <= 0:
            raise HypergenError(f"ABMLL var_floor and hyper_std must be > 0; got {self.var_floor}, {self.hyper_std}.")


class ABMLL(Generator):
    trainable = True
    stochastic = True
    objectives = ("recon", "sft")

    def __init__(self, config: ABMLLConfig, bank: ExpertBank):
        super().__init__(config, bank)
        L, D = bank.layout, bank.emb.shape[1]
        self.norm = Normalizer(L).fit(bank.flat)
        z = self.norm.encode(bank.flat)  # (N, P)
        var0 = z.var(0, unbiased=len(bank) > 1) if len(bank) > 1 else torch.ones_like(z[0])
        lv0 = var0.clamp_min(config.var_floor).log()
        self.mu_g = nn.Parameter(z.mean(0))  # (P,)
        self.logvar_g = nn.Parameter(lv0)  # (P,)
        # hyperprior centre: the zoo's mean log-variance of each A/B tensor (shrinks noisy per-weight
        # variances, estimated from few experts, toward their tensor's typical spread)
        self.register_buffer("hyper_centre", torch.stack([part.mean() for part in torch.split(lv0, L.sizes)]))  # (n tensors,)
        self.decoder = PerLayerDecoder(D, L, hidden=config.hidden, out_mult=2)
        self.gamma = 1.0 / len(bank) if config.gamma is None else config.gamma

    # ---- the model -----------------------------------------------------------------------------
    def global_var(self) -> torch.Tensor:
        return self.logvar_g.exp() + self.config.var_floor  # (P,)

    def posterior(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cond (B, D) -> task posterior mean (B, P) and variance (B, P), normalised space."""
        out = self.decoder(cond)  # (B, 2, P)
        mean = self.mu_g + out[:, 0]
        var = (self.logvar_g + out[:, 1] + math.log(self.config.init_post_var)).exp() + self.config.var_floor
        return mean, var

    def kl(self, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """Mean over weights (and batch) of KL(N(mean, var) || N(mu_g, s2_g))."""
        pv = self.global_var()
        return 0.5 * (pv.log() - var.log() + (var + (mean - self.mu_g) ** 2) / pv - 1).mean()

    def hyperprior(self) -> torch.Tensor:
        """-log p(theta) per weight, up to a constant."""
        return 0.5 * (self.mu_g**2).mean() + 0.5 * (((self.logvar_g - self.norm._expand(self.hyper_centre)) / self.config.hyper_std) ** 2).mean()

    # ---- training ------------------------------------------------------------------------------
    def training_loss(self, batch):
        x = self.norm.encode(batch["target"])  # (B, P)
        mean, var = self.posterior(batch["cond"])
        per_weight = 0.5 * ((x - mean) ** 2 / var + var.log() + LOG_2PI)  # (B, P)
        nll = per_weight.mean()
        # beta-NLL (Seitzer et al. 2022): a Gaussian NLL's mean gradient is scaled by 1/var, so a
        # widening posterior stops learning its mean; var^b (no gradient) undoes part of that scaling
        fit = (per_weight * var.detach() ** self.config.nll_power).mean() if self.config.nll_power else nll
        kl, prior = self.kl(mean, var), self.hyperprior()
        loss = fit + self.config.beta * kl + self.gamma * prior
        with torch.no_grad():
            mse = ((x - mean) ** 2).mean()
            global_mse = ((x - self.mu_g) ** 2).mean()  # yardstick: the global mean alone
        return {"loss": loss, "nll": nll, "kl": kl, "prior": prior, "mse": mse, "global_mse": global_mse, "post_std": var.sqrt().mean().detach()}

    def adapter_for_training(self, cond: torch.Tensor, batch: dict | None = None):
        """phi ~ q(phi | c) by reparameterisation, in weight space (B, P), and the weighted
        regularisers {beta_kl, gamma_prior} that hypergen.generators.sft adds to the task NLL. In eval mode
        (validation) phi is the posterior mean, what generate() makes."""
        mean, var = self.posterior(cond)
        phi = mean + torch.randn_like(mean) * var.sqrt() if self.training else mean
        return self.norm.decode(phi), {"beta_kl": self.config.beta * self.kl(mean, var), "gamma_prior": self.gamma * self.hyperprior()}

    # ---- inference -----------------------------------------------------------------------------
    def sample(self, cond, n, gen, extra=None):
        mean, var = self.posterior(cond[None])  # (1, P) each
        if n == 1:
            z = mean
        else:
            z = mean + torch.randn((n, mean.shape[1]), generator=gen, device=mean.device) * var.sqrt()
        return Sampled(self.norm.decode(z), None, var[0] * self.norm.scale() ** 2)


register_generator("abmll", ABMLLConfig, ABMLL)
