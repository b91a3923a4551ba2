"""Training one expert LoRA on one task with Lightning.

The LightningModule is thin: the LoRA lives in a slot of the ResidentModel (base frozen), the module
only runs steps, the optimizer and logging. A callback keeps the last few checkpoints of the
trajectory, which ICM-LoRA and SG-LoRA learn from.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, RandomSampler

from hypergen import paths
from hypergen.base import ResidentModel
from hypergen.config import LoraSpec
from hypergen.data import Encoded, answer_loss, answer_positions, collate, encode_example
from hypergen.errors import HypergenError
from hypergen.lora import LoraWeights

SLOT = "trainee"  # not "training": peft names submodules after adapters and nn.Module owns .training


@dataclass
class ExpertConfig:
    """How one expert is trained.

    steps: optimizer steps (at most; see max_epochs). batch_size: examples per step.
    max_epochs: cap on passes over the task's training examples, so a task with 80 examples is not
    memorised over 10 epochs (a first zoo run did exactly that and lost accuracy); None = no cap. lr: AdamW peak learning rate, linear warmup
    over `warmup` steps then linear decay to 0. warmup: steps of that linear warmup. max_tokens: token budget of prompt + answer (longer
    inputs are cut from the start and counted). keep_last / every: keep the last `keep_last`
    trajectory checkpoints, `every` steps apart. select: which checkpoint becomes the expert:
    "val_loss" (early stopping: of the checkpoints every `every` steps, the one with the lowest
    answer-token loss on the task's validation examples; the trajectory is the `keep_last`
    checkpoints up to it) or "last" (the final step; also what "val_loss" falls back to without
    validation examples). The first zoo experts (built before this option) used "last": small
    multiple-choice tasks memorised their train set and lost accuracy (snarks, hyperbaton,
    parsinlu_qa). weight_decay: AdamW weight decay. seed: the data order and the LoRA's init.
    lora: the adapter's rank, alpha and targets (LoraSpec). logger: "wandb" (offline unless WANDB_MODE
    says otherwise), "csv" or "none". progress: show a progress bar.
    """

    steps: int = 100
    max_epochs: float | None = 3.0
    batch_size: int = 8
    lr: float = 1e-3
    warmup: int = 10
    weight_decay: float = 0.0
    max_tokens: int = 128
    keep_last: int = 4
    every: int = 10
    select: Literal["val_loss", "last"] = "val_loss"
    seed: int = 0
    lora: LoraSpec = field(default_factory=LoraSpec)
    logger: Literal["wandb", "csv", "none"] = "wandb"
    progress: bool = True

    def __post_init__(self):
        if isinstance(self.lora, dict):
            self.lora = LoraSpec(**self.lora)
        for name in ("steps", "batch_size", "max_tokens", "keep_last", "every"):
            if getattr(self, name) < 1:
                raise HypergenError(f"ExpertConfig.{name} must be >= 1; got {getattr(self, name)}.")
        if not 0 < self.lr < 1:
            raise HypergenError(f"ExpertConfig.lr must be in (0, 1); got {self.lr}.")
        if self.select not in ("val_loss", "last"):
            raise HypergenError(f"ExpertConfig.select must be 'val_loss' or 'last'; got {self.select!r}.")
        if self.logger not in ("wandb", "csv", "none"):
            raise HypergenError(f"ExpertConfig.logger must be 'wandb', 'csv' or 'none'; got {self.logger!r}.")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ExpertResult:
    weights: LoraWeights  # the expert: the selected checkpoint (cfg.select)
    trajectory: list[tuple[int, LoraWeights]]  # (step, adapter) of the last checkpoints up to the selected one, included
    losses: list[float]  # training loss per step
    seconds: float
    n_examples: int
    n_truncated: int
    n_skipped: int
    selected_step: int = 0  # the step whose adapter is `weights`
    val_losses: dict[int, float] = field(default_factory=dict)  # step -> validation answer-token loss


class LitExpert(pl.LightningModule):
    def __init__(self, net: torch.nn.Module, params: list[torch.nn.Parameter], cfg: ExpertConfig):
        super().__init__()
        self.net = net
        self.lora_params = params
        self.cfg = cfg
        self.losses: list[float] = []

    def training_step(self, batch, batch_idx):
        loss = answer_loss(self.net, batch)
        if not torch.isfinite(loss):
            raise HypergenError(f"Expert training diverged at step {self.global_step}: loss={loss.item()}. Lower --lr.")
        self.losses.append(loss.item())
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.lora_params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(self.cfg)), "interval": "step"}}


# ---- what makes an expert, shared with zoo/batched.py (many experts in one run) --------------------
def lr_schedule(cfg: ExpertConfig):
    """step -> learning-rate factor: linear warmup over cfg.warmup steps, then linear decay to 0 at cfg.steps."""
    warm, total = cfg.warmup, cfg.steps

    def schedule(step: int) -> float:
        return (step + 1) / warm if step < warm else max(0.0, (total - step) / max(1, total - warm))

    return schedule


def prepare_examples(tok, examples: Sequence[tuple[str, str]], cfg: ExpertConfig, run_name: str) -> tuple[list[Encoded], int, ExpertConfig]:
    """(encoded examples, how many were skipped, cfg with the max_epochs cap applied to its steps)."""
    encoded, skipped = [], 0
    for text, target in examples:
        e = encode_example(tok, text, target, max_tokens=cfg.max_tokens)
        if e is None:
            skipped += 1
        else:
            encoded.append(e)
    if not encoded:
        raise HypergenError(f"{run_name}: no training example fits in max_tokens={cfg.max_tokens} ({skipped} skipped); raise max_tokens.")
    if cfg.max_epochs is not None:
        steps = min(cfg.steps, max(cfg.keep_last, math.ceil(cfg.max_epochs * len(encoded) / cfg.batch_size)))
        if steps != cfg.steps:
            cfg = ExpertConfig(**{**cfg.to_dict(), "steps": steps, "max_epochs": None})
    return encoded, skipped, cfg


def data_order(encoded: Sequence[Encoded], cfg: ExpertConfig) -> RandomSampler:
    """The examples' order, a function of cfg.seed alone: cfg.steps batches of cfg.batch_size, drawn with replacement."""
    return RandomSampler(encoded, replacement=True, num_samples=cfg.steps * cfg.batch_size, generator=torch.Generator().manual_seed(cfg.seed))


