"""What every generator shares: its config and the Generator base class with the generate() template.

A generator maps a description embedding (D,) to LoRA weights. It is a plain nn.Module (runs without
Lightning) built on an ExpertBank (bank.py): the zoo as tensors. A family subclasses Generator,
declares what it can do in class attributes, implements sample(), and registers itself with one
register_generator call (registry.py). Checkpoints: checkpoint.py.
"""

from __future__ import annotations

import time
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from hypergen.errors import HypergenError
from hypergen.generators.bank import ExpertBank
from hypergen.generators.results import GenerationResult, Neighbor, Sampled

# Below this cosine similarity to every expert, a description is outside the zoo's range: we still
# generate, but say so. MiniLM puts unrelated English sentences at ~0.0-0.2 and paraphrases at >0.6;
# 0.3 sits between the two (a judgement, not tuned on data). The 31 held-out tasks' descriptions have
# cosine 0.26-0.65 to their nearest expert (docs/experiments.md, "Does a description say which adapter helps").
OUT_OF_RANGE = 0.3


@dataclass
class GeneratorConfig:
    """Fields every family has. Subclasses add their own, each documented.

    top_k: experts reported as neighbours (and used, for methods that mix experts).
    temperature: softmax temperature over cosine similarities for mixing weights.
    seed: default sampling seed, so `generate` is reproducible.
    """

    # fields that say only how a trained generator generates, not what it learns: left out of the run's
    # identity (train.run_folder), so `--export --set FIELD=...` writes another setting of the same run
    SERVE_ONLY: ClassVar[tuple[str, ...]] = ()

    top_k: int = 4
    temperature: float = 0.05
    seed: int = 0

    def __post_init__(self):
        if self.top_k < 1:
            raise HypergenError(f"top_k must be >= 1; got {self.top_k}.")
        if self.temperature <= 0:
            raise HypergenError(f"temperature must be > 0; got {self.temperature}.")

    def to_dict(self) -> dict:
        return asdict(self)

    def identity(self) -> dict:
        """The fields that decide what training learns: to_dict less SERVE_ONLY."""
        return {k: v for k, v in self.to_dict().items() if k not in self.SERVE_ONLY}

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "the checkpoint is from another version"):
        """The config of `d`, refusing fields it does not have (`source`: why that happens, for the message)."""
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise HypergenError(f"{cls.__name__} has no field(s) {sorted(unknown)}; {source}. Its fields: {', '.join(f.name for f in fields(cls))}.")
        return cls(**d)

    @classmethod
    def parse(cls, pairs: list[str], *, family: str) -> dict:
        """{field: value} from the command line's KEY=VALUE strings (`hypergen train t2l --set noise=0.5`),
        each value read as its field's type; an unknown field or an unreadable value is refused."""
        defaults = {f.name: f.default for f in fields(cls) if f.default is not MISSING}
        out = {}
        for pair in pairs:
            key, sep, text = pair.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or not key:
                raise HypergenError(f"--set takes KEY=VALUE, e.g. --set noise=0.5; got {pair!r}.")
            if key not in defaults:
                raise HypergenError(f"The {family} family has no setting {key!r}; its settings: {', '.join(defaults)}.")
            kind = type(defaults[key])
            if kind not in _READERS:
                raise HypergenError(f"--set {key}: the {family} family's {key} is not a number, a flag or a text; set it from Python (api.train).")
            try:
                out[key] = _READERS[kind][0](text)
            except (ValueError, KeyError):
                raise HypergenError(f"--set {key}: {text!r} is not {_READERS[kind][1]} (its default is {defaults[key]!r}).") from None
        return out


# --set's readers: the type of a config field's default -> (read the text, what it must be)
_READERS = {
    bool: (lambda t: {"true": True, "1": True, "false": False, "0": False}[t.lower()], "true or false"),
    int: (int, "a whole number"),
    float: (float, "a number"),
    str: (str, "text"),
}


