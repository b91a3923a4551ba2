"""Every hostile-user probe of issue 16 in one table, through the CLI and the API alike.

Each row builds its scene in a scratch folder, then runs one command. The CLI must exit 1 with one
`error: ...` line and no traceback; the API must raise one HypergenError line with the same words; and
nothing in the scratch folder may change. The finer tests of each area live beside their code
(test_lora_io, test_zoo_config, test_api_input, test_threads, test_app_server, test_app).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import random_lora
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from hypergen import api
from hypergen.cli import app
from hypergen.errors import HypergenError
from hypergen.paths import REPO_ROOT

DEMO = str(REPO_ROOT / "data" / "demo" / "demo.jsonl")
TASK = "Give the antonym of the word."


@pytest.fixture(scope="module")
def tiny_adapter(tiny_path):
    from hypergen.base import load_base

    return random_lora(load_base(tiny_path, device="cpu").model, seed=3)


# ---- scenes: each writes into `root` and returns the path the probe points at ----------------------
def adapter_with(tensor=None, config=None, meta=None):
    """An adapter folder broken in one way: a tensor edit, a config edit, or a raw hypergen.json."""

    def scene(root: Path, ctx) -> Path:
        folder = ctx["adapter"].save(root / "ad")
        if tensor is not None:
            w = load_file(str(folder / "adapter_model.safetensors"))
            key = next(k for k in w if "lora_A" in k)
            w[key] = tensor(w[key])
            save_file(w, str(folder / "adapter_model.safetensors"))
        if config is not None:
            cfg = json.loads((folder / "adapter_config.json").read_text())
            (folder / "adapter_config.json").write_text(json.dumps(config(cfg)))
        if meta is not None:
            (folder / "hypergen.json").write_text(meta)
        return folder

    return scene


def _set(key, value):
    return lambda cfg: {**cfg, key: value}


def user_folder(root: Path, ctx) -> Path:
    (root / "out").mkdir()
    (root / "out" / "notes.txt").write_text("mine")
    return root / "out"


def existing_adapter(root: Path, ctx) -> Path:
    return ctx["adapter"].save(root / "out")


def a_file(root: Path, ctx) -> Path:
    (root / "out").write_text("a file")
    return root / "out"


def under_a_file(root: Path, ctx) -> Path:
    return a_file(root, ctx) / "ad"


def corrupt_manifest(text):
    def scene(root: Path, ctx) -> Path:
        z = shutil.copytree(ctx["zoo"], root / "zoo")
        (z / "manifest.json").write_text(text)
        return z

    return scene


def zoo_copy(root: Path, ctx) -> Path:
    return shutil.copytree(ctx["zoo"], root / "zoo")  # scenes copy the zoo; never edit the shared one


# ---- the table: name, scene, CLI args ({p} = the scene's path), API call, message ------------------
# Scenes and API calls get (path, ctx); ctx holds the tiny model, zoo, adapter and generate's settings.
def generate_out(force=False):
    return lambda p, c: api.generate(TASK, "nearest", out=p, force=force, **c["gen"])


def generate_bad(description=TASK, **kw):
    """generate with a bad argument and out at the scene's path: the snapshot shows nothing was written there."""
    return lambda p, c: api.generate(description, "nearest", out=p, **kw, **c["gen"])


def answer_with(p, c):
    return api.answer("hot", adapter=p, base=c["base"], device="cpu")


def build_into(rank=8, lr=1e-2):
    def go(p, c):
        from hypergen.config import LoraSpec
        from hypergen.zoo.build import BuildConfig, build_zoo
        from hypergen.zoo.expert import ExpertConfig

        e = ExpertConfig(steps=8, batch_size=4, lr=lr, every=2, keep_last=3, warmup=2, select="last", logger="none", progress=False, lora=LoraSpec(rank=rank, alpha=2.0 * rank))
        return build_zoo(BuildConfig(suite=DEMO, out=str(p), base=c["base"], limit=None, expert=e, eval_instances=4, max_new_tokens=3))

    return go


GEN = ["generate", TASK, "--generator", "nearest", "--encoder", "fake", "--zoo", "{zoo}", "--base", "{base}"]
ANSWER = ["answer", "hot", "--base", "{base}", "--adapter", "{p}"]
BUILD = ["zoo", "build", "--suite", DEMO, "--out", "{p}", "--base", "{base}", "--steps", "8", "--batch-size", "4", "--logger", "none", "--eval-instances", "4"]