def validation_examples(tok, val_examples: Sequence[tuple[str, str]], cfg: ExpertConfig) -> list[Encoded]:
    """The validation examples that fit in max_tokens; none unless cfg.select is "val_loss"."""
    if cfg.select != "val_loss":
        return []
    return [e for e in (encode_example(tok, x, y, max_tokens=cfg.max_tokens) for x, y in val_examples) if e is not None]


def checkpoint_steps(cfg: ExpertConfig, validated: bool) -> set[int]:
    """The steps whose adapter is kept: every `every` steps and the last with validation, else only the
    steps the last keep_last checkpoints can come from."""
    if validated:
        return set(range(cfg.every, cfg.steps + 1, cfg.every)) | {cfg.steps}
    first = cfg.steps - (cfg.keep_last - 1) * cfg.every
    return {s for s in range(first, cfg.steps + 1, cfg.every) if s > 0} | {cfg.steps}


def pick_checkpoint(saved: list[tuple[int, LoraWeights]], val_losses: dict[int, float], final: LoraWeights, final_step: int, keep_last: int):
    """(selected step, its adapter, the keep_last checkpoints up to it); appends the final adapter to `saved`
    when its step was not kept. With validation losses the lowest wins (ties: the later step), else the last."""
    if not saved or saved[-1][0] != final_step:
        saved.append((final_step, final))
    chosen = final_step
    if val_losses:
        chosen = min(val_losses, key=lambda s: (val_losses[s], -s))  # ties: the later step
    upto = [(s, w) for s, w in saved if s <= chosen][-keep_last:]
    return chosen, upto[-1][1], upto


def require_finite(weights: LoraWeights, run_name: str) -> None:
    if not math.isfinite(sum(float(a.abs().sum() + b.abs().sum()) for a, b in weights.modules.values())):
        raise HypergenError(f"{run_name}: the trained adapter holds NaN/inf; lower the learning rate.")


class _Trajectory(pl.Callback):
    """Keeps the adapter every `every` steps (and at the final step), with its validation loss when
    validation batches are given; `pick` then chooses the expert and its trajectory."""

    def __init__(self, resident: ResidentModel, cfg: ExpertConfig, val_batches: list[dict] | None = None):
        self.resident, self.cfg, self.val_batches = resident, cfg, val_batches or []
        self.steps = checkpoint_steps(cfg, bool(self.val_batches))
        self.saved: list[tuple[int, LoraWeights]] = []
        self.val_losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step in self.steps:
            self.saved.append((step, self.resident.weights(SLOT)))
            if self.val_batches:
                self.val_losses[step] = self.val_loss(pl_module.net)
                pl_module.log("val/loss", self.val_losses[step])

    @torch.no_grad()
    def val_loss(self, net) -> float:
        """Mean answer-token cross-entropy over all validation tokens."""
        total, count = 0.0, 0
        for b in self.val_batches:
            n = int(answer_positions(b["labels"]).sum())  # the tokens answer_loss averages over
            total += float(answer_loss(net, b)) * n
            count += n
        return total / max(count, 1)

    def pick(self, final: LoraWeights, final_step: int) -> tuple[int, LoraWeights, list[tuple[int, LoraWeights]]]:
        """(selected step, its adapter, the keep_last checkpoints up to it)."""
        return pick_checkpoint(self.saved, self.val_losses, final, final_step, self.cfg.keep_last)


