"""What every generator shares: the expert bank, the result object, the registry, save/load.

A generator maps a description embedding (D,) to LoRA weights. It is a plain nn.Module (runs without
Lightning) built on an ExpertBank: the zoo as tensors (embeddings, flattened adapters, trajectories).
Flattened adapters live in one fixed Layout so that every family speaks the same vector language.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from hypergen.errors import HypergenError
from hypergen.lora import LoraWeights

# Below this cosine similarity to every expert, a description is outside the zoo's range: we still
# generate, but say so. MiniLM puts unrelated English sentences at ~0.0-0.2 and paraphrases at >0.6;
# 0.3 is where BIG-bench descriptions stop having a topically related expert (docs/generators.md).
OUT_OF_RANGE = 0.3


# ---- layout: LoraWeights <-> one flat vector -----------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """Module paths with their (r, in) and (out, r) shapes, in layer order; flat = [A0, B0, A1, B1, ...]."""

    paths: tuple[str, ...]
    a_shapes: tuple[tuple[int, int], ...]
    b_shapes: tuple[tuple[int, int], ...]
    alpha: float

    @classmethod
    def of(cls, w: LoraWeights) -> Layout:
        return cls(tuple(w.modules), tuple(tuple(a.shape) for a, _ in w.modules.values()), tuple(tuple(b.shape) for _, b in w.modules.values()), w.alpha)

    @property
    def rank(self) -> int:
        return self.a_shapes[0][0]

    @property
    def sizes(self) -> list[int]:
        """Flat sizes of [A0, B0, A1, B1, ...]."""
        return [n for a, b in zip(self.a_shapes, self.b_shapes) for n in (a[0] * a[1], b[0] * b[1])]

    @property
    def numel(self) -> int:
        return sum(self.sizes)

    @property
    def module_types(self) -> list[str]:
        return sorted({p.rsplit(".", 1)[-1] for p in self.paths})

    def layer_of(self, path: str) -> int:
        parts = path.split(".")
        return int(parts[parts.index("layers") + 1])

    def flatten(self, w: LoraWeights) -> torch.Tensor:
        if tuple(w.modules) != self.paths:
            raise HypergenError("Adapter modules differ from the generator's layout: it was made for another base or LoRA spec.")
        # fold a different alpha into B so every flat vector means the same dW
        k = w.scaling / (self.alpha / self.rank)
        return torch.cat([t.reshape(-1).float() for a, b in w.modules.values() for t in (a, b * k)])

    def unflatten(self, flat: torch.Tensor, base_model: str = "") -> LoraWeights:
        """(P,) -> LoraWeights; views into `flat`, no copy."""
        parts = torch.split(flat, self.sizes)
        mods = {p: (parts[2 * i].view(self.a_shapes[i]), parts[2 * i + 1].view(self.b_shapes[i])) for i, p in enumerate(self.paths)}
        return LoraWeights(mods, self.alpha, base_model)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Layout:
        return cls(tuple(d["paths"]), tuple(map(tuple, d["a_shapes"])), tuple(map(tuple, d["b_shapes"])), d["alpha"])


# ---- the zoo as tensors --------------------------------------------------------------------------
class ExpertBank(nn.Module):
    """Experts as tensors: description embeddings, final adapters and trajectories, flattened.

    names: N expert names. emb: (N, D) embedding of each expert's default description.
    variants: list of (k_i, D) embeddings of every description variant (training augmentation).
    flat: (N, P) final adapters. traj: list of (t_i, P) trajectory checkpoints (final included).
    """

    def __init__(self, names, emb, variants, flat, traj, layout: Layout, meta: dict):
        super().__init__()
        self.names = list(names)
        self.layout = layout
        self.meta = dict(meta)
        self.register_buffer("emb", emb.float(), persistent=False)
        self.register_buffer("flat", flat.float(), persistent=False)
        self.variants = [v.float() for v in variants]
        self.traj = [t.float() for t in traj]

    @classmethod
    def from_zoo(cls, zoo, encoder, *, trajectories: bool = True, names: list[str] | None = None) -> ExpertBank:
        records = [r for r in zoo.records() if names is None or r.name in names]
        if not records:
            raise HypergenError(f"The zoo at {zoo.root} has no experts; build it with `hypergen zoo build`.")
        first = zoo.weights(records[0].name)
        layout = Layout.of(first)
        flat, traj, variants = [], [], []
        for r in records:
            flat.append(layout.flatten(zoo.weights(r.name)))
            traj.append(torch.stack([layout.flatten(w) for _, w in zoo.trajectory(r.name)]) if trajectories else flat[-1][None])
            variants.append(encoder.encode(r.descriptions))
        emb = torch.stack([v[0] for v in variants])
        meta = {"base_model": first.base_model or zoo.meta.get("base_model", ""), "encoder": encoder.name, "zoo": str(zoo.root)}
        return cls([r.name for r in records], emb, variants, torch.stack(flat), traj, layout, meta)

    def __len__(self) -> int:
        return len(self.names)

    def similarities(self, cond: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of (B, D) unit embeddings to every expert: (B, N)."""
        return cond @ self.emb.T

    def top_k(self, cond: torch.Tensor, k: int, temperature: float, exclude: torch.Tensor | None = None):
        """(sims (B, k), idx (B, k), softmax weights (B, k)); `exclude` (B,) masks one expert per row."""
        sims = self.similarities(cond)
        if exclude is not None:
            sims = sims.scatter(1, exclude[:, None], float("-inf"))
        k = min(k, len(self) - (exclude is not None))
        s, idx = sims.topk(k, dim=1)
        return s, idx, torch.softmax(s / temperature, dim=1)


