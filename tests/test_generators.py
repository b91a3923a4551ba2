"""Every registered generator family behind one protocol, on the tiny zoo (table-driven)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from hypergen.errors import HypergenError
from hypergen.generators import GeneratorConfig, build, get_family, load_generator, register_generator, registered
from hypergen.text import FakeEncoder

ENC = FakeEncoder()
ANTONYM = "Give the antonym of the word: the word with the opposite meaning."
FAMILIES = sorted(registered())


def make(name, bank, tmp_path, steps=10):
    """A ready generator: baselines as built, trainable families after a few recon steps."""
    from hypergen.generators.train import TrainConfig, train_generator

    gen = build(name, bank)
    if gen.trainable:
        cfg, sft = TrainConfig(steps=steps, batch_size=4, logger="none", progress=False, ckpt_every=steps), None
        if "recon" not in gen.objectives:  # an sft-only family (t2l) trains through a tiny base
            from hypergen.base import load_base
            from hypergen.generators.sft import prepare_sft
            from hypergen.testing import make_tiny_llama
            from hypergen.zoo.store import Zoo

            cfg = TrainConfig(objective="sft", steps=steps, batch_size=2, sft_examples=1, sft_max_tokens=96, logger="none", progress=False, ckpt_every=steps)
            sft = prepare_sft(bank, Zoo(bank.meta["zoo"]), load_base(make_tiny_llama(tmp_path / "tiny-llama"), device="cpu"), cfg)
        train_generator(gen, cfg, tmp_path / name, sft_data=sft, run_name=f"test-{name}")
    return gen


@pytest.mark.parametrize("name", FAMILIES)
def test_family_generates_a_valid_peft_adapter(name, tiny_bank, tiny_path, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    gen = make(name, tiny_bank, tmp_path)
    res = gen.generate(ENC.encode([ANTONYM])[0], description=ANTONYM)
    assert res.generator == name and res.timings_ms["generate"] > 0
    assert list(res.weights.modules) == list(tiny_bank.layout.paths)
    assert all(torch.isfinite(a).all() and torch.isfinite(b).all() for a, b in res.weights.modules.values())
    assert res.neighbors and res.neighbors[0].name == "antonyms" and res.in_range
    res.weights.save(tmp_path / "ad")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_path), tmp_path / "ad")
    assert not [w for w in caught if "key" in str(w.message).lower()]
    sd = pm.state_dict()
    p, (a, b) = next(iter(res.weights.modules.items()))
    assert torch.equal(sd[f"base_model.model.{p}.lora_A.default.weight"], a) and torch.equal(sd[f"base_model.model.{p}.lora_B.default.weight"], b)


@pytest.mark.parametrize("name", [n for n in FAMILIES if get_family(n).trainable])
def test_trained_family_checkpoint_roundtrip(name, tiny_bank, tmp_path):
    gen = make(name, tiny_bank, tmp_path, steps=6)
    train = json.loads((tmp_path / name / "train.json").read_text())
    assert train["family"] == name and train["history"]
    again = load_generator(tmp_path / name, tiny_bank, family=name)
    e = ENC.encode([ANTONYM])[0]
    p = tiny_bank.layout.paths[0]
    torch.testing.assert_close(again.generate(e).weights.modules[p][1], gen.generate(e).weights.modules[p][1], atol=1e-3, rtol=1e-2)  # fp16 on disk
    other = next(n for n in FAMILIES if n != name)
    with pytest.raises(HypergenError, match=f"holds a '{name}' generator, not '{other}'"):
        load_generator(tmp_path / name, tiny_bank, family=other)


def test_nearest_returns_the_expert_itself(tiny_bank, tiny_zoo):
    res = build("nearest", tiny_bank).generate(ENC.encode([ANTONYM])[0])
    want = tiny_zoo.weights("antonyms")
    for p in want.modules:
        torch.testing.assert_close(res.weights.delta(p), want.delta(p))


def test_mix_is_the_weighted_sum_of_expert_updates(tiny_bank, tiny_zoo):
    res = build("mix", tiny_bank, top_k=3, temperature=0.5).generate(ENC.encode([ANTONYM])[0])
    assert len(res.neighbors) == 3 and sum(n.weight for n in res.neighbors) == pytest.approx(1, abs=1e-3)
    p = tiny_bank.layout.paths[1]
    want = sum(n.weight * tiny_zoo.weights(n.name).delta(p) for n in res.neighbors)
    torch.testing.assert_close(res.weights.delta(p), want, atol=1e-5, rtol=1e-3)


def test_lego_with_one_expert_keeps_its_update(tiny_bank, tiny_zoo):
    res = build("lego", tiny_bank, top_k=1).generate(ENC.encode([ANTONYM])[0])
    assert res.weights.rank == tiny_bank.layout.rank
    for p in tiny_bank.layout.paths:
        torch.testing.assert_close(res.weights.delta(p), tiny_zoo.weights("antonyms").delta(p), atol=1e-5, rtol=1e-4)


def test_multitask_ignores_the_description(tiny_bank, tiny_zoo):
    """Any description: every module's A and B are the zoo's multi-task LoRA's."""
    g = build("multitask", tiny_bank)
    mt = tiny_zoo.multitask()
    for desc in (ANTONYM, "Uppercase the word."):
        w = g.generate(ENC.encode([desc])[0]).weights
        assert list(w.modules) == list(mt.modules) == list(tiny_bank.layout.paths)
        for p, (a, b) in mt.modules.items():
            assert torch.equal(w.modules[p][0], a.to(w.modules[p][0].dtype)) and torch.equal(w.modules[p][1], b.to(w.modules[p][1].dtype)), (desc, p)