class Generator(nn.Module):
    """Base class: a family subclasses it, declares what it can do, and implements sample() (and
    training_loss() when trainable). register_generator sets `family` and `Config`."""

    family: ClassVar[str] = ""
    Config: ClassVar[type[GeneratorConfig]] = GeneratorConfig
    # What the family can do. The eval, the CLI and the app read these; no list of names lives elsewhere.
    uses_description: ClassVar[bool] = True  # False: the adapter ignores the description (multitask); the eval runs no controls
    stochastic: ClassVar[bool] = False  # samples > 1 draw different adapters (else they repeat one)
    trainable: ClassVar[bool] = False  # has learned parameters: loads a checkpoint, `hypergen train` fits it
    objectives: ClassVar[tuple[str, ...]] = ()  # training objectives it supports: "recon", "sft" (adapter_for_training)
    conditioning: ClassVar[tuple[str, ...]] = ()  # extra conditions generate(**extra) passes to sample(), e.g. icm's task_vector
    # state-dict prefixes only the training loss uses (e.g. a CVAE's posterior encoder): saved apart in
    # training.safetensors, which generators/ does not ship; generation never needs it
    training_only: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: GeneratorConfig, bank: ExpertBank):
        super().__init__()
        self.config = config
        self.bank = bank
        self.layout = bank.layout
        self.inference_only = False  # loaded without its training-only tensors: generates, cannot train further
        self.checkpoint: Path | None = None  # the folder it was loaded from (load_generator)

    # families implement these
    def sample(self, cond: torch.Tensor, n: int, gen: torch.Generator, extra: dict[str, torch.Tensor] | None = None) -> Sampled:
        """cond: (D,) unit embedding -> n flat adapters. extra: the family's `conditioning` given to generate()."""
        raise NotImplementedError

    def training_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        raise HypergenError(f"The {self.family} generator has nothing to train.")

    def adapter_for_training(self, cond: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
        """Differentiable flat adapters (B, P) for the sft objective, plus extra loss terms."""
        raise HypergenError(f"The {self.family} generator cannot train with objective 'sft'; use --objective recon.")

    def fit_conditions(self, emb: torch.Tensor) -> None:
        """Before sft training from scratch, the training tasks' description embeddings (N, D): a family that
        normalises its input on them (t2l) fits that here; the others need nothing."""

    def training_examples(self) -> torch.utils.data.Dataset:
        """(expert index, checkpoint index, variant index) triples over the bank; families may override."""
        items = [(i, t, v) for i in range(len(self.bank)) for t in range(len(self.bank.traj[i])) for v in range(len(self.bank.variants[i]))]
        return _Triples(items)

    # shared machinery
    def batch_tensors(self, batch: torch.Tensor) -> dict:
        """(B, 3) triples -> conditions (B, D), targets (B, P), expert index (B,)."""
        i, t, v = batch.unbind(1)
        cond = torch.stack([self.bank.variants[a][b] for a, b in zip(i.tolist(), v.tolist())]).to(self.bank.emb.device)
        target = torch.stack([self.bank.traj[a][b] for a, b in zip(i.tolist(), t.tolist())]).to(self.bank.emb.device)
        return {"cond": cond, "target": target, "index": i.to(self.bank.emb.device)}

    @torch.no_grad()
    def generate(self, cond: torch.Tensor, *, description: str = "", samples: int = 1, seed: int | None = None, **extra) -> GenerationResult:
        """cond (D,) -> the adapter (the mean of `samples` draws) and what to judge it by. `extra`: the
        family's extra conditions by name (see `conditioning`); None values are left out."""
        if samples < 1:
            raise HypergenError(f"--samples must be >= 1; got {samples}.")
        unknown = sorted(set(extra) - set(self.conditioning))
        if unknown:
            raise HypergenError(f"The {self.family} generator takes no {', '.join(unknown)}; its extra conditions: {', '.join(self.conditioning) or 'none'}.")
        was_training = self.training
        self.eval()
        t = time.perf_counter()
        gen = torch.Generator(device=cond.device).manual_seed(self.config.seed if seed is None else seed)
        out = self.sample(cond.float(), samples, gen, {k: v for k, v in extra.items() if v is not None})
        t_gen = (time.perf_counter() - t) * 1000
        self.train(was_training)
        sims = self.bank.similarities(cond[None].float())[0]
        k = min(self.config.top_k, len(self.bank))
        top = sims.topk(k)
        weights = out.neighbor_weights or {}
        # the experts the method used (by weight), then the rest of the top-k by similarity
        idx = sorted(weights, key=lambda j: -weights[j]) + [j for j in top.indices.tolist() if j not in weights]
        neighbors = [Neighbor(self.bank.names[j], float(sims[j]), round(weights[j], 4) if j in weights else None) for j in idx]
        base = self.bank.meta.get("base_model", "")
        flat = out.flat
        mean = flat.mean(0)
        if out.adapter is not None:
            adapter, drawn = out.adapter, [out.adapter] * samples
        else:
            drawn = [self.layout.unflatten(f, base) for f in flat]
            adapter = drawn[0] if samples == 1 else self.layout.unflatten(mean, base)
        uncertainty = None
        if samples > 1 or out.variance is not None:
            uncertainty = {}
            if samples > 1:
                # relative spread: std over samples / mean magnitude, over all weights
                uncertainty["sample_rel_std"] = float(flat.std(0).mean() / (mean.abs().mean() + 1e-12))
                uncertainty["samples"] = samples
            if out.variance is not None:
                uncertainty["posterior_rel_std"] = float(out.variance.sqrt().mean() / (mean.abs().mean() + 1e-12))
        max_sim = float(sims.max())
        res = GenerationResult(
            weights=adapter,
            generator=self.family,
            description=description,
            neighbors=neighbors,
            max_similarity=max_sim,
            in_range=max_sim >= OUT_OF_RANGE,
            samples=drawn if samples > 1 else [],
            uncertainty=uncertainty,
            timings_ms={"generate": t_gen},
            checkpoint=self.checkpoint,
        )
        if not res.in_range:
            res.warnings.append(f"The description is far from every expert in the zoo (max similarity {max_sim:.2f} < {OUT_OF_RANGE}): the adapter is a guess outside the zoo's range.")
        return res

    # ---- checkpoints (checkpoint.py) -----------------------------------------------------------
    def state_for_save(self) -> dict[str, torch.Tensor]:
        """Learned tensors only; the bank is rebuilt from the zoo at load time."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("bank.")}

    def save(self, folder: str | Path, extra: dict | None = None) -> Path:
        from hypergen.generators.checkpoint import save_generator

        return save_generator(self, folder, extra)


class _Triples(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = torch.tensor(items, dtype=torch.long)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]
