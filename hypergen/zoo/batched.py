"""Training N experts at once: one Lightning run whose every batch holds rows of N tasks.

A batch is batch_size examples of each expert still training, block after block; block e runs through
expert e's LoRA by the per-row LoRA (hypergen.rowlora) in ONE forward pass of the frozen base. The loss
is the sum over experts of each expert's own mean answer-token loss, so each expert's gradient is
exactly the one train_expert gives it (up to float rounding: other kernels, other padding).

Each expert owns its A/B leaf tensors and its own AdamW parameter group with its own schedule: an
expert capped by max_epochs decays to 0 at its own step count, which one shared group could not do.
The per-step stack of the leaves into the (n, r, in) / (n, out, r) factors rowlora needs costs a few
small copies. An expert past its step count contributes no rows and gets no gradient (grad None:
AdamW takes no step for it, neither momentum nor weight decay). Expert training clips no gradients,
so there is nothing to clip per expert.

Everything else is train_expert's, through its own helpers: the init (new_trainable, seed), the data
order (each expert's own sampler), the max_epochs cap, warmup + linear decay, max_tokens, and the
checkpoint choice (validation loss every `every` steps, the keep_last trajectory). Validation runs
batched too: chunks of 2 * batch_size examples of every expert due at that step in one pass.

Memory on a GPU grows with the rows of a step: N * batch_size sequences of up to max_tokens tokens.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from hypergen import rowlora
from hypergen.base import ResidentModel
from hypergen.config import LoraSpec
from hypergen.data import IGNORE, Encoded, answer_positions, collate
from hypergen.errors import HypergenError
from hypergen.lora import LoraWeights
from hypergen.zoo.expert import (
    SLOT,
    ExpertConfig,
    ExpertResult,
    checkpoint_steps,
    data_order,
    lr_schedule,
    make_logger,
    pick_checkpoint,
    prepare_examples,
    progress_bars,
    require_finite,
    validation_examples,
)

_FILLER = Encoded([0], [IGNORE], False)  # pads a validation block to full size; no answer token, so no loss


@dataclass
class ExpertJob:
    """One expert to train: its run name, (input, target) training pairs and validation pairs."""

    name: str
    examples: Sequence[tuple[str, str]]
    val_examples: Sequence[tuple[str, str]] = ()


@dataclass
class _Expert:
    """One expert's state during the run."""

    name: str
    cfg: ExpertConfig  # with its max_epochs cap applied: cfg.steps is its own step count
    train: list[Encoded]
    order: list[int]  # cfg.steps * batch_size example indices (train_expert's sampler)
    val: list[Encoded]
    n_skipped: int
    factors: dict[str, tuple[torch.nn.Parameter, torch.nn.Parameter]]  # path -> (A (r, in), B (out, r))
    keep: set[int]  # steps whose adapter is kept
    saved: list[tuple[int, LoraWeights]] = field(default_factory=list)
    val_losses: dict[int, float] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _weights(e: _Expert, alpha: float, base_model: str) -> LoraWeights:
    """A copy of the expert's adapter now, as ResidentModel.weights makes one (fp32, CPU)."""
    mods = {p: (a.detach().float().cpu().clone(), b.detach().float().cpu().clone()) for p, (a, b) in e.factors.items()}
    return LoraWeights(mods, alpha, base_model)


def _row_lora(experts: Sequence[_Expert], scale: float) -> rowlora.RowLora:
    """The experts' factors stacked, row e = experts[e]; differentiable in every expert's leaves."""
    paths = experts[0].factors
    mods = {p: (torch.stack([e.factors[p][0] for e in experts]), torch.stack([e.factors[p][1] for e in experts])) for p in paths}  # (n, r, in), (n, out, r)
    a = next(iter(mods.values()))[0]
    return rowlora.RowLora(mods, torch.full((len(experts),), scale, device=a.device, dtype=a.dtype))


