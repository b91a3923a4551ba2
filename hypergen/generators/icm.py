"""ICM-LoRA: in-context meta LoRA generation (Shao et al. 2025), a conditional VAE over LoRA weights.

Method (all in normalised weight space: centred on the mean of the experts' trajectory checkpoints,
one std per A and B tensor; see Normalizer)
    condition  c = [e(description)]                      the paper (task description -> condition)
               c = [e(description), tv / |tv|]           with task_vector_dim > 0 (the paper's code:
                   tv = the base model's last hidden state at the last token, averaged over a few
                   examples of the task)
    encoder    q(z | x, c) = N(mu, diag exp(logvar)),  (mu, logvar) = mlp([AdapterEncoder(x), c])
               (as the paper's code: x is summarised first, c joins just before the (mu, logvar) heads)
    decoder    x_hat = PerLayerDecoder([z, c])
    loss       MSE(x_hat, x) + beta * KL(q(z | x, c) || N(0, I))        (objective recon)
               task NLL through the base + the same KL where the task has an expert (objective sft,
               CVAEGenerator.sft_adapter)
    data       every stored checkpoint of every expert's trajectory x every description variant
               (`Generator.training_examples`); the paper trains on the checkpoints of the last epochs,
               which is what the zoo keeps (keep_last).
At inference z ~ N(0, I); samples=1 uses z = 0, the prior's mean, so the default adapter is
deterministic (the paper draws one z at random). samples > 1 draws z ~ N(0, I) with the given seed;
the spread over samples is reported as `sample_rel_std`. The method has no variance of its own to
report (unlike SG-LoRA's prior or ABMLL's posterior).

Where we differ from the paper
- Per-layer decoding. The paper's CVAE is flat and 1-D: strided Conv1d over the whole flattened
  adapter and a linear map from the latent to the full length (283 MB at its scale). Here a shared
  trunk reads [z, c, layer embedding, module embedding] and a head per module type emits one layer's
  A and B (decoder.PerLayerDecoder); the encoder reads each layer with one linear map per module type
  and averages (decoder.AdapterEncoder). At SmolLM2-135M scale (30 layers, q_proj 576->576,
  v_proj 576->192, rank 8) that is 8.71 M saved values (0.46 M of them the Normalizer's mean adapter),
  17.4 MB in fp16 (tests/test_icm.py checks the bound of 20 MB).
- The condition. The paper conditions on a task vector only; the description embedding is our main
  condition because a user describes a task in words. The task vector is optional
  (ICMConfig.task_vector_dim, 0 = off); we L2-normalise it so it weighs like the unit-length description
  embedding (a raw last hidden state has a norm in the tens to hundreds). The zoo does not store task
  vectors yet: give one per expert with `set_task_vectors` before training and pass `task_vector=` to
  `generate`. With it off (the default) the model and its checkpoints are the plain description CVAE.
- Latent size 32 (the paper: 256), the same as SG-LoRA's, so the two CVAE families compare at equal
  capacity; a latent unit the data does not need is switched off by the KL term anyway.

Why beta is 5e-3 (the paper's code's kld_weight, with the same reductions: the MSE is a mean over
the P weights, the KL a sum over the latent dims, both averaged over the batch). In normalised units
the MSE starts at ~1 (the untrained decoder outputs the zoo's mean), so one nat of information in z
costs as much as 0.5% of that error: z is used only where it buys more than that. That keeps the KL
visible in fp32 (and bf16) and the loss balanced. A unit-variance Gaussian likelihood would instead
ask for beta = 2 / P with this per-weight mean MSE (~4e-6 at P = 461k): the KL would weigh ~1e-5,
q(z | x, c) would never be pulled to N(0, I), and samples drawn from N(0, I) at inference would fall
where the decoder was never trained. Measured on the tiny test zoo (4 experts x 3 checkpoints x 2
description variants, 2 layers, P = 3584; 60 steps, batch 8, lr 3e-3), on all training examples
with one fixed noise seed: loss 1.00 -> 0.10, recon 1.00 -> 0.07, KL 0.29 -> 6.5 nats, so
beta * KL = 0.03: 3% of the starting MSE, and a large share of what is left once the 12 adapters
are fitted (the tiny zoo is easy to memorise).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hypergen.errors import HypergenError
from hypergen.generators.bank import ExpertBank
from hypergen.generators.base import GeneratorConfig
from hypergen.generators.cvae import CVAEGenerator
from hypergen.generators.decoder import Normalizer
from hypergen.generators.registry import register_generator
from hypergen.generators.results import Sampled


@dataclass
class ICMConfig(GeneratorConfig):
    """latent: size of z (the paper: 256). hidden: decoder/encoder width.
    beta: KL weight; the MSE is a per-weight mean, the KL a sum over latent dims (see module doc).
    task_vector_dim: size of the optional few-shot task vector joined to the condition; 0 = off
    (description only). For SmolLM2-135M the last hidden state has 576 dims."""

    latent: int = 32
    hidden: int = 128  # 256 doubles the checkpoint (17 MB); zoo + generators share a ~60 MB budget
    beta: float = 5e-3
    task_vector_dim: int = 0

    def __post_init__(self):
        super().__post_init__()
        for k in ("latent", "hidden"):
            if getattr(self, k) < 1:
                raise HypergenError(f"ICMConfig.{k} must be >= 1; got {getattr(self, k)}.")
        if self.beta < 0:
            raise HypergenError(f"ICMConfig.beta must be >= 0 (the KL weight; default 5e-3); got {self.beta}.")
        if self.task_vector_dim < 0:
            raise HypergenError(f"ICMConfig.task_vector_dim must be >= 0 (0 turns the task vector off); got {self.task_vector_dim}.")


class ICMLoRA(CVAEGenerator):
    """The CVAE core (cvae.py) with no offset and the prior N(0, I)."""

    conditioning = ("task_vector",)  # generate(emb, task_vector=tv): the optional few-shot condition

    def __init__(self, config: ICMConfig, bank: ExpertBank):
        super().__init__(config, bank)
        L, H, Z = bank.layout, config.hidden, config.latent
        self.norm = Normalizer(L).fit(torch.cat(bank.traj))  # every stored checkpoint, as trained on
        self.cond_dim = bank.emb.shape[1] + config.task_vector_dim
        self.init_cvae(self.cond_dim, Z, H)
        # (N, T) one task vector per expert, set by set_task_vectors: data like the bank, never saved
        self.register_buffer("task_vectors", None, persistent=False)

    # ---- the optional task vector ------------------------------------------------------------
    def set_task_vectors(self, tv: torch.Tensor) -> None:
        """tv: (N, T), one task vector per bank expert (in bank order), used as training conditions."""
        T = self.config.task_vector_dim
        if T == 0:
            raise HypergenError("This ICM generator has no task-vector input (task_vector_dim=0); build it with task_vector_dim=T to use one.")
        if tv.shape != (len(self.bank), T):
            raise HypergenError(f"Task vectors must be (experts, task_vector_dim) = ({len(self.bank)}, {T}); got {tuple(tv.shape)}.")
        self.task_vectors = tv.float().to(self.bank.emb.device)

    def condition(self, emb: torch.Tensor, tv: torch.Tensor | None) -> torch.Tensor:
        """emb (B, D) unit description embeddings, tv (B, T) or None -> c (B, D + T)."""
        T = self.config.task_vector_dim
        if T == 0:
            if tv is not None:
                raise HypergenError("This ICM generator was trained without task vectors (task_vector_dim=0); leave task_vector out.")
            return emb
        if tv is None:
            raise HypergenError(f"This ICM generator was trained with task vectors (task_vector_dim={T}): pass task_vector=, a ({T},) vector from a few examples of the task.")
        if tv.shape[-1] != T:
            raise HypergenError(f"The task vector has {tv.shape[-1]} dims, but this ICM generator was trained with task_vector_dim={T}.")
        return torch.cat([emb, F.normalize(tv.float(), dim=-1)], -1)

    def _batch_task_vector(self, batch: dict) -> torch.Tensor | None:
        if self.config.task_vector_dim == 0:
            return None
        if "task_vector" in batch:
            return batch["task_vector"]
        if self.task_vectors is None:
            raise HypergenError("ICM with task_vector_dim > 0 needs one task vector per expert: call set_task_vectors(tv) before training.")
        return self.task_vectors[batch["index"]]

    # ---- the CVAE ------------------------------------------------------------------------------
    def training_loss(self, batch):
        x = self.norm.encode(batch["target"])  # (B, P)
        c = self.condition(batch["cond"], self._batch_task_vector(batch))  # (B, C)
        return self.cvae_loss(x, c)

    def adapter_for_training(self, cond, batch):
        """sft: the CVAE's adapter through CVAEGenerator.sft_adapter (prior N(0, I), offset 0)."""
        if self.config.task_vector_dim and "task_vector" not in batch and bool((batch["index"] < 0).any()):
            raise HypergenError("ICM with task vectors trains with sft only on zoo tasks (one task vector per expert): use --tasks zoo or task_vector_dim=0.")
        return self.sft_adapter(self.condition(cond, self._batch_task_vector(batch)), batch["index"])

    def sample(self, cond, n, gen, extra=None):
        tv = (extra or {}).get("task_vector")
        c = self.condition(cond[None], None if tv is None else tv.to(cond.device)[None])  # (1, C)
        zero = torch.zeros((1, self.config.latent), device=cond.device)  # N(0, I): z = 0 at n = 1, a deterministic default
        x = self.decode(self.latents(zero, zero, n, gen), c.expand(n, -1))  # (n, P)
        return Sampled(self.norm.decode(x))

register_generator("icm", ICMConfig, ICMLoRA)