PROBES = [
    # 2. --out
    ("out into a user's folder", user_folder, [*GEN, "--out", "{p}"], generate_out(), "is not empty and is not an adapter folder"),
    ("out over an adapter", existing_adapter, [*GEN, "--out", "{p}"], generate_out(), "--force"),
    ("out at a file", a_file, [*GEN, "--out", "{p}"], generate_out(force=True), "is not a folder: pass a folder path"),
    ("out under a file", under_a_file, [*GEN, "--out", "{p}"], generate_out(force=True), "Cannot write the adapter"),
    # 3. mixed zoos, corrupt manifests
    ("another rank into a zoo", zoo_copy, [*BUILD, "--rank", "4", "--lr", "0.01"], build_into(rank=4), "asks for rank 4"),
    ("a changed lr on built experts", zoo_copy, [*BUILD, "--lr", "0.02"], build_into(lr=0.02), "--refresh"),
    ("a corrupt manifest", corrupt_manifest("{not json"), ["zoo", "list", "--zoo", "{p}"], lambda p, c: api.zoo_list(p), "is corrupt"),
    ("a manifest that is a list", corrupt_manifest("[]"), [*GEN[:-4], "--zoo", "{p}"], lambda p, c: api.generate(TASK, "nearest", **{**c["gen"], "zoo_path": str(p)}), "is corrupt"),
    # 4. --samples, huge --seed
    ("10,000 samples", None, [*GEN, "--samples", "10000", "--out", "{p}"], generate_bad(samples=10_000), "samples must be at most"),
    ("a huge seed", None, [*GEN, "--seed", str(2**70), "--out", "{p}"], generate_bad(seed=2**70), "seed must be at most"),
    # 5. bad adapters
    ("NaN weights", adapter_with(tensor=lambda t: t.fill_(float("nan"))), ANSWER, answer_with, "NaN or inf"),
    ("inf weights", adapter_with(tensor=lambda t: t.fill_(float("inf"))), ANSWER, answer_with, "NaN or inf"),
    ("int weights", adapter_with(tensor=lambda t: t.to(torch.int32)), ANSWER, answer_with, "lora_A"),
    ("lora_alpha 1e30", adapter_with(config=_set("lora_alpha", 1e30)), ANSWER, answer_with, "not a plausible LoRA scale"),
    ("lora_alpha a string", adapter_with(config=_set("lora_alpha", "16")), ANSWER, answer_with, "must be a finite positive number"),
    ("r 16 over rank-8 tensors", adapter_with(config=_set("r", 16)), ANSWER, answer_with, "field 'r' is 16"),
    ("adapter_config a JSON list", adapter_with(config=lambda cfg: [cfg]), ANSWER, answer_with, "adapter_config.json"),
    ("a corrupt hypergen.json", adapter_with(meta="{oops"), ANSWER, answer_with, "hypergen.json"),
    # 6. text and types (no CLI form: argv is always text; invalid UTF-8 in argv: test_api_input, by subprocess)
    ("invalid UTF-8", None, None, generate_bad("Give the antonym \udcff"), "not valid UTF-8"),
    ("generate(123)", None, None, generate_bad(123), "description must be a string"),
    ('samples="3"', None, None, generate_bad(samples="3"), "samples must be an integer"),
    ("inputs=[123]", None, None, generate_bad(inputs=[123]), "inputs[0] must be a string"),
]


@pytest.fixture()
def ctx(tiny_zoo, tiny_path, tiny_adapter):
    return {"adapter": tiny_adapter, "base": str(tiny_path), "zoo": str(tiny_zoo.root), "gen": {"zoo_path": str(tiny_zoo.root), "base": str(tiny_path), "encoder_name": "fake", "device": "cpu"}}


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*")) if p.name != ".lock"}


CASES = [(door, *p) for p in PROBES for door in ("cli", "api") if door == "api" or p[2] is not None]


@pytest.mark.parametrize("door, name, scene, args, call, message", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_probe_is_one_clear_line_and_changes_nothing(door, name, scene, args, call, message, ctx, tmp_path):
    root = tmp_path / "scene"
    root.mkdir()
    p = scene(root, ctx) if scene else root / "never-written"
    before = snapshot(root)
    if door == "cli":
        argv = [a.format(p=p, base=ctx["base"], zoo=ctx["zoo"]) for a in args]
        r = CliRunner().invoke(app, argv)
        assert r.exit_code == 1, r.output
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
        assert message in r.stderr and "Traceback" not in r.output
    else:
        with pytest.raises(HypergenError) as e:
            call(p, ctx)
        assert message in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert snapshot(root) == before, "the probe changed files on disk"
