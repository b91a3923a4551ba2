"""Generator checkpoints: generator.json (family, config, layout, base, encoder, experts) beside
generator.safetensors (fp16 learned tensors) and training.safetensors (training-only tensors, not shipped).
A packed checkpoint (pack_generator, for shipping) stores its large matrices as int8 per-row absmax
(NAME.q8 + NAME.q8scale in float32, hypergen.quant) and loads as the fp16 one does.

The bank is never saved: it is rebuilt from the zoo at load time, so a checkpoint only loads on a bank
with the same LoRA layout, base model and text encoder as the one it was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from hypergen.errors import HypergenError
from hypergen.generators.layout import Layout
from hypergen.generators.registry import get_family
from hypergen.identity import require_same_base
from hypergen.lora import save_tensors

TRAINING_FILE = "training.safetensors"  # training-only tensors (not shipped)
WEIGHTS_FILE = "generator.safetensors"
Q8, Q8_SCALE = ".q8", ".q8scale"  # a packed tensor NAME is stored as NAME.q8 (int8) and NAME.q8scale (float32 per row)
PACK_MIN = 2**16  # matrices with fewer entries stay fp16 (norms, biases, embeddings: small, and touchy)


def save_generator(gen, folder: str | Path, extra: dict | None = None) -> Path:
    """Write `gen` (a Generator) to `folder`; `extra` joins generator.json (e.g. the training config)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "family": gen.family,
        "config": gen.config.to_dict(),
        "layout": gen.layout.to_dict(),
        "base_model": gen.bank.meta.get("base_model", ""),
        "encoder": gen.bank.meta.get("encoder", ""),
        "encoder_dim": gen.bank.dim,
        "experts": gen.bank.names,
        **(extra or {}),
    }
    state = {k: v.detach().to(torch.float16 if v.is_floating_point() else v.dtype).contiguous().cpu() for k, v in gen.state_for_save().items()}
    train_only = {k: v for k, v in state.items() if k.startswith(gen.training_only)} if gen.training_only else {}
    if state:
        save_tensors({k: v for k, v in state.items() if k not in train_only}, folder / WEIGHTS_FILE)
    if train_only:
        save_tensors(train_only, folder / TRAINING_FILE)
    (folder / "generator.json").write_text(json.dumps(meta, indent=2, default=str))
    return folder


def _require_same_encoder(meta: dict, bank, folder: Path) -> None:
    """Refuse a checkpoint trained on another text encoder's embeddings (older ones record none: accepted)."""
    made, used = meta.get("encoder"), bank.meta.get("encoder")
    if made and used and made != used:
        raise HypergenError(f"Generator {folder} was trained on {made!r} description embeddings, but the encoder in use is {used!r}: "
                            f"pass --encoder for {made}, or train the generator again with {used}.")
    dim = meta.get("encoder_dim")
    if dim is not None and dim != bank.dim:
        raise HypergenError(f"Generator {folder} was trained on {dim}-dim description embeddings, but the encoder in use gives {bank.dim}: use the encoder it was trained with.")


def load_generator(folder: str | Path, bank, *, family: str | None = None, base_model: str | None = None):
    """Rebuild a saved generator on `bank`. Refuses another family's checkpoint, one made for another base
    model (`base_model`, else the bank's), another text encoder or another LoRA layout."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta_path = folder / "generator.json"
    if not meta_path.is_file():
        raise HypergenError(f"{folder} is not a generator checkpoint (no generator.json); train one with `hypergen train`.")
    meta = json.loads(meta_path.read_text())
    if family and meta.get("family") != family:
        raise HypergenError(f"{folder} holds a {meta.get('family')!r} generator, not {family!r}: pass the {family} checkpoint.")
    cls = get_family(meta["family"])
    require_same_base(meta.get("base_model"), base_model or bank.meta.get("base_model"), f"Generator {folder}")
    _require_same_encoder(meta, bank, folder)
    layout = Layout.from_dict(meta["layout"])
    if layout != bank.layout:  # alpha too: flat adapters are scaled by alpha / rank
        raise HypergenError(f"Generator {folder} was trained on a zoo with another LoRA layout (modules, shapes or alpha) than the zoo at {bank.meta.get('zoo')}.")
    gen = cls(cls.Config.from_dict(meta["config"]), bank)
    gen.checkpoint = folder
    wfile = folder / WEIGHTS_FILE
    if cls.trainable and not wfile.is_file():  # else it would answer untrained
        raise HypergenError(f"{folder} has generator.json but no {WEIGHTS_FILE}: copy the whole folder, or train it again.")
    if wfile.is_file():
        state = _unpacked(load_file(str(wfile)))
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


def _unpacked(state: dict) -> dict:
    """A packed checkpoint's int8 matrices back in float (a plain one is returned as it is)."""
    from hypergen.quant import dequantize_rows

    out = {k: v for k, v in state.items() if not k.endswith((Q8, Q8_SCALE))}
    for k in state:
        if k.endswith(Q8):
            name = k[: -len(Q8)]
            out[name] = dequantize_rows(state[k], state[name + Q8_SCALE])
    return out


def pack_generator(source: str | Path, dest: str | Path) -> Path:
    """A compact copy of a generator checkpoint for shipping: its matrices of >= PACK_MIN entries in int8
    per-row absmax (half of fp16), the rest fp16; generator.json and train.json copied, training-only
    tensors left out. Nothing is loaded but the tensors: the copy loads wherever the source does."""
    from safetensors.torch import load_file

    from hypergen.quant import quantize_rows

    source, dest = Path(source), Path(dest)
    if not (source / "generator.json").is_file() or not (source / WEIGHTS_FILE).is_file():
        raise HypergenError(f"{source} is not a generator checkpoint (it needs generator.json and {WEIGHTS_FILE}).")
    if "packed" in json.loads((source / "generator.json").read_text()):
        raise HypergenError(f"{source} is packed already: pack the folder `hypergen train` wrote.")
    if dest.exists() and any(dest.iterdir()):
        raise HypergenError(f"{dest} exists and is not empty: pack into a new folder.")
    state, packed = load_file(str(source / WEIGHTS_FILE)), {}
    for k, v in state.items():
        if v.is_floating_point() and v.dim() == 2 and v.numel() >= PACK_MIN:
            packed[k + Q8], packed[k + Q8_SCALE] = quantize_rows(v, scale_dtype=torch.float32)
        else:
            packed[k] = v.to(torch.float16) if v.is_floating_point() else v
    dest.mkdir(parents=True, exist_ok=True)
    save_tensors(packed, dest / WEIGHTS_FILE)
    meta = json.loads((source / "generator.json").read_text())
    (dest / "generator.json").write_text(json.dumps({**meta, "packed": "int8"}, indent=2))
    if (source / "train.json").is_file():
        (dest / "train.json").write_text((source / "train.json").read_text())
    return dest