# ---- results -------------------------------------------------------------------------------------
@dataclass
class Neighbor:
    name: str
    similarity: float
    weight: float | None = None  # the weight the method gave this expert, where it mixes experts


@dataclass
class GenerationResult:
    """What generate() returns: the adapter and everything a user needs to judge it."""

    weights: LoraWeights
    generator: str
    description: str
    neighbors: list[Neighbor]
    max_similarity: float
    in_range: bool
    samples: list[LoraWeights] = field(default_factory=list)
    uncertainty: dict | None = None  # spread over samples (and the method's own variance, where it has one)
    timings_ms: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """JSON-friendly view (no tensors)."""
        return {
            "generator": self.generator,
            "description": self.description,
            "neighbors": [asdict(n) for n in self.neighbors],
            "max_similarity": round(self.max_similarity, 4),
            "in_range": self.in_range,
            "samples": max(1, len(self.samples)),
            "uncertainty": self.uncertainty,
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
            "warnings": self.warnings,
            "rank": self.weights.rank,
            "params": self.weights.num_params(),
        }


# ---- configs and the generator base class --------------------------------------------------------
@dataclass
class GeneratorConfig:
    """Fields every family has. Subclasses add their own, each documented.

    top_k: experts reported as neighbours (and used, for methods that mix experts).
    temperature: softmax temperature over cosine similarities for mixing weights.
    seed: default sampling seed, so `generate` is reproducible.
    """

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

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise HypergenError(f"{cls.__name__} has no field(s) {sorted(unknown)}; the checkpoint is from another version.")
        return cls(**d)


@dataclass
class Sampled:
    """What a family's sample() returns: flat adapters plus optional method-specific facts."""

    flat: torch.Tensor  # (n, P)
    neighbor_weights: dict[int, float] | None = None  # expert index -> weight, for methods that mix
    variance: torch.Tensor | None = None  # (P,) the method's own predictive variance, if it has one


