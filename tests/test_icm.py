"""ICM-LoRA on the tiny zoo: training, sampling, checkpoints, PEFT export, the optional task vector,
and the size bound at SmolLM2 scale (a fake bank: no real model)."""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import pytest
import torch

from hypergen.errors import HypergenError
from hypergen.generators import build, load_generator
from hypergen.generators.icm import ICMConfig, ICMLoRA
from hypergen.text import FakeEncoder

ENC = FakeEncoder()
ANTONYM = "Give the antonym of the word: the word with the opposite meaning."


def full_loss(gen) -> dict[str, float]:
    """The training loss over every training example with fixed noise: comparable before and after."""
    batch = gen.batch_tensors(gen.training_examples().items)
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(0)
        return {k: float(v) for k, v in gen.training_loss(batch).items()}


@pytest.fixture(scope="module")
def trained(tiny_bank, tmp_path_factory):
    """One ICM generator trained for 60 recon steps on the tiny zoo and saved; shared by the tests."""
    from hypergen.generators.train import TrainConfig, train_generator

    tmp = tmp_path_factory.mktemp("icm")
    gen = build("icm", tiny_bank)
    before = full_loss(gen)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYPERGEN_HOME", str(tmp / "home"))  # Lightning's resumable checkpoints go here
        summary = train_generator(gen, TrainConfig(steps=60, batch_size=8, lr=3e-3, logger="none", progress=False, log_every=10, ckpt_every=60), tmp / "out", run_name="test-icm")
    return SimpleNamespace(gen=gen, out=tmp / "out", before=before, after=full_loss(gen), summary=summary)


def emb(text: str = ANTONYM) -> torch.Tensor:
    return ENC.encode([text])[0]


def flat_of(gen, w) -> torch.Tensor:
    return gen.layout.flatten(w)


# ---- training ------------------------------------------------------------------------------------
def test_training_lowers_the_loss_and_keeps_the_kl_visible(trained):
    b, a = trained.before, trained.after
    assert b["recon"] == pytest.approx(1.0, abs=0.05)  # untrained decoder = the zoo's mean (z-scores)
    assert a["loss"] < 0.5 * b["loss"] and a["recon"] < 0.5 * b["recon"]
    beta = trained.gen.config.beta
    assert a["kl"] > 0 and beta * a["kl"] > 1e-2 * a["recon"]  # the KL term is not numerically negligible
    assert {"loss", "recon", "kl"} <= set(trained.summary["history"][-1])


def test_generated_adapter_is_closer_to_the_described_expert_than_the_zoo_mean(trained, tiny_bank):
    gen = trained.gen
    i = tiny_bank.names.index("antonyms")
    target = gen.norm.encode(tiny_bank.flat[i])
    got = gen.norm.encode(flat_of(gen, gen.generate(emb()).weights))
    zoo_mean = gen.norm.encode(torch.cat(tiny_bank.traj).mean(0))
    assert (got - target).pow(2).mean() < 0.5 * (zoo_mean - target).pow(2).mean()


# ---- generation --------------------------------------------------------------------------------
def test_generate_returns_the_banks_layout(trained, tiny_bank):
    res = trained.gen.generate(emb(), description=ANTONYM)
    L = tiny_bank.layout
    assert res.generator == "icm" and res.samples == [] and res.uncertainty is None
    assert list(res.weights.modules) == list(L.paths) and res.weights.alpha == L.alpha
    assert [tuple(a.shape) for a, _ in res.weights.modules.values()] == list(L.a_shapes)
    assert [tuple(b.shape) for _, b in res.weights.modules.values()] == list(L.b_shapes)
    assert all(torch.isfinite(a).all() and torch.isfinite(b).all() for a, b in res.weights.modules.values())
    assert res.neighbors[0].name == "antonyms"


