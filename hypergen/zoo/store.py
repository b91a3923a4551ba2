"""The zoo on disk: one folder per expert, plus a manifest that indexes them.

    <zoo>/manifest.json                    index (rewritten atomically after every change)
    <zoo>/experts/<name>/                  the final adapter: a PEFT folder (fp16) in a build zoo; in a packed
                                           (shipped) zoo adapter_q8.safetensors (int8 per-row absmax) beside
                                           adapter_config.json; Zoo.weights() reads either
    <zoo>/experts/<name>/expert.json       the expert's record: descriptions, scores, config
    <zoo>/experts/<name>/trajectory/       last checkpoints (step_NNNNN.safetensors; build zoos only)
    <zoo>/multitask/                       the multi-task LoRA baseline (PEFT folder + expert.json)

Each expert folder is written under a temporary name and renamed into place when complete, and the
folder (not the manifest) is the source of truth: a build killed between the rename and the manifest
write is reconciled on the next open. So a SIGKILL at any moment loses at most the expert in training.

The manifest's "lora" and "base_model" say what every expert shares (ZooConfig): generators stack the
experts, so one zoo holds one rank, alpha, set of target modules and base model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from hypergen.errors import HypergenError
from hypergen.identity import short_name
from hypergen.lora import FILE_MODE, LoraWeights, save_tensors
from hypergen.paths import atomic_folder
from hypergen.quant import dequantize_rows, quantize_rows

MANIFEST = "manifest.json"
Q8 = "adapter_q8.safetensors"  # shipped zoos: int8 per-row absmax (0.5 MB an expert instead of 0.9 in fp16)
RECORD = "expert.json"
MULTITASK = "multitask"


@dataclass
class ExpertRecord:
    """Everything known about one expert. Scores are dicts from hypergen.scoring.TaskScore.to_dict()."""

    name: str
    family: str
    descriptions: list[str]
    categories: list[str]
    source: str
    metric: str  # "accuracy" (multiple choice, by log-likelihood) or "rougeL"
    base_score: dict
    expert_score: dict
    steps: int
    seconds: float
    n_train: int
    n_truncated: int = 0
    trajectory_steps: list[int] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    @property
    def description(self) -> str:
        return self.descriptions[0]

    @property
    def gain(self) -> float:
        return self.expert_score["main"] - self.base_score["main"]


@dataclass(frozen=True)
class ZooConfig:
    """What every expert of one zoo shares: LoraSpec's layout fields and the base model's name."""

    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    layers: tuple[int, ...] | None
    base_model: str

    @classmethod
    def of(cls, lora: dict, base_model: str) -> ZooConfig:
        """From a LoraSpec dict (the manifest's "lora", a record's config["lora"])."""
        layers = lora.get("layers")
        return cls(int(lora["rank"]), float(lora["alpha"]), tuple(lora["target_modules"]), None if layers is None else tuple(layers), base_model or "")

    def __str__(self) -> str:
        layers = "" if self.layers is None else f", layers {list(self.layers)}"
        return f"rank-{self.rank} experts (alpha {self.alpha:g}, {'/'.join(self.target_modules)}{layers}, {self.base_model or 'base model unrecorded'})"

    def changes(self, other: ZooConfig) -> list[str]:
        """Where `other` differs from this config, as `other`'s values ("rank 4", "alpha 8")."""
        words = {"rank": f"rank {other.rank}", "alpha": f"alpha {other.alpha:g}", "target_modules": "/".join(other.target_modules),
                 "layers": f"layers {'all' if other.layers is None else list(other.layers)}", "base_model": f"base {other.base_model}"}
        return [w for k, w in words.items() if getattr(self, k) != getattr(other, k) and not (k == "base_model" and not self.base_model)]


def safe_name(task_name: str) -> str:
    return task_name.replace("/", "__")


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp makes 0600
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):  # a failed write (a kill leaves it for _reconcile)
            os.unlink(tmp)