class Generator(nn.Module):
    """Base class: a family subclasses it, sets `family`/`Config`, and implements sample() (and
    training_loss() when trainable)."""

    family: ClassVar[str] = ""
    Config: ClassVar[type[GeneratorConfig]] = GeneratorConfig
    trainable: ClassVar[bool] = False
    # state-dict prefixes only the training loss uses (e.g. a CVAE's posterior encoder): saved apart in
    # training.safetensors, which generators/ does not ship; generation never needs it
    training_only: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: GeneratorConfig, bank: ExpertBank):
        super().__init__()
        self.config = config
        self.bank = bank
        self.layout = bank.layout
        self.inference_only = False  # loaded without its training-only tensors: generates, cannot train further

    # families implement these
    def sample(self, cond: torch.Tensor, n: int, gen: torch.Generator) -> Sampled:
        """cond: (D,) unit embedding -> n flat adapters."""
        raise NotImplementedError

    def training_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        raise HypergenError(f"The {self.family} generator has nothing to train.")

    def adapter_for_training(self, cond: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
        """Differentiable flat adapters (B, P) for the sft objective, plus extra loss terms."""
        raise HypergenError(f"The {self.family} generator cannot train with objective 'sft'; use --objective recon.")

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
    def generate(self, cond: torch.Tensor, *, description: str = "", samples: int = 1, seed: int | None = None) -> GenerationResult:
        if samples < 1:
            raise HypergenError(f"--samples must be >= 1; got {samples}.")
        was_training = self.training
        self.eval()
        t = time.perf_counter()
        gen = torch.Generator(device=cond.device).manual_seed(self.config.seed if seed is None else seed)
        out = self.sample(cond.float(), samples, gen)
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
        ws = [self.layout.unflatten(f, base) for f in flat]
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
            weights=ws[0] if samples == 1 else self.layout.unflatten(mean, base),
            generator=self.family,
            description=description,
            neighbors=neighbors,
            max_similarity=max_sim,
            in_range=max_sim >= OUT_OF_RANGE,
            samples=ws if samples > 1 else [],
            uncertainty=uncertainty,
            timings_ms={"generate": t_gen},
        )
        if not res.in_range:
            res.warnings.append(f"The description is far from every expert in the zoo (max similarity {max_sim:.2f} < {OUT_OF_RANGE}): the adapter is a guess outside the zoo's range.")
        return res

    # ---- checkpoints ---------------------------------------------------------------------------
    def state_for_save(self) -> dict[str, torch.Tensor]:
        """Learned tensors only; the bank is rebuilt from the zoo at load time."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("bank.")}

    def save(self, folder: str | Path, extra: dict | None = None) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "family": self.family,
            "config": self.config.to_dict(),
            "layout": self.layout.to_dict(),
            "base_model": self.bank.meta.get("base_model", ""),
            "encoder": self.bank.meta.get("encoder", ""),
            "experts": self.bank.names,
            **(extra or {}),
        }
        state = {k: v.detach().to(torch.float16 if v.is_floating_point() else v.dtype).contiguous().cpu() for k, v in self.state_for_save().items()}
        train_only = {k: v for k, v in state.items() if k.startswith(self.training_only)} if self.training_only else {}
        if state:
            save_file({k: v for k, v in state.items() if k not in train_only}, str(folder / "generator.safetensors"))
        if train_only:
            save_file(train_only, str(folder / TRAINING_FILE))
        (folder / "generator.json").write_text(json.dumps(meta, indent=2, default=str))
        return folder


class _Triples(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = torch.tensor(items, dtype=torch.long)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


# ---- registry ------------------------------------------------------------------------------------
_REGISTRY: dict[str, type[Generator]] = {}


def register_generator(name: str, config_cls: type[GeneratorConfig], generator_cls: type[Generator]) -> None:
    """One call registers a family; the CLI, API and app list what is registered."""
    if name in _REGISTRY:
        raise HypergenError(f"A generator named {name!r} is already registered ({_REGISTRY[name].__module__}).")
    generator_cls.family = name
    generator_cls.Config = config_cls
    _REGISTRY[name] = generator_cls


def registered() -> dict[str, type[Generator]]:
    return dict(_REGISTRY)


def get_family(name: str) -> type[Generator]:
    if name not in _REGISTRY:
        raise HypergenError(f"Unknown generator {name!r}; registered: {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[name]


def build(name: str, bank: ExpertBank, **config) -> Generator:
    cls = get_family(name)
    return cls(cls.Config(**config), bank)


TRAINING_FILE = "training.safetensors"  # training-only tensors (not shipped)


def load_generator(folder: str | Path, bank: ExpertBank, *, family: str | None = None, base_model: str | None = None) -> Generator:
    """Rebuild a saved generator on `bank`; refuses another family's or another base model's files."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta_path = folder / "generator.json"
    if not meta_path.is_file():
        raise HypergenError(f"{folder} is not a generator checkpoint (no generator.json); train one with `hypergen train`.")
    meta = json.loads(meta_path.read_text())
    if family and meta.get("family") != family:
        raise HypergenError(f"{folder} holds a {meta.get('family')!r} generator, not {family!r}: pass the {family} checkpoint.")
    cls = get_family(meta["family"])
    if base_model and meta.get("base_model") and meta["base_model"] != base_model:
        raise HypergenError(f"Generator {folder} was trained for base model {meta['base_model']!r}, but the loaded base is {base_model!r}.")
    layout = Layout.from_dict(meta["layout"])
    if layout.paths != bank.layout.paths or layout.a_shapes != bank.layout.a_shapes:
        raise HypergenError(f"Generator {folder} was trained on a zoo with another LoRA layout than the zoo at {bank.meta.get('zoo')}.")
    gen = cls(cls.Config.from_dict(meta["config"]), bank)
    wfile = folder / "generator.safetensors"
    if wfile.is_file():
        state = load_file(str(wfile))
        tfile = folder / TRAINING_FILE
        if tfile.is_file():
            state.update(load_file(str(tfile)))
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        missing, unexpected = gen.load_state_dict(state, strict=False)
        missing = [m for m in missing if not m.startswith("bank.")]
        if cls.training_only and not tfile.is_file():
            gen.inference_only = True
            missing = [m for m in missing if not m.startswith(cls.training_only)]
        if missing or unexpected:
            raise HypergenError(f"Generator {folder} does not match the {meta['family']} family's parameters (missing {missing[:3]}, unexpected {unexpected[:3]}).")
    return gen