def test_samples_differ_and_report_their_spread(trained):
    res = trained.gen.generate(emb(), samples=3, seed=1)
    flats = [flat_of(trained.gen, w) for w in res.samples]
    assert len(flats) == 3 and res.uncertainty["samples"] == 3
    assert not torch.equal(flats[0], flats[1]) and not torch.equal(flats[1], flats[2])
    assert res.uncertainty["sample_rel_std"] > 1e-3
    torch.testing.assert_close(flat_of(trained.gen, res.weights), torch.stack(flats).mean(0))  # the result is the mean


def test_same_seed_same_output_and_one_sample_is_z_zero(trained):
    g = trained.gen
    a, b, c = (g.generate(emb(), samples=3, seed=s) for s in (7, 7, 8))
    for wa, wb in zip(a.samples, b.samples):
        assert torch.equal(flat_of(g, wa), flat_of(g, wb))
    assert not torch.equal(flat_of(g, a.samples[0]), flat_of(g, c.samples[0]))
    # samples=1 decodes z = 0 (the prior's mean): the seed does not matter
    one = flat_of(g, g.generate(emb(), seed=1).weights)
    assert torch.equal(one, flat_of(g, g.generate(emb(), seed=2).weights))
    with torch.no_grad():
        z0 = g.norm.decode(g.decoder(torch.cat([torch.zeros(1, g.config.latent), emb()[None]], 1)))[0]
    assert torch.equal(one, z0)


# ---- checkpoints -------------------------------------------------------------------------------
def test_checkpoint_roundtrip_gives_identical_output(trained, tiny_bank):
    meta = json.loads((trained.out / "generator.json").read_text())
    assert meta["family"] == "icm" and meta["config"]["beta"] == trained.gen.config.beta and meta["config"]["task_vector_dim"] == 0
    loaded = load_generator(trained.out, tiny_bank, family="icm")
    assert isinstance(loaded, ICMLoRA)
    # the checkpoint is fp16: the in-memory generator rounded the same way must give the very same adapters
    ref = build("icm", tiny_bank)
    ref.load_state_dict({k: v.half().float() for k, v in trained.gen.state_dict().items()})
    for kw in ({}, {"samples": 3, "seed": 5}):
        got, want = loaded.generate(emb(), **kw), ref.generate(emb(), **kw)
        for w_got, w_want in zip(got.samples or [got.weights], want.samples or [want.weights]):
            assert torch.equal(flat_of(ref, w_got), flat_of(ref, w_want))
    torch.testing.assert_close(flat_of(ref, loaded.generate(emb()).weights), flat_of(ref, trained.gen.generate(emb()).weights), atol=1e-3, rtol=1e-2)


def test_loading_as_another_family_names_both(trained, tiny_bank):
    with pytest.raises(HypergenError, match="holds a 'icm' generator, not 'sg'"):
        load_generator(trained.out, tiny_bank, family="sg")


def test_exported_adapter_loads_in_plain_peft_with_every_tensor(trained, tiny_path, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    res = trained.gen.generate(emb(), description=ANTONYM)
    res.weights.save(tmp_path / "ad")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_path), tmp_path / "ad")
    assert [str(w.message) for w in caught if "key" in str(w.message).lower()] == []
    sd = pm.state_dict()
    assert len([k for k in sd if "lora_" in k]) == 2 * len(res.weights.modules)
    for p, (a, b) in res.weights.modules.items():
        assert b.abs().sum() > 0  # a zero B would compare equal to peft's own init
        assert torch.equal(sd[f"base_model.model.{p}.lora_A.default.weight"], a)
        assert torch.equal(sd[f"base_model.model.{p}.lora_B.default.weight"], b)


