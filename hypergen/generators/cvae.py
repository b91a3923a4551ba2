"""The conditional VAE core that SG-LoRA and ICM-LoRA share (normalised weight space, see Normalizer).

    posterior  q(z | x, c) = N(qm, diag exp(qlv)),  (qm, qlv) = q_z([AdapterEncoder(x - offset), c])
    decoder    x_hat = offset + PerLayerDecoder([z, c])
    loss       MSE(x_hat, x) + beta * KL(q(z | x, c) || p(z | c))
The families differ only in what they pass: ICM-LoRA has offset 0 and the fixed prior N(0, I); SG-LoRA
has offset = its semantic prior mean and a learned prior p(z | c).

The sft objective (`sft_adapter`) keeps the same model and replaces the MSE by the task NLL through the
base: a row whose task has an expert x draws z from q(z | x, c) and pays beta * KL(q || p(z | c)) as in
recon (the ELBO with x as extra evidence); a row with no expert draws z from p(z | c) itself, which is
what generation does. Both draws are reparameterised; validation (eval mode) uses the mean. The MSE is a mean over the P weights,
the KL a sum over latent dims (nats per example), both averaged over the batch.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from hypergen.generators.base import Generator
from hypergen.generators.decoder import AdapterEncoder, PerLayerDecoder, mlp


def gaussian_kl(qm, qlv, pm=None, plv=None) -> torch.Tensor:
    """KL(N(qm, exp qlv) || N(pm, exp plv)) summed over latent dims, mean over the batch; no prior = N(0, I)."""
    if pm is None:
        return 0.5 * (qm**2 + qlv.exp() - 1 - qlv).sum(1).mean()
    return 0.5 * (plv - qlv + (qlv.exp() + (qm - pm) ** 2) / plv.exp() - 1).sum(1).mean()


class CVAEGenerator(Generator):
    """A family whose adapter is decoded from a latent z: holds q(z | x, c) and the decoder."""

    trainable = True
    stochastic = True
    objectives = ("recon", "sft")
    training_only: ClassVar[tuple[str, ...]] = ("x_enc.", "q_z.")  # the posterior q(z | x, c): training only

    def init_cvae(self, cond_dim: int, latent: int, hidden: int) -> None:
        """Build the posterior and the decoder (after the family's own modules, so initialisation is stable)."""
        L = self.layout
        self.x_enc = AdapterEncoder(L, hidden)
        self.q_z = mlp(hidden + cond_dim, hidden, 2 * latent)  # posterior q(z | x, c)
        self.decoder = PerLayerDecoder(latent + cond_dim, L, hidden=hidden)

    def decode(self, z: torch.Tensor, c: torch.Tensor, offset=0.0) -> torch.Tensor:
        """z (B, Z), c (B, C) -> x_hat (B, P), normalised."""
        return offset + self.decoder(torch.cat([z, c], 1))

    def cvae_loss(self, x: torch.Tensor, c: torch.Tensor, *, offset=0.0, prior: tuple | None = None) -> dict[str, torch.Tensor]:
        """x (B, P) normalised targets, c (B, C) conditions; offset (B, P) what the decoder corrects;
        prior (pm, plv) (B, Z) of a learned p(z | c), None = N(0, I)."""
        qm, qlv = self.q_z(torch.cat([self.x_enc(x - offset), c], 1)).chunk(2, -1)  # (B, Z) each
        z = qm + torch.randn_like(qm) * (0.5 * qlv).exp()
        recon = ((self.decode(z, c, offset) - x) ** 2).mean()
        kl = gaussian_kl(qm, qlv, *(prior or ()))
        return {"loss": recon + self.config.beta * kl, "recon": recon, "kl": kl}

    def sft_adapter(self, c: torch.Tensor, index: torch.Tensor, *, offset=0.0, prior: tuple | None = None):
        """c (B, C) conditions, index (B,) the row's bank expert or -1 -> flat adapters (B, P) in weight
        space and {"beta_kl": beta * KL}, the KL averaged over all rows (rows with no expert add 0)."""
        pm, plv = prior if prior is not None else (torch.zeros(c.shape[0], self.config.latent, device=c.device),) * 2
        if not self.training:  # validation scores what generate() makes: the prior's mean, never the row's own expert
            return self.norm.decode(self.decode(pm, c, offset)), {"beta_kl": c.new_zeros(())}
        has = index >= 0  # (B,)
        m, lv, kl = pm, plv, c.new_zeros(())
        if has.any():
            x = self.norm.encode(self.bank.flat[index.clamp_min(0)])  # (B, P), the expert's final adapter
            qm, qlv = self.q_z(torch.cat([self.x_enc(x - offset), c], 1)).chunk(2, -1)  # (B, Z) each
            m, lv = torch.where(has[:, None], qm, pm), torch.where(has[:, None], qlv, plv)
            kl = gaussian_kl(qm[has], qlv[has], *((pm[has], plv[has]) if prior is not None else ())) * has.float().mean()
        z = m + torch.randn_like(m) * (0.5 * lv).exp()
        return self.norm.decode(self.decode(z, c, offset)), {"beta_kl": self.config.beta * kl}

    @staticmethod
    def latents(mean: torch.Tensor, logvar: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
        """n draws of z from the prior N(mean, exp logvar) (1, Z); n = 1 is its mean, so one sample is deterministic."""
        if n == 1:
            return mean
        return mean + torch.randn((n, mean.shape[1]), generator=gen, device=mean.device) * (0.5 * logvar).exp()
