"""LoraWeights: the adapter every part of hypergen passes around.

One object holds, per targeted linear module of the base, the LoRA factors A [r, in] and B [out, r]
plus the scale alpha; delta W = (alpha / r) * B @ A. It saves and loads as a standard PEFT adapter
folder (adapter_config.json + adapter_model.safetensors) so any peft user can load what hypergen makes.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from hypergen.errors import HypergenError
from hypergen.identity import hub_id, short_name

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
META_NAME = "hypergen.json"  # what hypergen knows about an adapter (generator, description, ...)
FILE_MODE = 0o644
# Largest alpha/r load accepts: real adapters sit near 1-16; 1e30 only turns every answer into garbage.
MAX_SCALE = 1e4

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
        made_for = f" (made for {self.base_model!r}, loaded base is {base_name!r})" if self.base_model and base_name and short_name(self.base_model) != short_name(base_name) else ""
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
            base_model_name_or_path=hub_id(self.base_model) or None,  # AutoPeftModelForCausalLM loads the base from it
        )

    def config_json(self) -> str:
        """adapter_config.json's text, with every list in a stable order (peft keeps target_modules in a
        set, whose order changes from run to run: the same adapter would otherwise never write the same file)."""
        cfg = {k: sorted(v) if isinstance(v, set) else v for k, v in self.peft_config().to_dict().items()}
        if isinstance(cfg.get("target_modules"), list):
            cfg["target_modules"] = sorted(cfg["target_modules"])
        return json.dumps(cfg, indent=2, sort_keys=True) + "\n"

    def save_config(self, folder: str | Path) -> None:
        """adapter_config.json alone (packed zoos store their int8 tensors beside it)."""
        path = Path(folder) / CONFIG_NAME
        path.write_text(self.config_json())
        os.chmod(path, FILE_MODE)

    def _writers(self) -> dict[str, Callable[[Path], None]]:
        """File name -> function writing it, adapter_config.json last: loaders start from the config, so a
        folder whose config is in place is complete."""
        from safetensors.torch import save_file

        tensors = {}
        for path, (a, b) in self.modules.items():
            tensors[f"base_model.model.{path}.lora_A.weight"] = a.detach().cpu().contiguous()
            tensors[f"base_model.model.{path}.lora_B.weight"] = b.detach().cpu().contiguous()
        out = {WEIGHTS_NAME: lambda f: save_file(tensors, str(f), metadata={"format": "pt"})}
        if self.meta:
            out[META_NAME] = lambda f: f.write_text(json.dumps(self.meta, indent=2, default=str))
        out[CONFIG_NAME] = lambda f: f.write_text(self.config_json())
        return out

    def save(self, folder: str | Path, *, force: bool = False) -> Path:
        """Write a PEFT adapter folder that `PeftModel.from_pretrained(base, folder)` loads cleanly.

        Nothing a user made is lost and no reader sees half an adapter:
        - a new folder is written as a hidden sibling and renamed into place (parents are created);
        - an empty folder is filled;
        - a non-empty folder (an adapter or anything else) is written only with force=True (the CLI's
          --force). Then the adapter files (adapter_model.safetensors, adapter_config.json, hypergen.json)
          are replaced, each written to a temporary file first and renamed over the old one, the config
          last; every other file in the folder is kept. A stale hypergen.json is removed.
        On any failure the temporary files are removed and the folder is as it was. Files are 0644,
        whatever the umask; a new folder is 0755.
        """
        folder = Path(folder)
        if (folder.is_symlink() and not folder.exists()) or (folder.exists() and not folder.is_dir()):
            raise HypergenError(f"{folder} exists and is not a folder: pass a folder path for the adapter.")
        try:
            if not folder.exists():
                blocker = next((p for p in folder.parents if p.exists() or p.is_symlink()), None)
                if blocker is not None and not blocker.is_dir():
                    raise HypergenError(f"Cannot write the adapter to {folder}: {blocker} is not a folder.")
                _save_new(self._writers(), folder)
                return folder
            if any(folder.iterdir()) and not force:
                what = (
                    "holds an adapter: pass --force (force=True) to replace it"
                    if (folder / CONFIG_NAME).exists()
                    else "is not empty and is not an adapter folder: pass --force (force=True) to add the adapter files to it (its other files are kept)"
                )
                raise HypergenError(f"{folder} {what}, or choose another folder.")
            _save_into(self._writers(), folder, stale=[] if self.meta else [META_NAME])
        except OSError as e:
            raise HypergenError(f"Cannot write the adapter to {folder}: {e.strerror or e}. Choose a writable folder.") from None
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
        cfg = _read_json_object(cfg_path)
        if cfg.get("peft_type", "LORA") != "LORA":
            raise HypergenError(f"{folder} holds a {cfg.get('peft_type')} adapter; hypergen handles LoRA only.")
        if cfg.get("use_dora"):
            raise HypergenError(f"{folder} is a DoRA adapter; hypergen handles plain LoRA only.")
        for name in ("rank_pattern", "alpha_pattern"):
            if cfg.get(name):  # per-module ranks or scales: one alpha/r for all modules would be silently wrong
                raise HypergenError(f"{cfg_path}: field {name!r} is set; hypergen handles adapters with one rank and one alpha for every module.")
        try:
            tensors = load_file(str(w_path))
        except (SafetensorError, OSError, ValueError) as e:
            raise HypergenError(f"{w_path} is not a readable safetensors file (corrupt or truncated?): {e}. Re-export the adapter.") from None
        pairs: dict[str, dict[str, torch.Tensor]] = {}
        for key, t in tensors.items():
            m = _PEFT_KEY.match(key)
            if not m:
                raise HypergenError(f"{w_path}: unexpected tensor {key!r}; hypergen loads LoRA A/B weights of linear layers only.")
            if not t.is_floating_point():
                raise HypergenError(f"{w_path}: tensor {key!r} is {t.dtype}; LoRA weights must be floating point. Re-export the adapter.")
            if t.ndim != 2:
                raise HypergenError(f"{w_path}: tensor {key!r} has shape {tuple(t.shape)}; LoRA weights are 2-D.")
            if not torch.isfinite(t).all():
                raise HypergenError(f"{w_path}: tensor {key!r} holds NaN or inf values; the adapter is broken (diverged training?). Re-train or re-export it.")
            if m["ab"] in pairs.setdefault(m["path"], {}):  # two adapters' tensors in one file: which A goes with which B?
                raise HypergenError(f"{w_path} holds more than one lora_{m['ab']} for {m['path']} (several adapters in one file?); save each adapter on its own.")
            pairs[m["path"]][m["ab"]] = t
        if not pairs:
            raise HypergenError(f"{w_path} holds no LoRA tensors. Re-export the adapter.")
        modules = {}
        for path, ab in pairs.items():
            if set(ab) != {"A", "B"}:
                raise HypergenError(f"{w_path}: module {path} has lora_{''.join(ab)} but not both lora_A and lora_B.")
            modules[path] = (ab["A"], ab["B"])
        rank = next(iter(modules.values()))[0].shape[0]  # every module's rank is checked by __post_init__
        r = cfg.get("r", rank)
        if r != rank or isinstance(r, bool):  # peft refuses such a folder; a wrong r also means a wrong scale
            raise HypergenError(f"{cfg_path}: field 'r' is {r!r} but the tensors in {WEIGHTS_NAME} have rank {rank}; set \"r\": {rank}.")
        alpha = cfg.get("lora_alpha", 8)  # peft's LoraConfig default, so a folder without it scales as peft loads it
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not math.isfinite(alpha) or alpha <= 0:
            raise HypergenError(f"{cfg_path}: field 'lora_alpha' is {alpha!r}; it must be a finite positive number (commonly 2 * r).")
        alpha = float(alpha)
        if cfg.get("use_rslora"):
            alpha = alpha * math.sqrt(r)  # rsLoRA scales by alpha/sqrt(r); fold it so alpha/r holds
        if alpha / r > MAX_SCALE:
            raise HypergenError(f"{cfg_path}: field 'lora_alpha' is {cfg['lora_alpha']!r}, a scale alpha/r of {alpha / r:.3g}: not a plausible LoRA scale (at most {MAX_SCALE:g}).")
        meta = _read_json_object(folder / META_NAME) if (folder / META_NAME).is_file() else {}
        try:
            return cls(dict(sorted(modules.items(), key=lambda kv: _natural_key(kv[0]))), alpha, short_name(cfg.get("base_model_name_or_path") or ""), meta)
        except HypergenError as e:
            raise HypergenError(f"{w_path}: {e}") from None


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """A safetensors file readable by others (FILE_MODE): safetensors alone leaves 0600."""
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    os.chmod(path, FILE_MODE)


def _read_json_object(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise HypergenError(f"{path} is not valid JSON (line {e.lineno}): {e.msg}. Fix or re-export it.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise HypergenError(f"{path} cannot be read as JSON text: {e}.") from None
    if not isinstance(data, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(data), "a number")
        raise HypergenError(f"{path} holds {kind}, not a JSON object ({{...}}). Fix or re-export it.")
    return data


def _fsynced(write: Callable[[Path], None], path: Path) -> None:
    write(path)
    os.chmod(path, FILE_MODE)  # safetensors and mkstemp leave 0600
    with open(path, "rb") as f:
        os.fsync(f.fileno())  # the rename that follows must not land before the bytes


def _save_new(writers: dict[str, Callable[[Path], None]], folder: Path) -> None:
    """Build the folder as a hidden sibling and rename it into place; on failure remove it and any parent
    this call created."""
    created = [p for p in (folder.parent, *folder.parent.parents) if not p.exists()]  # deepest first
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            for name, write in writers.items():
                _fsynced(write, tmp / name)
            os.chmod(tmp, 0o755)  # mkdtemp makes 0700
            os.rename(tmp, folder)  # a non-empty `folder` made meanwhile makes this fail; nothing is merged
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # nothing left after a successful rename
    except BaseException:
        for p in created:
            try:
                p.rmdir()
            except OSError:
                break
        raise


def _save_into(writers: dict[str, Callable[[Path], None]], folder: Path, stale: list[str]) -> None:
    """Write every file under a temporary name inside `folder` first, then rename them over the old ones
    (config last), so a failure while writing leaves the folder untouched. Renaming files, not the folder,
    keeps the user's other files and a shell's working directory intact."""
    staged: dict[str, Path] = {}
    try:
        for name, write in writers.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}-", dir=folder)
            os.close(fd)
            staged[name] = Path(tmp)
            _fsynced(write, staged[name])
        for name, tmp in staged.items():
            if name == CONFIG_NAME:
                for old in stale:
                    (folder / old).unlink(missing_ok=True)
            os.replace(tmp, folder / name)
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)


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