# ---- size at SmolLM2 scale ---------------------------------------------------------------------
def test_checkpoint_is_at_most_20_mb_at_smollm2_scale(tmp_path):
    from hypergen.testing import smollm2_bank

    bank = smollm2_bank()
    assert bank.layout.numel == 460_800
    gen = build("icm", bank)
    n = sum(v.numel() for v in gen.state_for_save().values())
    assert 2 * n <= 20e6, f"{n} parameters = {2 * n / 1e6:.1f} MB in fp16"
    gen.save(tmp_path / "icm")
    assert (tmp_path / "icm" / "generator.safetensors").stat().st_size <= 20e6
    res = gen.generate(bank.emb[0])
    assert list(res.weights.modules) == list(bank.layout.paths) and res.weights.num_params() == 460_800


# ---- the optional task vector ------------------------------------------------------------------
def test_task_vector_is_optional_and_joins_the_condition(tiny_bank, tmp_path):
    D, N, T = tiny_bank.emb.shape[1], len(tiny_bank), 16
    off = build("icm", tiny_bank)
    assert off.cond_dim == D and "task_vectors" not in off.state_dict()
    with pytest.raises(HypergenError, match="trained without task vectors"):
        off.generate(emb(), task_vector=torch.randn(T))
    with pytest.raises(HypergenError, match="task_vector_dim=0"):
        off.set_task_vectors(torch.randn(N, T))

    gen = build("icm", tiny_bank, task_vector_dim=T)
    assert gen.cond_dim == D + T
    with pytest.raises(HypergenError, match="set_task_vectors"):
        gen.training_loss(gen.batch_tensors(gen.training_examples().items[:4]))
    with pytest.raises(HypergenError, match=rf"\({N}, {T}\)"):
        gen.set_task_vectors(torch.randn(N, T + 1))
    tv = 50 * torch.randn(N, T, generator=torch.Generator().manual_seed(0))  # raw hidden states: large norm
    gen.set_task_vectors(tv)
    opt = torch.optim.Adam(gen.parameters(), lr=3e-3)
    first = full_loss(gen)["loss"]
    torch.manual_seed(0)
    data = gen.training_examples().items
    for _ in range(30):
        loss = gen.training_loss(gen.batch_tensors(data[torch.randint(len(data), (8,))]))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert full_loss(gen)["loss"] < 0.7 * first

    with pytest.raises(HypergenError, match="pass task_vector="):
        gen.generate(emb())
    with pytest.raises(HypergenError, match="has 15 dims"):
        gen.generate(emb(), task_vector=torch.randn(15))
    a, b = (flat_of(gen, gen.generate(emb(), task_vector=tv[j]).weights) for j in (0, 1))
    assert not torch.equal(a, b)  # the task vector changes the adapter
    assert torch.equal(a, flat_of(gen, gen.generate(emb(), task_vector=tv[0]).weights))
    with pytest.raises(HypergenError, match="pass task_vector="):
        gen.generate(emb())  # the vector of the previous call does not linger

    # the task vector reaches sample() as an argument; a family without that condition refuses it
    with torch.no_grad():
        assert torch.equal(gen.sample(emb(), 1, torch.Generator().manual_seed(0), {"task_vector": tv[0]}).flat[0], a)
    with pytest.raises(HypergenError, match="The sg generator takes no task_vector; its extra conditions: none"):
        build("sg", tiny_bank).generate(emb(), task_vector=tv[0])

    gen.save(tmp_path / "tv")
    back = load_generator(tmp_path / "tv", tiny_bank, family="icm")
    assert back.config.task_vector_dim == T
    torch.testing.assert_close(flat_of(gen, back.generate(emb(), task_vector=tv[0]).weights), a, atol=1e-3, rtol=1e-2)


def test_config_rejects_bad_values():
    with pytest.raises(HypergenError, match="beta must be >= 0"):
        ICMConfig(beta=-1.0)
    with pytest.raises(HypergenError, match="task_vector_dim must be >= 0"):
        ICMConfig(task_vector_dim=-1)
    with pytest.raises(HypergenError, match="latent must be >= 1"):
        ICMConfig(latent=0)
    with pytest.raises(HypergenError, match="top_k must be >= 1"):
        ICMConfig(top_k=0)