def _nll_sums(res: ResidentModel, lora: rowlora.RowLora, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """((n,) summed answer-token cross-entropy, (n,) answer-token count) of each row's block of
    consecutive sequences (the batch holds n equal blocks), under the row's LoRA, in one forward pass."""
    keep = answer_positions(batch["labels"])  # logits only where an answer token follows (data.answer_loss)
    with contextlib.ExitStack() as stack:
        stack.enter_context(res.adapters_off())  # the trainee slot stays loaded; no peft adapter may add to the rows
        stack.enter_context(rowlora.apply(res.model, lora))
        out = res.forward_model()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep)
    target = batch["labels"][:, 1:][keep[:, :-1]]
    tok = F.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]).float(), target, reduction="none")  # (n_tokens,)
    n = lora.rows
    row = keep.nonzero()[:, 0] // (batch["labels"].shape[0] // n)  # the block each kept token belongs to
    return torch.zeros(n, device=tok.device).index_add(0, row, tok), torch.bincount(row, minlength=n)


class _Steps(Dataset):
    """Step s -> the collated rows of every expert still training at s (its batch for step s, as
    train_expert's loader gives it) and which experts they are."""

    def __init__(self, experts: list[_Expert], batch_size: int, pad_id: int):
        self.experts, self.bs, self.pad_id = experts, batch_size, pad_id

    def __len__(self) -> int:
        return max(e.cfg.steps for e in self.experts)

    def __getitem__(self, s: int) -> dict[str, torch.Tensor]:
        active = [i for i, e in enumerate(self.experts) if s < e.cfg.steps]
        rows = [self.experts[i].train[j] for i in active for j in self.experts[i].order[s * self.bs : (s + 1) * self.bs]]
        return {**collate(rows, self.pad_id), "experts": torch.tensor(active)}


class LitExperts(pl.LightningModule):
    """Thin: the sum of the experts' own losses, and one AdamW parameter group (and schedule) per expert."""

    def __init__(self, resident: ResidentModel, experts: list[_Expert], cfg: ExpertConfig):
        super().__init__()
        self.net = resident.forward_model()  # so Lightning puts the base in train mode, as LitExpert does
        self.resident, self.experts, self.cfg = resident, experts, cfg
        self.scale = cfg.lora.alpha / cfg.lora.rank
        self.active: list[int] = []

    def training_step(self, batch, batch_idx):
        self.active = batch["experts"].tolist()
        group = [self.experts[i] for i in self.active]
        sums, counts = _nll_sums(self.resident, _row_lora(group, self.scale), batch)
        nll = sums / counts  # (n,) each expert's mean answer-token loss, as answer_loss gives it
        if not torch.isfinite(nll).all():
            bad = [e.name for e, v in zip(group, nll.tolist()) if v != v or abs(v) == float("inf")]
            raise HypergenError(f"Expert training diverged at step {self.global_step} ({', '.join(bad)}). Lower --lr.")
        for e, v in zip(group, nll.tolist()):
            e.losses.append(v)
        self.log("train/loss", nll.mean(), prog_bar=True)  # the mean over the experts still training
        if self.logger:
            self.log_dict({f"train/loss/{e.name}": v for e, v in zip(group, nll.detach())})
        return nll.sum()

    def configure_optimizers(self):
        groups = [{"params": [t for pair in e.factors.values() for t in pair]} for e in self.experts]
        opt = torch.optim.AdamW(groups, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, [lr_schedule(e.cfg) for e in self.experts])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class _Checkpoints(pl.Callback):
    """After each step: each expert due keeps its adapter and, with validation examples, its validation
    loss (the experts due at one step are validated together); each step's time is shared among the
    experts that trained in it."""

    def __init__(self, lit: LitExperts, alpha: float):
        self.lit, self.alpha = lit, alpha

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step, res = trainer.global_step, self.lit.resident
        due = [e for e in self.lit.experts if step in e.keep]  # only steps up to the expert's own count
        for e in due:
            e.saved.append((step, _weights(e, self.alpha, res.name)))
        validated = [e for e in due if e.val]
        if validated:
            for e, v in zip(validated, self.val_losses(validated)):
                e.val_losses[step] = v
            if pl_module.logger:
                pl_module.log_dict({f"val/loss/{e.name}": e.val_losses[step] for e in validated})
        dt = time.perf_counter() - self.t
        for i in self.lit.active:
            self.lit.experts[i].seconds += dt / len(self.lit.active)

    @torch.no_grad()
    def val_losses(self, experts: list[_Expert]) -> list[float]:
        """Each expert's mean answer-token cross-entropy over all its validation tokens. Pass c holds
        chunk c (2 * batch_size examples, train_expert's validation batch) of every expert that has one,
        short chunks filled with examples that carry no answer."""
        res, k = self.lit.resident, 2 * self.lit.cfg.batch_size
        total, count = [0.0] * len(experts), [0] * len(experts)
        for c in range(0, max(len(e.val) for e in experts), k):
            idx = [i for i, e in enumerate(experts) if c < len(e.val)]
            rows = [x for i in idx for x in (experts[i].val[c : c + k] + [_FILLER] * k)[:k]]
            batch = {key: v.to(res.device) for key, v in collate(rows, res.tokenizer.pad_token_id).items()}
            sums, counts = _nll_sums(res, _row_lora([experts[i] for i in idx], self.lit.scale), batch)
            for i, s, n in zip(idx, sums.tolist(), counts.tolist()):
                total[i] += s
                count[i] += n
        return [t / max(n, 1) for t, n in zip(total, count)]


