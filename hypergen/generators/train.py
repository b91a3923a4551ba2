"""Training generators with Lightning: a thin LightningModule around any registered family.

Objectives
- recon: match the experts' weights (and trajectory checkpoints). Cheap: no base model involved.
- sft:   answer-token loss of tasks' data through the frozen base with each row's generated adapter
         (Text-to-LoRA found this better; hypergen.generators.sft). For families that list "sft" in
         `objectives` (adapter_for_training). Tasks: the zoo's, or every task of a descriptions file
         (`tasks`); whole validation families pick the checkpoint kept (the best validation NLL).

Runs are resumable (Lightning checkpoints every `ckpt_every` steps; a rerun continues from the last, and
the sft batches of step s depend on (seed, rank, s) alone, so a run killed and resumed sees the same data).
A rerun with more --steps extends the run: settings that only say how long or how visibly it runs
(RUN_ONLY) are not part of the run's identity, so a CPU run can also be continued on a GPU. Runs are
distributed through Lightning strategies (--devices / --strategy / --num-nodes), and stop on a
non-finite loss with the step and the value, keeping the last good checkpoint. A stopped run's best
checkpoint so far becomes a generator folder without training (export_run, `hypergen train ... --export`).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
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

    objective: "recon" (match the experts' weights) or "sft" (answer loss through the frozen base; see
    the module doc). steps: optimiser steps. batch_size: rows per step (an expert checkpoint for recon;
    a task with one description and sft_examples examples for sft). lr: peak learning rate (AdamW).
    weight_decay: AdamW's weight decay. seed: seeds initialisation and the data order.
    ckpt_every: steps between resumable checkpoints. log_every: steps between logged losses.
    val_experts: names held out of the bank and the training data to measure reconstruction on experts
    the generator never saw. devices / strategy / num_nodes / accelerator: passed to the Lightning
    Trainer. logger: wandb (offline unless WANDB_MODE=online), csv or none. progress: show a progress bar.
    warmup: steps of linear learning-rate warm-up (a T2L-style hypernetwork diverges without it).
    lr_decay: steps of cosine decay after the warm-up, from lr down to a tenth of it (LR_FLOOR), where it
    then stays (0 = a constant lr after the warm-up, as every run before 2026-12-02). Unlike steps it is
    part of the run's identity: a run extended past it continues at the floor.
    bf16: bf16 autocast when training on CUDA (ignored on CPU).
    tasks: where sft rows come from: "zoo" (the experts' tasks), "descriptions" (every task of the
    descriptions file, read from task_suite) or "suite" (every task of task_suite; each needs
    descriptions in the file). task_suite: the task suite sft reads ("bigbench" or a path).
    descriptions: the descriptions file ("" = data/descriptions/bigbench.json). min_examples: tasks
    with fewer usable instances are left out. val_families: whole families kept apart for validation
    (default 4, or 0 when tasks is "zoo"). val_every: steps between validations. sft_examples: train
    examples per row. sft_max_tokens: the longest example in tokens (prompt + answer).
    sft_max_train: train examples kept per task.
    sft_prompt_description: the share of sft rows whose prompt also holds the row's description, as the
    evaluation's `+desc` methods and base_desc prompt (0 = never; 1 = always, as Text-to-LoRA's SFT prompt
    and as the shipped t2l and mtlora were trained). Drawn per row from (seed, rank, step, row), so a resume is unchanged;
    validation puts it in the same share of its fixed rows, so compare runs of different shares with
    `hypergen eval`, not by their validation NLL.
    extra_suite: a second task suite whose described tasks train too ("openai_evals": the OpenAI evals
    wheel, hypergen.tasks.openai_evals), beside those of `descriptions` ("" = none; the shipped t2l
    trained with "openai_evals"). extra_descriptions: its descriptions file ("" = data/descriptions/<extra_suite>.json).
    Held-out BIG-bench families are refused in it as in the first.
    max_tasks: train on this many of the training tasks (None = all): a subset drawn by seed after the
    validation families are set apart, nested (a smaller max_tasks keeps a subset of a larger one's tasks),
    for a held-out score against the number of training tasks (bench/scaling.py).
    contrast: weight of a term that rewards the description's effect on answers (sft only; 0 = off, as the
    shipped t2l was trained): each row's examples are also scored under another row's adapter (another
    task's description), and the loss adds contrast * relu(contrast_margin + own NLL - other NLL)
    (hypergen.generators.sft.sft_step). One forward pass over twice the rows: about twice the time and activation memory.
    contrast_margin: how far, in nats per answer token, the own adapter must beat another task's before
    the term stops pushing.
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
    warmup: int = 0
    lr_decay: int = 0
    bf16: bool = False
    tasks: Literal["zoo", "descriptions", "suite"] = "zoo"
    task_suite: str = "bigbench"
    descriptions: str = ""
    min_examples: int = 30
    val_families: int | None = None
    val_every: int = 100
    sft_examples: int = 4
    sft_max_tokens: int = 128
    sft_max_train: int = 128
    sft_prompt_description: float = 0.0
    max_tasks: int | None = None
    extra_suite: str = ""
    extra_descriptions: str = ""
    contrast: float = 0.0
    contrast_margin: float = 0.5

    def __post_init__(self):
        if self.objective not in ("recon", "sft"):
            raise HypergenError(f"--objective must be recon or sft; got {self.objective!r}.")
        if self.tasks not in ("zoo", "descriptions", "suite"):
            raise HypergenError(f"--tasks must be zoo, descriptions or suite; got {self.tasks!r}.")
        if self.warmup < 0 or self.lr_decay < 0 or (self.val_families is not None and self.val_families < 0):
            raise HypergenError(f"--warmup, --lr-decay and --val-families must be >= 0; got {self.warmup}, {self.lr_decay}, {self.val_families}.")
        if not (self.lr >= 0 and self.weight_decay >= 0):  # lr 0 trains nothing, on purpose (a warm start's check)
            raise HypergenError(f"--lr and --weight-decay must be >= 0; got {self.lr}, {self.weight_decay}.")
        for k in ("steps", "batch_size", "devices", "num_nodes", "ckpt_every", "log_every", "val_every", "min_examples", "sft_examples", "sft_max_train"):
            if getattr(self, k) < 1:
                raise HypergenError(f"TrainConfig.{k} must be >= 1; got {getattr(self, k)}.")
        if self.max_tasks is not None and self.max_tasks < 1:
            raise HypergenError(f"--max-tasks must be >= 1 (or not given: every task); got {self.max_tasks}.")
        if not 0.0 <= self.sft_prompt_description <= 1.0:
            raise HypergenError(f"--sft-prompt-description is a share of rows, from 0 to 1; got {self.sft_prompt_description}.")
        if self.contrast < 0 or self.contrast_margin < 0:
            raise HypergenError(f"--contrast and --contrast-margin must be >= 0; got {self.contrast}, {self.contrast_margin}.")
        if self.extra_descriptions and not self.extra_suite:
            raise HypergenError("--extra-descriptions describes the tasks of --extra-suite: give that suite too.")
        if self.extra_suite and self.tasks == "zoo":
            raise HypergenError("--extra-suite adds described tasks: it needs --tasks descriptions or suite.")
        if self.contrast > 0 and self.objective != "sft":
            raise HypergenError("--contrast scores answers through the base: it needs --objective sft.")
        self.val_experts = tuple(self.val_experts)


LR_FLOOR = 0.1
"""Where TrainConfig.lr_decay ends, as a share of lr: a run extended past the decay still learns."""


def lr_factor(step: int, *, warmup: int, decay: int) -> float:
    """The learning rate's multiplier at optimiser step `step`: linear warm-up over `warmup` steps, then a
    cosine from 1 to LR_FLOOR over `decay` steps (0: none), then LR_FLOOR."""
    if step < warmup:
        return (step + 1) / warmup
    if not decay:
        return 1.0
    t = min(1.0, (step - warmup) / decay)
    return LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * t))


# how long, how often and where a run goes, not what it learns: changing these continues the same run
RUN_ONLY = ("steps", "ckpt_every", "log_every", "val_every", "progress", "logger", "accelerator", "bf16")
# fields added after runs were started, at the value that does what those runs did: left out of the
# identity at that value, so those runs keep their folder (resume, --export); any other value is another run.
# (Runs started before RUN_ONLY existed, 2026-11-30, hashed every field: resume those with that commit.)
ADDED = {"lr_decay": 0, "sft_prompt_description": 0.0, "max_tasks": None, "contrast": 0.0, "contrast_margin": 0.5, "extra_suite": "", "extra_descriptions": ""}


def run_folder(generator: Generator, cfg: TrainConfig, out: str | Path, *, sft_data=None, run_name: str | None = None) -> Path:
    """The folder of this run's resumable checkpoints: the same family config, training config (less
    RUN_ONLY), experts, tensor shapes and sft tasks resume; anything else is another run. Where the
    trained generator is written (`out`) is not part of it, so `--export --out DIR` finds a run trained
    without --out. A run started before 2026-12-02 was keyed with its `out` as well: its folder is still
    found when this run has none of its own."""
    import hashlib

    shapes = {k: list(v.shape) for k, v in generator.state_for_save().items()}  # a code change that alters shapes starts afresh
    learns = {k: v for k, v in asdict(cfg).items() if k not in RUN_ONLY and not (k in ADDED and v == ADDED[k])}
    data_key = sft_data.fingerprint if sft_data is not None else None  # other sft tasks: another run
    parts = [generator.family, generator.config.identity(), learns, generator.bank.names, shapes, data_key]
    root = paths.runs_dir() / "generators"

    def folder(key: list) -> Path:
        run_id = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]
        return root / f"{run_name or generator.family}-{run_id}" / "ckpt"

    legacy = folder([*parts[:4], str(Path(out).resolve()), shapes, data_key])  # the key until 2026-12-02: the destination sat before the shapes
    new = folder(parts)
    return legacy if legacy.is_dir() and not new.is_dir() else new


def weights_fingerprint(module: torch.nn.Module) -> torch.Tensor:
    """Two numbers that change with any trained weight: the float64 sum and sum of squares of every
    trainable parameter, each scaled by its position so that two tensors cannot trade their changes."""
    params = [p.detach().double() for p in module.parameters() if p.requires_grad]
    if not params:
        return torch.zeros(2, dtype=torch.float64)
    return torch.stack([torch.stack([p.sum(), p.square().sum()]) * (i + 1) for i, p in enumerate(params)]).sum(0)


class LitGenerator(pl.LightningModule):
    def __init__(self, generator: Generator, cfg: TrainConfig, data, sft=None):
        super().__init__()
        self.generator = generator
        self.cfg = cfg
        self._data = data
        self._sft = sft  # (resident, task data): kept out of the module so checkpoints stay small
        self.history: list[dict] = []

    def train_dataloader(self):
        if self.cfg.objective == "sft":
            from hypergen.generators.sft import TrainBatches

            # from the restored step on (global_step is restored before this is called). A resumed epoch
            # counts its batches from that step, so the loader keeps the full length; max_steps ends it.
            steps = range(self.global_step, self.global_step + self.cfg.steps)
            batches = TrainBatches(self._sft, self.cfg.batch_size, self.cfg.seed, self.global_rank, prompt_description=self.cfg.sft_prompt_description)
            return DataLoader(batches, batch_size=None, sampler=steps)
        # each rank draws its own batches (seed + rank); rank 0 draws what a 1-process run draws
        g = torch.Generator().manual_seed(self.cfg.seed + self.global_rank)
        sampler = RandomSampler(self._data, replacement=True, num_samples=self.cfg.steps * self.cfg.batch_size, generator=g)
        return DataLoader(self._data, batch_size=self.cfg.batch_size, sampler=sampler)

    def training_step(self, batch, batch_idx):
        if self.cfg.objective == "sft":
            from hypergen.generators.sft import sft_step

            out = sft_step(self.generator, self._sft, batch, contrast=self.cfg.contrast, margin=self.cfg.contrast_margin)
        else:
            out = self.generator.training_loss(self.generator.batch_tensors(batch))
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise HypergenError(
                f"Training stopped: non-finite loss {loss.item()} at step {self.global_step}. "
                f"The last good checkpoint is kept; lower --lr or check the zoo for NaN weights."
            )
        logs = {f"train/{k}": v.detach() for k, v in out.items()}
        logs["lr"] = float(self.trainer.optimizers[0].param_groups[0]["lr"])  # the warm-up, visible in the logs
        self.log_dict(logs, prog_bar=True, on_step=True)
        if self.global_step % self.cfg.log_every == 0:
            self.history.append({"step": self.global_step, **{k: float(v.detach()) for k, v in out.items()}})
        return loss

    def val_dataloader(self):
        from hypergen.generators.sft import val_batches

        rows = val_batches(self._sft, self.cfg.batch_size, prompt_description=self.cfg.sft_prompt_description, seed=self.cfg.seed) if self._sft is not None else []
        return DataLoader(rows, batch_size=None)

    def validation_step(self, batch, batch_idx):
        from hypergen.generators.sft import sft_step

        nll = sft_step(self.generator, self._sft, batch, validation=True)["nll"]
        # sync_dist: under DDP each rank validates a share of the rows; every rank must see the same score,
        # or the best-checkpoint callback decides differently per rank
        self.log("val/nll", nll, on_epoch=True, batch_size=len(batch), sync_dist=True)
        if len(self._sft.val) > 1:  # the held-out control on unseen families: the same rows, another task's description
            other = sft_step(self.generator, self._sft, batch, validation=True, other=True)["nll"]
            self.log("val/nll_other", other, on_epoch=True, batch_size=len(batch), sync_dist=True)

    def on_validation_epoch_end(self):
        metrics = self.trainer.callback_metrics
        if "val/nll" in metrics and not self.trainer.sanity_checking:
            entry = {"step": self.global_step, "val_nll": float(metrics["val/nll"])}
            if "val/nll_other" in metrics:  # < val_nll: the description decides the adapter on unseen families
                entry["val_nll_other"] = float(metrics["val/nll_other"])
            from hypergen.generators.sft import adapter_spread

            spread = adapter_spread(self.generator, self._sft)  # how far descriptions move the adapter (None: < 2 families)
            if spread is not None:
                entry["adapter_spread"] = spread
                self.log("val/adapter_spread", spread, rank_zero_only=True)
            self.history.append(entry)

    def on_train_end(self):
        # every rank's weights after the last step, gathered to all: under DDP they agree only if the
        # gradients were synchronised (each rank trained on its own batches)
        self.rank_fingerprints = self.all_gather(weights_fingerprint(self.generator)).reshape(-1, 2).tolist()

    def on_save_checkpoint(self, checkpoint):
        checkpoint["hypergen_history"] = self.history  # the loss curve survives a kill and a resume

    def on_load_checkpoint(self, checkpoint):
        self.history = list(checkpoint.get("hypergen_history", []))

    def configure_optimizers(self):
        params = [p for p in self.generator.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        if not (self.cfg.warmup or self.cfg.lr_decay):
            return opt
        sched = torch.optim.lr_scheduler.LambdaLR(opt, partial(lr_factor, warmup=self.cfg.warmup, decay=self.cfg.lr_decay))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class _BestCheckpoint(pl.callbacks.ModelCheckpoint):
    """The best checkpoint on validation NLL. The step checkpoint (every ckpt_every steps) writes last.ckpt
    before that step's validation; this writes it again after, so a kill before the next save keeps the
    validation's history entry and the best score so far (without it, a worse later step could replace
    best.ckpt after a resume)."""

    def __init__(self, ckpt_every: int, **kw):
        super().__init__(**kw)
        self.ckpt_every = ckpt_every

    def on_validation_end(self, trainer, pl_module):
        super().on_validation_end(trainer, pl_module)
        if trainer.sanity_checking or trainer.global_step % self.ckpt_every:
            return
        last = Path(self.dirpath) / "last.ckpt"
        tmp = last.with_name("last.ckpt.tmp")
        trainer.save_checkpoint(tmp)  # every rank calls it (it ends in a barrier); rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, last)  # a kill mid-write leaves the old last.ckpt whole


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
    ckpt_dir = run_folder(generator, cfg, out, sft_data=sft_data, run_name=run_name)
    pl.seed_everything(cfg.seed, verbose=False)
    data = generator.training_examples()
    if len(data) == 0:
        raise HypergenError("No training examples: the zoo is empty.")
    if cfg.objective == "sft" and sft_data is not None and generator.checkpoint is None:
        generator.fit_conditions(torch.cat([t.cond for t in sft_data.tasks]))  # t2l centres and scales on its training descriptions
    validate = cfg.objective == "sft" and sft_data is not None and bool(sft_data.val)
    lit = LitGenerator(generator, cfg, data, sft=sft_data)
    from pytorch_lightning.callbacks import ModelCheckpoint

    ckpt = ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=cfg.ckpt_every, save_last=True, save_top_k=0)
    # the kept checkpoint: the best validation NLL (its score survives a resume inside last.ckpt)
    best = _BestCheckpoint(cfg.ckpt_every, dirpath=ckpt_dir, filename="best", monitor="val/nll", mode="min", save_top_k=1) if validate else None

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
        precision="bf16-mixed" if cfg.bf16 and cfg.accelerator != "cpu" and torch.cuda.is_available() else "32-true",
        logger=make_logger(_Cfg, ckpt_dir.parent.name, "generators"),  # runs/generators/<run>/version_N: each run's logs in its folder
        callbacks=[ckpt, *([best] if best else []), *progress_bars(cfg.progress)],
        enable_model_summary=False,
        enable_progress_bar=cfg.progress,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if validate else 0,
        val_check_interval=min(cfg.val_every, cfg.steps) if validate else None,
        check_val_every_n_epoch=None if validate else 1,  # val_every counts steps across a resume
        log_every_n_steps=cfg.log_every,
        use_distributed_sampler=False,  # the sampler already draws cfg.steps batches per rank
    )
    last = ckpt_dir / "last.ckpt"
    import warnings

    if cfg.objective == "sft":  # its batches are a function of (seed, rank, step): a mid-epoch resume is exact
        warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
    resumed_from = torch.load(last, map_location="cpu", weights_only=False)["global_step"] if last.is_file() else 0
    if trainer.global_rank == 0:
        state = f"a new run of {cfg.steps} steps" if not resumed_from else (
            f"resuming at step {resumed_from} of {cfg.steps}" if resumed_from < cfg.steps else f"done ({resumed_from} steps; more with a larger --steps)")
        print(f"Run folder {ckpt_dir.parent}: {state}.", file=sys.stderr, flush=True)  # stdout stays clean for --json
    t = time.perf_counter()
    trainer.fit(lit, ckpt_path=str(last) if last.is_file() else None)
    seconds = time.perf_counter() - t
    if best is not None and best.best_model_path:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=False)["state_dict"]
        lit.load_state_dict(state)  # keep the best on validation, not the last
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
        "steps_done": trainer.global_step,
        "resumed_from": resumed_from,
    }
    fingerprints = getattr(lit, "rank_fingerprints", None)  # set by on_train_end on every rank
    if fingerprints and trainer.world_size > 1:
        # the ranks' weights after the last step; equal (to float64 rounding) when DDP kept them in sync
        summary["rank_fingerprints"] = fingerprints
        summary["ranks_agree"] = all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9) for f in fingerprints for a, b in zip(f, fingerprints[0]))
        if not summary["ranks_agree"] and trainer.global_rank == 0:
            print(f"Warning: the {trainer.world_size} ranks ended with different weights (fingerprints {fingerprints}); "
                  "the saved generator is rank 0's.", file=sys.stderr, flush=True)
    if validate:
        summary["best_val_nll"] = float(best.best_model_score) if best.best_model_score is not None else None
        summary["best_checkpoint"] = best.best_model_path or None
    if sft_data is not None:
        summary["sft_tasks"] = {"train": len(sft_data.tasks), "val": len(sft_data.val), "families": len(sft_data.families),
                                "left_out_small": sft_data.n_small, "examples_truncated": sft_data.n_truncated, "examples_skipped": sft_data.n_skipped}
    if trainer.global_rank == 0:
        generator.save(out, extra={"train": asdict(cfg)})
        (out / "train.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def export_run(generator: Generator, cfg: TrainConfig, out: str | Path, *, sft_data=None, run_name: str | None = None, last: bool = False) -> dict:
    """Write the generator folder of a stopped (or running) run without training a step: from its best
    checkpoint on validation so far, or its last one when it has none or `last` is set (to score a later
    step than validation chose: docs/experiments.md, step 200 against 700). The run is found as
    train_generator finds it (run_folder): the same arguments, any RUN_ONLY setting (e.g. --steps)."""
    ckpt_dir = run_folder(generator, cfg, out, sft_data=sft_data, run_name=run_name)

    def val_nll(ckpt: dict) -> float | None:  # the score the best-checkpoint callback saved it for
        return next((float(s["current_score"]) for s in ckpt.get("callbacks", {}).values()
                     if isinstance(s, dict) and s.get("monitor") == "val/nll" and s.get("current_score") is not None), None)

    # best-v1.ckpt and the like can sit beside best.ckpt after a kill: the lowest score is the best
    bests = [] if last else [(p, torch.load(p, map_location="cpu", weights_only=False)) for p in sorted(ckpt_dir.glob("best*.ckpt"))]
    scored = [(val_nll(c), p, c) for p, c in bests if val_nll(c) is not None]
    if scored:
        score, path, ckpt = min(scored, key=lambda x: x[0])
    elif (ckpt_dir / "last.ckpt").is_file():
        score, path = None, ckpt_dir / "last.ckpt"
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    else:
        raise HypergenError(f"No checkpoint to export in {ckpt_dir}: this run has not saved one yet (every --ckpt-every steps); "
                            "give the same arguments as the run, or train it first.")
    lit = LitGenerator(generator, cfg, None)
    lit.load_state_dict(ckpt["state_dict"])  # strict: a checkpoint of other shapes is refused
    history = list(ckpt.get("hypergen_history", []))
    out = Path(out)
    summary = {
        "family": generator.family,
        "config": generator.config.to_dict(),
        "train": asdict(cfg),
        "exported_from": str(path),
        "step": ckpt["global_step"],
        "val_nll": score,
        "history": history,
        "final": history[-1] if history else None,
        "global_rank": 0,
    }
    generator.save(out, extra={"train": asdict(cfg)})
    (out / "train.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
