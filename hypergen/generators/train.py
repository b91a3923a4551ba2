"""Training generators with Lightning: a thin LightningModule around any registered family.

Objectives
- recon: match the experts' weights (and trajectory checkpoints). Cheap: no base model involved.
- sft:   next-token loss of the zoo tasks' data through the base model with the generated adapter
         (Text-to-LoRA found this better). For families that list "sft" in `objectives` (adapter_for_training).

Runs are resumable (Lightning checkpoints every `ckpt_every` steps; a rerun continues from the last),
distributed through Lightning strategies (--devices / --strategy / --num-nodes), and stop on a
non-finite loss with the step and the value, keeping the last good checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, RandomSampler

from hypergen import paths
from hypergen.errors import HypergenError
from hypergen.generators.base import Generator


@dataclass
class TrainConfig:
    """How a generator is trained.

    objective: "recon" or "sft" (see module doc). steps / batch_size / lr / weight_decay: the optimiser.
    ckpt_every: steps between resumable checkpoints. val_experts: names held out of the bank and the
    training data to measure reconstruction on experts the generator never saw.
    devices / strategy / num_nodes / accelerator: passed to the Lightning Trainer.
    """

    objective: Literal["recon", "sft"] = "recon"
    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    ckpt_every: int = 100
    log_every: int = 10
    val_experts: tuple[str, ...] = ()
    devices: int = 1
    strategy: str = "auto"
    num_nodes: int = 1
    accelerator: str = "auto"
    logger: Literal["wandb", "csv", "none"] = "wandb"
    progress: bool = True
    sft_examples: int = 4  # sft: text examples per task per step
    sft_max_tokens: int = 128

    def __post_init__(self):
        if self.objective not in ("recon", "sft"):
            raise HypergenError(f"--objective must be recon or sft; got {self.objective!r}.")
        for k in ("steps", "batch_size", "devices", "num_nodes", "ckpt_every"):
            if getattr(self, k) < 1:
                raise HypergenError(f"TrainConfig.{k} must be >= 1; got {getattr(self, k)}.")
        self.val_experts = tuple(self.val_experts)


class LitGenerator(pl.LightningModule):
    def __init__(self, generator: Generator, cfg: TrainConfig, data, sft=None):
        super().__init__()
        self.generator = generator
        self.cfg = cfg
        self._data = data
        self._sft = sft  # (resident, task data): kept out of the module so checkpoints stay small
        self.history: list[dict] = []

    def train_dataloader(self):
        # each rank draws its own batches (seed + rank); rank 0 draws what a 1-process run draws
        g = torch.Generator().manual_seed(self.cfg.seed + self.global_rank)
        sampler = RandomSampler(self._data, replacement=True, num_samples=self.cfg.steps * self.cfg.batch_size, generator=g)
        return DataLoader(self._data, batch_size=self.cfg.batch_size, sampler=sampler)

    def training_step(self, batch, batch_idx):
        if self.cfg.objective == "sft":
            from hypergen.generators.sft import sft_step

            out = sft_step(self.generator, self._sft, batch)
        else:
            out = self.generator.training_loss(self.generator.batch_tensors(batch))
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise HypergenError(
                f"Training stopped: non-finite loss {loss.item()} at step {self.global_step}. "
                f"The last good checkpoint is kept; lower --lr or check the zoo for NaN weights."
            )
        logs = {f"train/{k}": v.detach() for k, v in out.items()}
        self.log_dict(logs, prog_bar=True, on_step=True)
        if self.global_step % self.cfg.log_every == 0:
            self.history.append({"step": self.global_step, **{k: float(v.detach()) for k, v in out.items()}})
        return loss

    def configure_optimizers(self):
        params = [p for p in self.generator.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)


def train_generator(generator: Generator, cfg: TrainConfig, out: str | Path, *, sft_data=None, run_name: str | None = None) -> dict:
    """Fit `generator` and save it to `out` (generator.json + generator.safetensors + train.json)."""
    from hypergen.zoo.expert import make_logger, progress_bars

    if not generator.trainable:
        raise HypergenError(f"The {generator.family} generator has nothing to train; use it directly.")
    if cfg.objective not in generator.objectives:
        raise HypergenError(f"The {generator.family} generator cannot train with objective {cfg.objective!r}; its objectives: {', '.join(generator.objectives)}.")
    if generator.inference_only:
        raise HypergenError(f"This {generator.family} checkpoint was loaded without its training-only tensors (no training.safetensors, as shipped in generators/): "
                            "train from the folder `hypergen train` wrote, or from scratch.")
    out = Path(out)
    # resume only the very same run: same family config, training config, experts and destination
    import hashlib

    shapes = {k: list(v.shape) for k, v in generator.state_for_save().items()}  # a code change that alters shapes starts afresh
    key = json.dumps([generator.family, generator.config.to_dict(), asdict(cfg), generator.bank.names, str(out.resolve()), shapes], sort_keys=True, default=str)
    run_id = hashlib.sha1(key.encode()).hexdigest()[:10]
    ckpt_dir = paths.runs_dir() / "generators" / f"{run_name or generator.family}-{run_id}" / "ckpt"
    pl.seed_everything(cfg.seed, verbose=False)
    data = generator.training_examples()
    if len(data) == 0:
        raise HypergenError("No training examples: the zoo is empty.")
    lit = LitGenerator(generator, cfg, data, sft=sft_data)
    from pytorch_lightning.callbacks import ModelCheckpoint

    ckpt = ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=cfg.ckpt_every, save_last=True, save_top_k=0)

    class _Cfg:  # ExpertConfig-like view for the shared logger factory
        logger = cfg.logger

        @staticmethod
        def to_dict():
            return asdict(cfg)

    trainer = pl.Trainer(
        max_steps=cfg.steps,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision="32-true",
        logger=make_logger(_Cfg, run_name or generator.family, "generators"),
        callbacks=[ckpt, *progress_bars(cfg.progress)],
        enable_model_summary=False,
        enable_progress_bar=cfg.progress,
        num_sanity_val_steps=0,
        log_every_n_steps=cfg.log_every,
        use_distributed_sampler=False,  # the sampler already draws cfg.steps batches per rank
    )
    last = ckpt_dir / "last.ckpt"
    t = time.perf_counter()
    trainer.fit(lit, ckpt_path=str(last) if last.is_file() else None)
    seconds = time.perf_counter() - t
    if cfg.logger == "wandb" and os.environ.get("WANDB_MODE") != "disabled":
        import wandb

        wandb.finish()
    summary = {
        "family": generator.family,
        "config": generator.config.to_dict(),
        "train": asdict(cfg),
        "seconds": round(seconds, 1),
        "world_size": trainer.world_size,
        "global_rank": trainer.global_rank,  # under ddp every rank returns; only rank 0 saves and reports
        "history": lit.history,
        "final": lit.history[-1] if lit.history else None,
    }
    if trainer.global_rank == 0:
        generator.save(out, extra={"train": asdict(cfg)})
        (out / "train.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