def train_experts(resident: ResidentModel, jobs: Sequence[ExpertJob], cfg: ExpertConfig | None = None, *, run_name: str | None = None, group: str = "zoo") -> list[ExpertResult]:
    """Train a fresh LoRA per job, all in one Lightning run; the resident base stays frozen and loaded.
    Returns one ExpertResult per job, as train_expert(resident, job.examples, cfg, val_examples=
    job.val_examples) would (within float rounding); `seconds` is the expert's share of the run (each
    step's time split among the experts in it)."""
    cfg = cfg or ExpertConfig()
    if not jobs:
        raise HypergenError("train_experts needs at least one job.")
    tok = resident.tokenizer
    pl.seed_everything(cfg.seed, verbose=False)
    # every expert starts from train_expert's init: the same slot, seed and code, copied out
    for t in resident.new_trainable(SLOT, LoraSpec(**{**cfg.lora.to_dict(), "init_seed": cfg.seed})):
        t.requires_grad_(False)  # the slot only made the init: the experts train their own copies
    init = resident.weights(SLOT)
    resident.deactivate()

    experts = []
    for job in jobs:
        train, skipped, ecfg = prepare_examples(tok, job.examples, cfg, job.name)
        val = validation_examples(tok, job.val_examples, cfg)
        factors = {p: tuple(torch.nn.Parameter(t.to(resident.device, next(resident.model.parameters()).dtype).clone()) for t in ab) for p, ab in init.modules.items()}
        experts.append(_Expert(job.name, ecfg, train, list(data_order(train, ecfg)), val, skipped, factors, checkpoint_steps(ecfg, bool(val))))
    steps = max(e.cfg.steps for e in experts)

    # batch_size=None: the dataset gives whole batches, one per step index
    loader = DataLoader(_Steps(experts, cfg.batch_size, tok.pad_token_id), batch_size=None, sampler=range(steps))
    lit = LitExperts(resident, experts, cfg)
    name = run_name or (experts[0].name if len(experts) == 1 else f"{experts[0].name}+{len(experts) - 1}")
    log_cfg = ExpertConfig(**{**cfg.to_dict(), "steps": steps})
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="gpu" if resident.device.type == "cuda" else "cpu",
        devices=1,
        precision="32-true",
        logger=make_logger(log_cfg, name, group),
        callbacks=[_Checkpoints(lit, init.alpha), *progress_bars(cfg.progress)],
        enable_checkpointing=False,  # the zoo store keeps adapters; Lightning would save the whole base
        enable_model_summary=False,
        enable_progress_bar=cfg.progress,
        num_sanity_val_steps=0,
        log_every_n_steps=max(1, min(10, steps)),
    )
    try:
        trainer.fit(lit, loader)
    finally:
        resident.forward_model().eval()
        for e in experts:
            for t in (t for pair in e.factors.values() for t in pair):
                t.requires_grad_(False)
        if trainer.logger and hasattr(trainer.logger, "experiment") and cfg.logger == "wandb":
            import wandb

            wandb.finish()

    out = []
    for e in experts:
        final = _weights(e, init.alpha, resident.name)
        chosen, weights, trajectory = pick_checkpoint(e.saved, e.val_losses, final, e.cfg.steps, e.cfg.keep_last)
        require_finite(weights, e.name)
        out.append(ExpertResult(weights, trajectory, e.losses, e.seconds, len(e.train), sum(x.truncated for x in e.train), e.n_skipped, chosen, e.val_losses))
    return out