def test_sg_prior_is_the_law_of_total_variance(tiny_bank):
    g = build("sg", tiny_bank, top_k=2, temperature=0.5)
    cond = ENC.encode([ANTONYM])
    mu, s2, idx, w = g.semantic_prior(cond)
    m, v = g.m[idx[0]], g.v[idx[0]]
    torch.testing.assert_close(mu[0], w[0, 0] * m[0] + w[0, 1] * m[1])
    torch.testing.assert_close(s2[0], w[0, 0] * v[0] + w[0, 1] * v[1] + w[0, 0] * (m[0] - mu[0]) ** 2 + w[0, 1] * (m[1] - mu[0]) ** 2)
    # leave-one-out: in training an expert is never its own neighbour
    _, _, idx_loo, _ = g.semantic_prior(cond, exclude=torch.tensor([0]))
    assert 0 not in idx_loo[0].tolist()


def test_sg_training_beats_its_own_prior(tiny_bank, tmp_path):
    from hypergen.generators.train import TrainConfig, train_generator

    g = build("sg", tiny_bank)
    s = train_generator(g, TrainConfig(steps=60, batch_size=8, lr=3e-3, logger="none", progress=False, log_every=5), tmp_path / "sg", run_name="beat-prior")
    first, last = s["history"][0], s["history"][-1]
    assert last["recon"] < first["recon"] and last["recon"] < last["prior_mse"]


def test_samples_and_out_of_range(tiny_bank):
    g = build("sg", tiny_bank)
    res = g.generate(ENC.encode(["zqxj vbnm wrtp"])[0], samples=3)
    assert len(res.samples) == 3 and res.uncertainty["samples"] == 3 and "posterior_rel_std" in res.uncertainty
    assert not res.in_range and "far from every expert" in res.warnings[0]
    with pytest.raises(HypergenError, match="samples must be >= 1"):
        g.generate(ENC.encode([ANTONYM])[0], samples=0)


def test_registry_refuses_duplicates_and_unknown_names():
    with pytest.raises(HypergenError, match="already registered"):
        register_generator("sg", GeneratorConfig, get_family("sg"))
    with pytest.raises(HypergenError, match="Unknown generator 'nope'; registered: .*sg"):
        get_family("nope")


@pytest.mark.parametrize("family, bad, message", [
    ("t2l", {"hiden": 32}, r"no field\(s\) \['hiden'\]; the t2l family does not take them. Its fields: .*hidden"),
    ("sg", {"latent": 0}, "SGConfig.latent must be >= 1"), ("sg", {"var_floor": 0.0}, "var_floor > 0"),
    ("lego", {"iters": -1}, "LegoConfig.iters must be >= 0"),
])
def test_a_bad_family_config_is_refused_by_name(tiny_bank, family, bad, message):
    with pytest.raises(HypergenError, match=message):  # a typo was a raw TypeError
        build(family, tiny_bank, **bad)