def progress_bars(enabled: bool) -> list:
    """Lightning's default (rich) bar draws nothing until a run ends when stderr is a log file, not a
    terminal; there a tqdm bar refreshed every 10 steps shows how far a long background job got."""
    if not enabled or sys.stderr.isatty():
        return []
    from pytorch_lightning.callbacks import TQDMProgressBar

    return [TQDMProgressBar(refresh_rate=10)]


def make_logger(cfg: ExpertConfig, run_name: str, group: str):
    """W&B offline by default; WANDB_MODE=disabled (tests) turns it off without importing wandb."""
    if cfg.logger == "none" or (cfg.logger == "wandb" and os.environ.get("WANDB_MODE") == "disabled"):
        return False
    save_dir = paths.runs_dir() / group
    save_dir.mkdir(parents=True, exist_ok=True)
    if cfg.logger == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(save_dir, name=run_name)
    from pytorch_lightning.loggers import WandbLogger

    mode = os.environ.get("WANDB_MODE", "offline")
    return WandbLogger(project="hypergen", group=group, name=run_name, save_dir=str(save_dir), offline=mode != "online", config=cfg.to_dict())


def train_expert(
    resident: ResidentModel,
    examples: Sequence[tuple[str, str]],
    cfg: ExpertConfig | None = None,
    *,
    run_name: str = "expert",
    group: str = "zoo",
    val_examples: Sequence[tuple[str, str]] = (),
) -> ExpertResult:
    """Train a fresh LoRA on (input, target) pairs; the resident base stays frozen and loaded.
    With cfg.select == "val_loss" and `val_examples`, the checkpoint with the lowest validation loss
    becomes the expert (see ExpertConfig)."""
    cfg = cfg or ExpertConfig()
    tok = resident.tokenizer
    encoded, skipped, cfg = prepare_examples(tok, examples, cfg, run_name)
    n_trunc = sum(e.truncated for e in encoded)

    pl.seed_everything(cfg.seed, verbose=False)
    spec = LoraSpec(**{**cfg.lora.to_dict(), "init_seed": cfg.seed})
    params = resident.new_trainable(SLOT, spec)
    loader = DataLoader(encoded, batch_size=cfg.batch_size, sampler=data_order(encoded, cfg), collate_fn=lambda b: collate(b, tok.pad_token_id))

    val = validation_examples(tok, val_examples, cfg)
    # collated on the CPU, moved once to the model's device (Lightning moves only the training batches)
    val_batches = [{k: v.to(resident.device) for k, v in collate(val[i : i + 2 * cfg.batch_size], tok.pad_token_id).items()} for i in range(0, len(val), 2 * cfg.batch_size)]
    lit = LitExpert(resident.forward_model(), params, cfg)
    traj = _Trajectory(resident, cfg, val_batches)
    trainer = pl.Trainer(
        max_steps=cfg.steps,
        accelerator="gpu" if resident.device.type == "cuda" else "cpu",
        devices=1,
        precision="32-true",
        logger=make_logger(cfg, run_name, group),
        callbacks=[traj, *progress_bars(cfg.progress)],
        enable_checkpointing=False,  # the zoo store keeps adapters; Lightning would save the whole base
        enable_model_summary=False,
        enable_progress_bar=cfg.progress,
        num_sanity_val_steps=0,
        log_every_n_steps=max(1, min(10, cfg.steps)),
    )
    t = time.perf_counter()
    try:
        trainer.fit(lit, loader)
    finally:
        resident.forward_model().eval()
        for p in params:
            p.requires_grad_(False)
        if trainer.logger and hasattr(trainer.logger, "experiment") and cfg.logger == "wandb":
            import wandb

            wandb.finish()
    seconds = time.perf_counter() - t
    final = resident.weights(SLOT)
    resident.deactivate()
    chosen, weights, trajectory = traj.pick(final, cfg.steps)
    require_finite(weights, run_name)
    return ExpertResult(weights, trajectory, lit.losses, seconds, len(encoded), n_trunc, skipped, chosen, traj.val_losses)
