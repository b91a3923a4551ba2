"""LoraWeights: the adapter every part of hypergen passes around.

One object holds, per targeted linear module of the base, the LoRA factors A [r, in] and B [out, r]
plus the scale alpha; delta W = (alpha / r) * B @ A. It saves and loads as a standard PEFT adapter
folder (adapter_config.json + adapter_model.safetensors) so any peft user can load what hypergen makes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from hypergen.errors import HypergenError

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"

# PEFT's key layout: base_model.model.<module path>.lora_A.weight ('.default' appears only in memory).
_PEFT_KEY = re.compile(r"^base_model\.model\.(?P<path>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


@dataclass
class LoraWeights:
    """Per-module LoRA factors for one base model.

    modules maps a module path of the base (e.g. "model.layers.0.self_attn.q_proj") to (A, B),
    A: (r, in), B: (out, r). Every module has the same rank r.
    """

    modules: dict[str, tuple[torch.Tensor, torch.Tensor]]
    alpha: float
    base_model: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.modules:
            raise HypergenError("LoraWeights needs at least one module; got none.")
        ranks = {a.shape[0] for a, _ in self.modules.values()}
        if len(ranks) != 1:
            raise HypergenError(f"All modules must share one LoRA rank; found ranks {sorted(ranks)}.")
        for path, (a, b) in self.modules.items():
            if a.ndim != 2 or b.ndim != 2 or b.shape[1] != a.shape[0]:
                raise HypergenError(
                    f"{path}: A must be (r, in) and B (out, r); got A {tuple(a.shape)} and B {tuple(b.shape)}."
                )

    # ---- shape facts ---------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return next(iter(self.modules.values()))[0].shape[0]

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    @property
    def target_modules(self) -> list[str]:
        """Module names as peft's target_modules lists them (q_proj, v_proj, ...)."""
        return sorted({p.rsplit(".", 1)[-1] for p in self.modules})

    def num_params(self) -> int:
        return sum(a.numel() + b.numel() for a, b in self.modules.values())

    def delta(self, path: str) -> torch.Tensor:
        """The full weight update of one module, (out, in)."""
        a, b = self.modules[path]
        return self.scaling * (b.float() @ a.float())

    def to(self, device=None, dtype=None) -> LoraWeights:
        mods = {p: (a.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype)) for p, (a, b) in self.modules.items()}
        return LoraWeights(mods, self.alpha, self.base_model, dict(self.meta))

    # ---- checks against a base model -----------------------------------------------------------
    def validate_for(self, model: torch.nn.Module, base_name: str = "") -> None:
        """Raise a HypergenError naming the module and both shapes if this adapter does not fit `model`."""
        made_for = f" (made for {self.base_model!r}, loaded base is {base_name!r})" if self.base_model and base_name and self.base_model != base_name else ""
        for path, (a, b) in self.modules.items():
            try:
                mod = model.get_submodule(path)
            except AttributeError:
                raise HypergenError(
                    f"Adapter targets {path}, which the base model does not have{made_for}: "
                    "it was made for another architecture."
                ) from None
            mod = getattr(mod, "base_layer", mod)  # a peft-wrapped Linear keeps the original inside
            if not isinstance(mod, torch.nn.Linear):
                raise HypergenError(f"Adapter targets {path}, which is a {type(mod).__name__}, not a Linear layer.")
            if (a.shape[1], b.shape[0]) != (mod.in_features, mod.out_features):
                raise HypergenError(
                    f"Adapter targets {path} with in={a.shape[1]} out={b.shape[0]} but the base has "
                    f"in={mod.in_features} out={mod.out_features}: it was made for another base model{made_for}."
                )

    # ---- PEFT folder format --------------------------------------------------------------------
    def peft_config(self):
        from peft import LoraConfig

        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            # Full module paths: an adapter may cover only some layers, and peft matches exact names.
            target_modules=sorted(self.modules),
            lora_dropout=0.0,
            bias="none",
            task_type="CAUSAL_LM",
            base_model_name_or_path=self.base_model or None,
        )

    def save_config(self, folder: str | Path) -> None:
        """adapter_config.json, with target_modules in a stable order (peft keeps them in a set, whose
        order changes from run to run: the same adapter would otherwise never write the same file)."""
        self.peft_config().save_pretrained(str(folder))
        path = Path(folder) / "adapter_config.json"
        cfg = json.loads(path.read_text())
        if isinstance(cfg.get("target_modules"), list):
            cfg["target_modules"] = sorted(cfg["target_modules"])
        path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")

    def save(self, folder: str | Path) -> Path:
        """Write a PEFT adapter folder that `PeftModel.from_pretrained(base, folder)` loads cleanly."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for path, (a, b) in self.modules.items():
            tensors[f"base_model.model.{path}.lora_A.weight"] = a.detach().cpu().contiguous()
            tensors[f"base_model.model.{path}.lora_B.weight"] = b.detach().cpu().contiguous()
        save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
        self.save_config(folder)
        if self.meta:
            (folder / "hypergen.json").write_text(json.dumps(self.meta, indent=2, default=str))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> LoraWeights:
        """Load any PEFT LoRA adapter folder (ours or peft's own)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        if not folder.is_dir():
            raise HypergenError(f"Adapter folder {folder} does not exist: pass a folder written by `hypergen generate --out` or peft's save_pretrained.")
        cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        if not cfg_path.is_file():
            raise HypergenError(f"{folder} has no {CONFIG_NAME}: it is not a PEFT adapter folder.")
        if not w_path.is_file():
            hint = " (found adapter_model.bin: re-save it with safe_serialization=True; hypergen loads only safetensors)" if (folder / "adapter_model.bin").exists() else ""
            raise HypergenError(f"{folder} has no {WEIGHTS_NAME}{hint}.")
        try:
            cfg = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise HypergenError(f"{cfg_path} is not valid JSON (line {e.lineno}): {e.msg}.") from None
        if cfg.get("peft_type", "LORA") != "LORA":
            raise HypergenError(f"{folder} holds a {cfg.get('peft_type')} adapter; hypergen handles LoRA only.")
        if cfg.get("use_dora"):
            raise HypergenError(f"{folder} is a DoRA adapter; hypergen handles plain LoRA only.")
        try:
            tensors = load_file(str(w_path))
        except (SafetensorError, OSError, ValueError) as e:
            raise HypergenError(f"{w_path} is not a readable safetensors file (corrupt or truncated?): {e}. Re-export the adapter.") from None
        pairs: dict[str, dict[str, torch.Tensor]] = {}
        for key, t in tensors.items():
            m = _PEFT_KEY.match(key)
            if not m:
                raise HypergenError(f"{w_path}: unexpected tensor {key!r}; hypergen loads LoRA A/B weights of linear layers only.")
            pairs.setdefault(m["path"], {})[m["ab"]] = t
        modules = {}
        for path, ab in pairs.items():
            if set(ab) != {"A", "B"}:
                raise HypergenError(f"{w_path}: module {path} has lora_{''.join(ab)} but not both lora_A and lora_B.")
            modules[path] = (ab["A"], ab["B"])
        r = cfg.get("r", 8)
        alpha = float(cfg.get("lora_alpha", r))
        if cfg.get("use_rslora"):
            alpha = alpha * math.sqrt(r)  # rsLoRA scales by alpha/sqrt(r); fold it so alpha/r holds
        meta = json.loads((folder / "hypergen.json").read_text()) if (folder / "hypergen.json").is_file() else {}
        return cls(dict(sorted(modules.items(), key=lambda kv: _natural_key(kv[0]))), alpha, cfg.get("base_model_name_or_path") or "", meta)


def _natural_key(path: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def mix(
    adapters: Sequence[LoraWeights],
    coefs: Sequence[float],
    how: Literal["concat", "average"] = "concat",
) -> LoraWeights:
    """Weighted mix of adapters over the same modules.

    concat: exact mix of the weight updates, sum_k c_k * dW_k, by stacking factors (rank grows to sum r_k).
    average: weighted sums of A and B separately at the common rank (LoraHub); not sum_k c_k dW_k, but
    the rank stays fixed, which generators and hot swapping like.

    """
    if not adapters or len(adapters) != len(coefs):
        raise HypergenError(f"mix needs one coefficient per adapter; got {len(adapters)} adapters and {len(coefs)} coefficients.")
    paths = list(adapters[0].modules)
    for ad in adapters[1:]:
        if set(ad.modules) != set(paths):
            raise HypergenError("mix needs adapters over the same modules; these target different layers.")
    out = {}
    if how == "concat":
        for p in paths:
            # dW = sum_k c_k s_k B_k A_k = [c_k s_k B_k]_k (out, sum r) @ [A_k]_k (sum r, in); alpha = sum r keeps scaling 1
            a = torch.cat([ad.modules[p][0].float() for ad in adapters], 0)
            b = torch.cat([c * ad.scaling * ad.modules[p][1].float() for ad, c in zip(adapters, coefs)], 1)
            out[p] = (a, b)
        return LoraWeights(out, float(out[paths[0]][0].shape[0]), adapters[0].base_model, {"mixed": len(adapters)})
    if how == "average":
        if len({ad.rank for ad in adapters}) != 1:
            raise HypergenError("mix(how='average') needs adapters of one rank; use how='concat'.")
        r = adapters[0].rank
        for p in paths:
            # LoraHub: A = sum c_k A_k, B = sum c_k s_k B_k (each scale folded into B so alphas may differ)
            a = sum(c * ad.modules[p][0].float() for ad, c in zip(adapters, coefs))
            b = sum(c * ad.scaling * ad.modules[p][1].float() for ad, c in zip(adapters, coefs))
            out[p] = (a, b)
        return LoraWeights(out, float(r), adapters[0].base_model, {"mixed": len(adapters)})
    raise HypergenError(f"Unknown mix method {how!r}; use 'concat' or 'average'.")