def test_generate_api_and_cli(tiny_zoo, tiny_path, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from hypergen import api
    from hypergen.cli import app

    common = dict(zoo_path=str(tiny_zoo.root), base=str(tiny_path), encoder_name="fake", device="cpu")
    res = api.generate(ANTONYM, "mix", inputs=["hot"], out=tmp_path / "mix", max_new_tokens=3, **common)
    assert res.timings_ms["total"] >= res.timings_ms["generate"] and len(res.answers) == 1
    assert (tmp_path / "mix" / "adapter_model.safetensors").is_file()
    assert json.loads((tmp_path / "mix" / "hypergen.json").read_text())["generator"] == "mix"
    model = api.resident(common["base"], "cpu")
    asked, real_answer = [], model.answer
    monkeypatch.setattr(model, "answer", lambda texts, **kw: asked.append((model.active, kw.get("description"))) or real_answer(texts, **kw))
    for default in (False, True):  # the evaluation's default mode, unless told
        monkeypatch.setattr(api, "DEFAULT_PROMPT_DESCRIPTION", default)
        api.generate(ANTONYM, "mix", inputs=["hot"], max_new_tokens=3, **common)
    api.generate(ANTONYM, "mix", inputs=["hot"], max_new_tokens=3, prompt_description=False, **common)
    monkeypatch.setattr(api, "DEFAULT_PROMPT_DESCRIPTION", False)
    api.generate(ANTONYM, "mix", inputs=["hot"], max_new_tokens=3, prompt_description=True, **common)
    # --prompt-description: adapter and description
    assert asked == [("generated", None), ("generated", ANTONYM), ("generated", None), ("generated", ANTONYM)]
    with pytest.raises(HypergenError, match="Empty description"):
        api.generate("   ", "mix", **common)
    long = api.generate("word " * 2000, "nearest", activate=False, **{k: v for k, v in common.items() if k != "base"})
    assert any("truncated" in w for w in long.warnings)
    r = CliRunner().invoke(app, ["generate", ANTONYM, "--generator", "nearest", "--zoo", str(tiny_zoo.root), "--encoder", "fake", "--base", str(tiny_path), "--out", str(tmp_path / "n"), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["neighbors"][0]["name"] == "antonyms" and "generate" in out["timings_ms"] and out["out"] == str(tmp_path / "n")
    r = CliRunner().invoke(app, ["generate", ANTONYM, "--generator", "nope", "--zoo", str(tiny_zoo.root), "--encoder", "fake"])
    assert r.exit_code == 1 and "registered:" in r.stderr
    r = CliRunner().invoke(app, ["generate", ANTONYM, "--samples", "0", "--zoo", str(tiny_zoo.root), "--encoder", "fake"])
    assert r.exit_code == 1 and "samples must be >= 1" in r.stderr


@pytest.mark.parametrize("name", [n for n in FAMILIES if get_family(n).training_only])
def test_training_only_tensors_are_saved_apart_and_not_needed_to_generate(name, tiny_bank, tmp_path):
    """A CVAE's posterior encoder goes to training.safetensors; without it (as shipped) the generator
    generates the same adapter but refuses to train on."""
    from hypergen.generators import TRAINING_FILE
    from hypergen.generators.train import TrainConfig, train_generator

    gen = make(name, tiny_bank, tmp_path, steps=4)
    from safetensors import safe_open

    with safe_open(str(tmp_path / name / "generator.safetensors"), "pt") as f:
        assert not any(k.startswith(gen.training_only) for k in f.keys())
    with safe_open(str(tmp_path / name / TRAINING_FILE), "pt") as f:
        assert f.keys() and all(k.startswith(gen.training_only) for k in f.keys())
    full = load_generator(tmp_path / name, tiny_bank, family=name)
    assert not full.inference_only
    (tmp_path / name / TRAINING_FILE).unlink()
    shipped = load_generator(tmp_path / name, tiny_bank, family=name)
    assert shipped.inference_only
    e = ENC.encode([ANTONYM])[0]
    for p in tiny_bank.layout.paths:
        torch.testing.assert_close(shipped.generate(e).weights.modules[p][1], full.generate(e).weights.modules[p][1])
    with pytest.raises(HypergenError, match="training-only"):
        train_generator(shipped, TrainConfig(steps=1, logger="none", progress=False), tmp_path / "again")


def test_default_generator_needs_a_checkpoint_only_when_trainable(monkeypatch, tmp_path):
    from hypergen import api

    monkeypatch.setattr(api, "generators_dir", lambda: tmp_path)  # no checkpoints at all: none trained
    monkeypatch.setenv("HYPERGEN_GENERATORS", str(tmp_path))  # and none shipped
    for name in ("nearest", "mix"):
        monkeypatch.setattr(api, "DEFAULT_GENERATOR", name)
        assert api.default_generator() == name
    monkeypatch.setattr(api, "DEFAULT_GENERATOR", "sg")
    assert api.default_generator() == api.FALLBACK_GENERATOR
    (tmp_path / "sg").mkdir()
    (tmp_path / "sg" / "generator.json").write_text("{}")
    assert api.default_generator() == "sg"


def test_a_checkpoint_is_refused_on_another_encoder_or_base(tiny_bank, tmp_path):
    """load_generator names both sides: the encoder (name and dim) and the base a checkpoint was made for."""
    from hypergen.generators import ExpertBank

    gen = build("sg", tiny_bank)
    gen.save(tmp_path / "sg")
    meta = json.loads((tmp_path / "sg" / "generator.json").read_text())
    assert meta["encoder"] == "fake" and meta["encoder_dim"] == tiny_bank.dim
    b = tiny_bank
    other = ExpertBank(b.names, b.emb, b.variants, b.flat, b.traj, b.layout, {**b.meta, "encoder": "all-MiniLM-L6-v2"})
    with pytest.raises(HypergenError, match="trained on 'fake' description embeddings, but the encoder in use is 'all-MiniLM-L6-v2'"):
        load_generator(tmp_path / "sg", other)
    with pytest.raises(HypergenError, match="made for base model 'tiny-llama', but the loaded base is 'SmolLM2-360M-Instruct'"):
        load_generator(tmp_path / "sg", tiny_bank, base_model="SmolLM2-360M-Instruct")
    moved = ExpertBank(b.names, b.emb, b.variants, b.flat, b.traj, b.layout, {**b.meta, "base_model": "SmolLM2-360M-Instruct"})
    with pytest.raises(HypergenError, match="made for base model 'tiny-llama'"):
        load_generator(tmp_path / "sg", moved)  # the bank's base when none is given
    meta["encoder_dim"] = b.dim + 1
    (tmp_path / "sg" / "generator.json").write_text(json.dumps(meta))
    with pytest.raises(HypergenError, match=f"{b.dim + 1}-dim description embeddings"):
        load_generator(tmp_path / "sg", tiny_bank)
    for k in ("encoder", "encoder_dim"):  # a checkpoint older than these records loads
        meta.pop(k)
    (tmp_path / "sg" / "generator.json").write_text(json.dumps(meta))
    assert load_generator(tmp_path / "sg", other).checkpoint == tmp_path / "sg"


def test_mix_builds_its_adapter_once(tiny_bank, monkeypatch):
    """The exact rank-K*r mix is made in sample() and returned as is: no rank-r adapter is unflattened
    from the flat vector only to be thrown away (2 experts: 2 unflattens, not 2 + 3 samples + their mean)."""
    import hypergen.generators.baselines as baselines
    from hypergen.generators import Layout

    mixes, unflattens = [], []
    real_mix, real_unflatten = baselines.mix, Layout.unflatten
    monkeypatch.setattr(baselines, "mix", lambda *a, **k: mixes.append(1) or real_mix(*a, **k))
    monkeypatch.setattr(Layout, "unflatten", lambda self, *a, **k: unflattens.append(1) or real_unflatten(self, *a, **k))
    res = build("mix", tiny_bank, top_k=2).generate(ENC.encode([ANTONYM])[0], samples=3)
    assert (len(mixes), len(unflattens)) == (1, 2)
    assert res.weights.rank == 2 * tiny_bank.layout.rank and len(res.samples) == 3 and all(s is res.weights for s in res.samples)


def test_spread_says_how_much_adapters_differ_in_weight_updates(tiny_bank):
    """Layout.spread: 0 for copies of one adapter, 1 for two that cancel, sqrt(1/2) for an adapter beside no
    update; computed on dW = B A, so a change of gauge (A -> M A, B -> B M^-1) leaves it; fewer than 2 refused."""
    layout, flat = tiny_bank.layout, tiny_bank.flat[0].float()
    w = layout.unflatten(flat.clone())
    negated = layout.flatten(type(w)({p: (a, -b) for p, (a, b) in w.modules.items()}, w.alpha))
    assert layout.spread(torch.stack([flat, flat, flat])) == pytest.approx(0.0, abs=1e-3)
    assert layout.spread(torch.stack([flat, negated])) == pytest.approx(1.0, abs=1e-6)
    assert layout.spread(torch.stack([flat, torch.zeros_like(flat)])) == pytest.approx(0.5**0.5, abs=1e-6)
    m = torch.eye(layout.rank) + 0.3 * torch.randn(layout.rank, layout.rank, generator=torch.Generator().manual_seed(0))
    regauged = layout.flatten(type(w)({p: (m @ a, b @ torch.linalg.inv(m)) for p, (a, b) in w.modules.items()}, w.alpha))
    other = tiny_bank.flat[1].float()
    assert layout.spread(torch.stack([regauged, other])) == pytest.approx(layout.spread(torch.stack([flat, other])), rel=1e-4)
    flats = torch.randn(5, layout.numel, generator=torch.Generator().manual_seed(1))
    dws = [torch.cat([(b @ a).reshape(-1) for a, b in layout.unflatten(f).modules.values()]) for f in flats]
    dense = torch.stack(dws)
    want = ((dense - dense.mean(0)).square().sum(1).mean() / dense.square().sum(1).mean()).sqrt()
    assert layout.spread(flats) == pytest.approx(float(want), rel=1e-4)  # equals the spread of the dense dWs
    assert 0 < layout.spread(tiny_bank.flat.float()) < 1
    with pytest.raises(HypergenError, match="at least 2"):
        layout.spread(flat[None])