class Zoo:
    """A folder of experts. Open with Zoo(path); `create=True` makes an empty one."""

    def __init__(self, root: str | Path, *, create: bool = False, meta: dict | None = None):
        self.root = Path(root)
        if not (self.root / MANIFEST).is_file():
            if not create:
                raise HypergenError(f"{self.root} is not a zoo (no {MANIFEST}); build one with `hypergen zoo build` or pass --zoo.")
            (self.root / "experts").mkdir(parents=True, exist_ok=True)
            # expert folders without a manifest (it was deleted to recover): their config, not this build's, is the zoo's
            adopting = any((self.root / "experts").glob(f"*/{RECORD}"))
            self._manifest = {"version": 1, **({} if adopting else meta or {}), "experts": []}
            self._write_manifest()
        self._manifest = self._read_manifest()
        if create:
            self._reconcile()

    def _read_manifest(self) -> dict:
        """The manifest, checked: a hand-edited or truncated one gets a message, not a traceback later."""
        path = self.root / MANIFEST
        try:
            m = json.loads(path.read_text())
            if not isinstance(m, dict) or not isinstance(m.get("experts"), list):
                raise ValueError("not an object with an 'experts' list")
            for r in m["experts"]:
                ExpertRecord(**r)  # TypeError on a missing or unknown key, or a row that is not an object
            if "lora" in m:
                ZooConfig.of(m["lora"], "")
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise HypergenError(
                f"{path} is corrupt ({why}): restore it (the shipped zoo: `git checkout zoo/{MANIFEST}`) or delete it and rerun "
                f"`hypergen zoo build --out {self.root}` with the build's settings, which re-adopts every finished expert in {self.root / 'experts'}."
            ) from None
        return m

    # ---- reading -------------------------------------------------------------------------------
    @property
    def meta(self) -> dict:
        return {k: v for k, v in self._manifest.items() if k != "experts"}

    def config(self) -> ZooConfig | None:
        """The experts' shared config: from the manifest, or for a manifest without one (written before
        zoos recorded it, or recreated over existing experts) from the first expert; None for an empty zoo."""
        if "lora" in self._manifest:
            return ZooConfig.of(self._manifest["lora"], self._manifest.get("base_model", ""))
        if not self._manifest["experts"]:
            return None
        first = self._manifest["experts"][0]
        path = self.folder(first["name"]) / "adapter_config.json"
        peft = json.loads(path.read_text()) if path.is_file() else {}  # r, lora_alpha, full module paths
        base = self._manifest.get("base_model") or short_name(peft.get("base_model_name_or_path") or "")  # peft's names the hub id
        if "lora" in first.get("config", {}):
            return ZooConfig.of(first["config"]["lora"], base)
        if not peft:
            return None
        targets = tuple(sorted({p.rsplit(".", 1)[-1] for p in peft["target_modules"]}))
        return ZooConfig(int(peft["r"]), float(peft["lora_alpha"]), targets, None, base)

    def records(self) -> list[ExpertRecord]:
        return [ExpertRecord(**r) for r in self._manifest["experts"]]

    def names(self) -> list[str]:
        return [r["name"] for r in self._manifest["experts"]]

    def __len__(self) -> int:
        return len(self._manifest["experts"])

    def has(self, name: str) -> bool:
        return name in self.names()

    def record(self, name: str) -> ExpertRecord:
        for r in self._manifest["experts"]:
            if r["name"] == name:
                return ExpertRecord(**r)
        raise HypergenError(f"No expert {name!r} in the zoo at {self.root}; `hypergen zoo list` shows what is there.")

    def folder(self, name: str) -> Path:
        return self.root / "experts" / safe_name(name)

    def weights(self, name: str, dtype: torch.dtype = torch.float32) -> LoraWeights:
        folder = self.folder(name)
        if (folder / Q8).is_file():
            return _load_q8(folder).to(dtype=dtype)
        return LoraWeights.load(folder).to(dtype=dtype)

    def trajectory(self, name: str, dtype: torch.dtype = torch.float32) -> list[tuple[int, LoraWeights]]:
        """The kept checkpoints, oldest first; only the final adapter for packed (shipped) zoos."""
        tdir = self.folder(name) / "trajectory"
        if not tdir.is_dir():
            return [(self.record(name).steps, self.weights(name, dtype))]
        final = self.weights(name, dtype)
        out = []
        for f in sorted(tdir.glob("step_*.safetensors")):
            from safetensors.torch import load_file

            t = load_file(str(f))
            mods = {p: (t[f"{p}.A"].to(dtype), t[f"{p}.B"].to(dtype)) for p in final.modules}
            out.append((int(f.stem.split("_")[1]), LoraWeights(mods, final.alpha, final.base_model)))
        return out

    def multitask(self) -> LoraWeights | None:
        d = self.root / MULTITASK
        if (d / Q8).is_file():
            return _load_q8(d)
        return LoraWeights.load(d) if (d / "adapter_config.json").is_file() else None

    def multitask_record(self) -> ExpertRecord | None:
        """The multi-task LoRA's record (what it was trained on and how), or None if the zoo has none."""
        f = self.root / MULTITASK / RECORD
        return ExpertRecord(**json.loads(f.read_text())) if f.is_file() else None

    # ---- writing -------------------------------------------------------------------------------
    def add(self, record: ExpertRecord, final: LoraWeights, trajectory: list[tuple[int, LoraWeights]] | None = None, dtype=torch.float16) -> None:
        """Write one expert folder atomically, then the manifest."""
        with atomic_folder(self.folder(record.name)) as tmp:
            _save_final(final, tmp, dtype)
            if trajectory:
                (tmp / "trajectory").mkdir()
                for step, w in trajectory:
                    tensors = {f"{p}.{k}": t.to(dtype).contiguous() for p, (a, b) in w.modules.items() for k, t in (("A", a), ("B", b))}
                    save_tensors(tensors, tmp / "trajectory" / f"step_{step:05d}.safetensors")
            (tmp / RECORD).write_text(json.dumps(asdict(record), indent=2))

        def put(m: dict) -> None:  # a retrained expert keeps its place in the manifest
            rows = m["experts"]
            at = next((i for i, r in enumerate(rows) if r["name"] == record.name), len(rows))
            rows[at : at + 1] = [asdict(record)]

        self._update_manifest(put)

    def _update_manifest(self, change) -> None:
        """Re-read, change and rewrite the manifest under a file lock: sharded builds write concurrently."""
        import fcntl

        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._manifest = self._read_manifest()
            change(self._manifest)
            self._write_manifest()

    def record_meta(self, meta: dict) -> None:
        """Add the keys of `meta` the manifest lacks (a zoo made before they were recorded, or over adopted experts)."""

        def add(m: dict) -> None:
            experts = m.pop("experts")  # stays last, as in a manifest written with its meta
            m.update({k: v for k, v in meta.items() if k not in m}, experts=experts)

        if set(meta) - set(self._manifest):
            self._update_manifest(add)

    def set_multitask(self, record: ExpertRecord, weights: LoraWeights, dtype=torch.float16) -> None:
        with atomic_folder(self.root / MULTITASK) as tmp:
            _save_final(weights, tmp, dtype)
            (tmp / RECORD).write_text(json.dumps(asdict(record), indent=2))

    def _reconcile(self) -> None:
        """Adopt complete expert folders missing from the manifest; drop entries whose folder is gone.

        Runs when a build opens its zoo (create=True), before any worker starts writing."""
        known = {r["name"] for r in self._manifest["experts"]}
        # the folder's record, not the manifest's row: a retrain (--refresh) killed between its rename and the
        # manifest update left the old row beside the new weights
        keep = [json.loads(f.read_text()) for f in (self.folder(r["name"]) / RECORD for r in self._manifest["experts"]) if f.is_file()]
        for d in sorted((self.root / "experts").glob("*/")):
            if d.name.startswith(".") or not (d / RECORD).is_file():
                continue
            rec = json.loads((d / RECORD).read_text())
            if rec["name"] not in known:
                keep.append(rec)
        for junk in [*(self.root / "experts").glob(".*"), *self.root.glob(f".{MULTITASK}-*")]:
            shutil.rmtree(junk, ignore_errors=True)  # half-written folders of a killed build
        for junk in self.root.glob(f".{MANIFEST}-*"):
            junk.unlink(missing_ok=True)  # a manifest write killed before its rename
        if keep != self._manifest["experts"]:
            self._manifest["experts"] = keep
            self._write_manifest()

    def _write_manifest(self) -> None:
        _atomic_write_text(self.root / MANIFEST, json.dumps(self._manifest, indent=2))

    def pack(self, dest: str | Path, dtype="int8") -> Zoo:
        """A compact copy for shipping: final adapters only (no trajectories), int8 (default) or a float dtype."""
        dest = Path(dest)
        out = Zoo(dest, create=True, meta=self.meta)
        for rec in self.records():
            out.add(rec, self.weights(rec.name), None, dtype=dtype)
        mt = self.multitask_record()
        if mt is not None:
            out.set_multitask(mt, self.multitask(), dtype=dtype)
        return out


def _save_final(w: LoraWeights, folder: Path, dtype) -> None:
    """A PEFT folder in a float dtype, or an int8 file (+ adapter_config.json) for packed zoos."""
    if dtype != "int8":
        w.to(dtype=dtype).save(folder)
        return
    tensors = {}
    for p, (a, b) in w.modules.items():
        for k, t in (("A", a), ("B", b)):
            tensors[f"{p}.{k}.q"], tensors[f"{p}.{k}.scale"] = quantize_rows(t)
    folder.mkdir(parents=True, exist_ok=True)
    save_tensors(tensors, folder / Q8)
    w.save_config(folder)


def _load_q8(folder: Path) -> LoraWeights:
    from peft import LoraConfig
    from safetensors.torch import load_file

    t = load_file(str(folder / Q8))
    cfg = LoraConfig.from_pretrained(str(folder))
    from hypergen.lora import _natural_key

    paths = sorted({k.rsplit(".", 2)[0] for k in t}, key=_natural_key)
    mods = {p: tuple(dequantize_rows(t[f"{p}.{k}.q"], t[f"{p}.{k}.scale"]) for k in ("A", "B")) for p in paths}
    return LoraWeights(mods, float(cfg.lora_alpha), cfg.base_model_name_or_path or "")
