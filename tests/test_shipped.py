"""Everything that ships in the repo loads: the default zoo (zoo/) and generator checkpoints (generators/)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from hypergen.paths import REPO_ROOT
from hypergen.testing import smollm2_bank

ZOO = REPO_ROOT / "zoo"
SHIPPED_EXPERTS = [r["name"] for r in json.loads((ZOO / "manifest.json").read_text())["experts"]] if (ZOO / "manifest.json").is_file() else []
SHIPPED_GENERATORS = sorted(p.parent.name for p in (REPO_ROOT / "generators").glob("*/generator.json"))
SMOLLM2 = smollm2_bank(1).layout


def test_the_shipped_artifacts_are_there():
    """The tests below are parametrized over what is on disk: a missing zoo/ or generators/ would otherwise
    collect none of them and pass."""
    assert SHIPPED_EXPERTS, f"{ZOO / 'manifest.json'} is missing or lists no experts: the shipped zoo is gone"
    assert SHIPPED_MULTITASK, f"{ZOO / 'multitask' / 'expert.json'} is missing: the shipped multitask adapter is gone"
    assert {"sg", "icm", "abmll"} <= set(SHIPPED_GENERATORS), f"generators/*/generator.json found: {SHIPPED_GENERATORS}"


def test_the_default_generator_and_mode_are_the_heldout_evaluations_pick():
    """api's defaults (CLI, API and app) are what the published held-out evaluation picked (its summary's
    bar.default: the best generator-and-mode whose own description beats gibberish, else the lowest NLL among
    those that take the description), and that generator ships."""
    from hypergen import api
    from hypergen.eval.methods import Method
    from hypergen.generators import get_family

    summary = json.loads((REPO_ROOT / "docs" / "results" / "heldout" / "results.json").read_text())["summary"]
    assert summary["bar"]["default"] == str(Method(api.DEFAULT_GENERATOR, api.DEFAULT_PROMPT_DESCRIPTION))
    assert api.DEFAULT_GENERATOR in SHIPPED_GENERATORS or not get_family(api.DEFAULT_GENERATOR).trainable


def test_shipped_artifacts_fit_the_budget():
    from hypergen.generators import TRAINING_FILE

    files = [p for d in ("zoo", "generators") for p in (REPO_ROOT / d).rglob("*") if p.is_file() and p.name != TRAINING_FILE]  # git-ignored
    # zoo/ + generators/ stay about 60 MB: 59.6 MiB until the fair baseline mtlora (0.9 MiB) shipped on 2026-12-01
    assert sum(p.stat().st_size for p in files) < 61 * 2**20


@pytest.mark.parametrize("name", SHIPPED_EXPERTS)
def test_shipped_expert_loads_with_smollm2_layout(name):
    from hypergen.zoo.store import Zoo

    zoo = Zoo(ZOO)
    rec = zoo.record(name)
    assert rec.descriptions and rec.metric in ("accuracy", "rougeL") and "main" in rec.base_score and "main" in rec.expert_score
    w = zoo.weights(name)
    assert tuple(w.modules) == SMOLLM2.paths
    assert tuple(tuple(a.shape) for a, _ in w.modules.values()) == SMOLLM2.a_shapes
    assert tuple(tuple(b.shape) for _, b in w.modules.values()) == SMOLLM2.b_shapes
    assert all(math.isfinite(float(a.abs().sum() + b.abs().sum())) for a, b in w.modules.values())
    assert zoo.meta["base_model"] == "SmolLM2-135M-Instruct"


@pytest.mark.integration
@pytest.mark.parametrize("name", SHIPPED_GENERATORS)
def test_shipped_generator_loads_and_generates(name, real_encoder):
    from hypergen import api

    gen = api.get_generator(name)
    assert gen.inference_only == bool(gen.training_only and not (REPO_ROOT / "generators" / name / "training.safetensors").is_file())
    one, two = (gen.generate(real_encoder.encode([d])[0]).weights for d in ("Decide whether the two sentences mean the same thing.", "Translate the word into French."))
    assert tuple(one.modules) == SMOLLM2.paths
    assert all(torch.isfinite(a).all() and torch.isfinite(b).all() for a, b in one.modules.values())
    assert any(float(b.abs().max()) > 0 for _, b in one.modules.values())  # loaded weights, not a zero update
    if gen.uses_description:  # another description, another adapter
        assert any(not torch.equal(one.delta(p), two.delta(p)) for p in one.modules)


@pytest.mark.integration
def test_shipped_zoo_activates_in_the_real_base(real_resident):
    from typer.testing import CliRunner

    from hypergen.cli import app
    from hypergen.zoo.store import Zoo

    zoo = Zoo(ZOO)
    before = real_resident.score(["The movie was great."], [["yes", "no"]])[0]
    real_resident.activate(zoo.weights(SHIPPED_EXPERTS[0]), name="shipped")
    active = real_resident.score(["The movie was great."], [["yes", "no"]])[0]
    real_resident.deactivate()
    assert active != pytest.approx(before, abs=1e-3)  # the expert changes the model's scores
    assert real_resident.score(["The movie was great."], [["yes", "no"]])[0] == pytest.approx(before, abs=1e-5)  # and leaves it as it was
    r = CliRunner().invoke(app, ["zoo", "list", "--json"])
    assert r.exit_code == 0 and [x["name"] for x in json.loads(r.stdout)] == SHIPPED_EXPERTS


SHIPPED_MULTITASK = (ZOO / "multitask" / "expert.json").is_file()
DONE_WHEN = [g for g in ("nearest", "mix", "lego") if SHIPPED_EXPERTS] + (["multitask"] if SHIPPED_MULTITASK else []) + SHIPPED_GENERATORS


@pytest.mark.integration
@pytest.mark.parametrize("name", DONE_WHEN)
def test_fresh_clone_generate_writes_a_clean_peft_folder(name, real_resident, real_encoder, tmp_path):
    """Issue 4/5's "done when": `hypergen generate "..." --generator G --out DIR --json` on the shipped
    zoo and generators, and the folder loads in plain peft on SmolLM2 with no key warnings."""
    import warnings

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from typer.testing import CliRunner

    from hypergen import assets
    from hypergen.cli import app

    samples = ["--samples", "4"] if name in ("icm", "abmll") else []
    r = CliRunner().invoke(app, ["generate", "Decide whether the two sentences mean the same thing. Answer Yes or No.", "--generator", name, "--out", str(tmp_path / "ad"), "--json", *samples])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["generator"] == name and out["timings_ms"]["generate"] > 0 and out["neighbors"]
    if samples:
        assert out["uncertainty"]["samples"] == 4 and out["uncertainty"]["sample_rel_std"] > 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(assets.smollm2_path()), tmp_path / "ad")
    assert not [w for w in caught if "key" in str(w.message).lower()]
    assert any(torch.count_nonzero(p) for n, p in pm.named_parameters() if "lora_B" in n)
