"""The public facade. The CLI and the Streamlit app call only these functions.

Heavy objects (base model, encoder, generators) are loaded once per process and kept resident, so a
second call costs only the work it asks for.
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import platform
from collections.abc import Sequence
from pathlib import Path

from hypergen import paths
from hypergen.errors import HypergenError

PACKAGES = ("hypergen", "torch", "transformers", "peft", "pytorch-lightning", "sentence-transformers", "wandb", "streamlit", "typer")


@functools.lru_cache(maxsize=4)
def resident(base: str | None = None, device: str = "auto"):
    """The process-wide ResidentModel for (base, device); loaded on first use."""
    from hypergen.base import load_base

    return load_base(base, device=device)


@functools.lru_cache(maxsize=2)
def encoder(name: str = "minilm"):
    from hypergen.text import load_encoder

    return load_encoder(name)


def info(base: str | None = None, device: str = "auto") -> dict:
    """Facts about this installation; loads nothing heavy beyond torch."""
    import torch

    from hypergen import assets
    from hypergen.base import pick_device

    base_path = Path(base).expanduser() if base else assets.smollm2_path()
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = md.version(p)
        except md.PackageNotFoundError:
            versions[p] = None
    return {
        "base_model": base_path.name if base else assets.SMOLLM2_NAME,
        "base_model_path": str(base_path),
        "base_model_ready": (base_path / "config.json").is_file(),
        "encoder": assets.MINILM_NAME,
        "encoder_path": str(assets.minilm_path()),
        "encoder_ready": (assets.minilm_path() / "config.json").is_file(),
        "device": str(pick_device(device)),
        "cuda_available": torch.cuda.is_available(),
        "home": str(paths.home()),
        "cache": {"models": str(paths.models_dir()), "downloads": str(paths.downloads_dir()), "data": str(paths.data_dir()), "runs": str(paths.runs_dir())},
        "python": platform.python_version(),
        "versions": versions,
    }


def answer(
    texts: Sequence[str] | str,
    *,
    adapter: str | Path | None = None,
    description: str | None = None,
    base: str | None = None,
    device: str = "auto",
    max_new_tokens: int = 64,
) -> list[str]:
    """Answer inputs with the resident base, optionally with a PEFT adapter folder active."""
    from hypergen.lora import LoraWeights

    if isinstance(texts, str):
        texts = [texts]
    if not texts or any(not t or not t.strip() for t in texts):
        raise HypergenError("Empty input: give the text to answer, e.g. hypergen answer \"What is 2+2?\".")
    if description is not None and not description.strip():
        raise HypergenError("Empty --description: describe the task in words or leave the option out.")
    weights = LoraWeights.load(adapter) if adapter is not None else None
    model = resident(base, device)
    if weights is None:
        model.deactivate()
    else:
        model.activate(weights)
    return model.answer(list(texts), description=description, max_new_tokens=max_new_tokens)


def setup(bigbench: bool = False) -> dict[str, str]:
    """Download and convert the models (and optionally BIG-bench) into the cache; idempotent."""
    from hypergen import assets

    return assets.setup(bigbench=bigbench)


# ---- zoo ---------------------------------------------------------------------------------------
def default_zoo_path() -> Path:
    """The shipped zoo (repo zoo/) when present, else the local build folder."""
    shipped = paths.REPO_ROOT / "zoo"
    return shipped if (shipped / "manifest.json").is_file() else paths.home() / "zoo" / "bigbench"


def zoo(path: str | Path | None = None):
    from hypergen.zoo.store import Zoo

    return Zoo(path or default_zoo_path())


def zoo_list(path: str | Path | None = None) -> list[dict]:
    """One dict per expert: name, description, steps, metric, base and expert scores."""
    z = zoo(path)
    return [
        {
            "name": r.name,
            "description": r.description,
            "steps": r.steps,
            "metric": r.metric,
            "base_score": round(r.base_score["main"], 4),
            "expert_score": round(r.expert_score["main"], 4),
            "gain": round(r.gain, 4),
        }
        for r in z.records()
    ]


def zoo_build(cfg) -> Path:
    """Build or resume a zoo (BuildConfig); returns its folder."""
    from hypergen.zoo.build import build_zoo

    return build_zoo(cfg).root


def zoo_multitask(cfg, steps: int = 400, per_task: int = 100) -> dict:
    from dataclasses import asdict

    from hypergen.zoo.build import build_multitask

    return asdict(build_multitask(cfg, steps=steps, per_task=per_task))


def zoo_pack(source: str | Path, dest: str | Path) -> Path:
    """Copy a built zoo into a compact shippable one (fp16, final adapters only)."""
    return zoo(source).pack(dest).root
