"""ABMLL on the tiny zoo: loss terms, training, posterior sampling, checkpoints, NaN stop, size."""

from __future__ import annotations

import math

import pytest
import torch

from hypergen.errors import HypergenError
from hypergen.generators import ExpertBank, build, load_generator
from hypergen.generators.abmll import ABMLL, ABMLLConfig
from hypergen.generators.train import TrainConfig, train_generator
from hypergen.text import FakeEncoder

ENC = FakeEncoder()
ANTONYM = "Give the antonym of the word: the word with the opposite meaning."


def quick(**kw) -> TrainConfig:
    return TrainConfig(**{"steps": 5, "batch_size": 8, "lr": 3e-3, "logger": "none", "progress": False, "log_every": 1, "ckpt_every": 1000, **kw})


def full_batch(g) -> torch.Tensor:
    ds = g.training_examples()
    return torch.stack([ds[i] for i in range(len(ds))])


def test_recon_training_lowers_the_loss_and_the_kl_matters(tiny_bank, tmp_path):
    torch.manual_seed(0)
    g = build("abmll", tiny_bank)
    batch = g.batch_tensors(full_batch(g))
    with torch.no_grad():
        before = g.training_loss(batch)
    assert all(torch.isfinite(v) for v in before.values()), before
    kl, prior = g.config.beta * before["kl"], g.gamma * before["prior"]
    fit = before["loss"] - kl - prior
    assert kl / (fit.abs() + kl + prior) > 0.1  # the paper's beta let the KL vanish; ours must not
    assert before["kl"] > 0.5 and before["mse"] == pytest.approx(before["global_mse"])  # starts at the global mean
    train_generator(g, quick(steps=80), tmp_path / "g", run_name="abmll-recon")
    with torch.no_grad():
        after = g.training_loss(batch)
    assert all(torch.isfinite(v) for v in after.values())
    assert after["loss"] < 0.7 * before["loss"] and after["nll"] < before["nll"] - 1
    assert after["mse"] < 0.8 * after["global_mse"]  # the description moved the posterior toward its expert


def test_samples_spread_around_the_posterior_mean(tiny_bank):
    torch.manual_seed(0)
    g = build("abmll", tiny_bank)
    cond = ENC.encode([ANTONYM])[0]
    with torch.no_grad():
        mean, var = g.posterior(cond[None])
    res = g.generate(cond, samples=4, seed=1)
    flats = torch.stack([tiny_bank.layout.flatten(w) for w in res.samples])
    assert len(res.samples) == 4 and all(not torch.equal(flats[0], f) for f in flats[1:])
    assert res.uncertainty["posterior_rel_std"] > 0 and res.uncertainty["sample_rel_std"] > 0
    one = g.generate(cond)  # samples=1: the posterior mean, no noise
    torch.testing.assert_close(tiny_bank.layout.flatten(one.weights), g.norm.decode(mean[0]))
    # many samples: the mean approaches the posterior mean and the spread matches Sampled.variance
    n = 4000
    with torch.no_grad():
        out = g.sample(cond, n, torch.Generator().manual_seed(0))
    w_var = out.variance  # (P,) weight space
    err = (out.flat.mean(0) - g.norm.decode(mean[0])).abs()
    assert (err <= 5 * (w_var / n).sqrt() + 1e-7).all()
    assert out.flat.var(0).mean() / w_var.mean() == pytest.approx(1, abs=0.05)
    torch.testing.assert_close(w_var, var[0] * g.norm.scale() ** 2)


def test_same_seed_same_output(tiny_bank):
    torch.manual_seed(0)
    g = build("abmll", tiny_bank)
    cond = ENC.encode([ANTONYM])[0]
    p = tiny_bank.layout.paths[0]
    a, b, c = (g.generate(cond, samples=3, seed=s).samples[2].modules[p][1] for s in (7, 7, 8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_checkpoint_roundtrip_and_wrong_family(tiny_bank, tmp_path):
    torch.manual_seed(0)
    g = build("abmll", tiny_bank, beta=0.3, hidden=64)
    train_generator(g, quick(), tmp_path / "ab", run_name="abmll-roundtrip")
    again = load_generator(tmp_path / "ab", tiny_bank, family="abmll")
    assert isinstance(again, ABMLL) and again.config == g.config
    for k, v in g.state_for_save().items():  # stored in fp16: identical up to that rounding
        assert torch.equal(again.state_dict()[k], v.half().float()), k
    twice = load_generator(tmp_path / "ab", tiny_bank)
    cond = ENC.encode([ANTONYM])[0]
    p = tiny_bank.layout.paths[1]
    r1, r2 = again.generate(cond, samples=3, seed=2), twice.generate(cond, samples=3, seed=2)
    assert all(torch.equal(x.modules[p][1], y.modules[p][1]) for x, y in zip(r1.samples, r2.samples))
    torch.testing.assert_close(r1.weights.modules[p][1], g.generate(cond, samples=3, seed=2).weights.modules[p][1], atol=2e-3, rtol=1e-2)
    with pytest.raises(HypergenError, match="holds a 'abmll' generator, not 'sg'"):
        load_generator(tmp_path / "ab", tiny_bank, family="sg")


@pytest.mark.parametrize(("field", "value", "message"), [("beta", -1.0, "beta and gamma must be >= 0"), ("gamma", -0.1, "beta and gamma"), ("init_post_var", 0.0, "init_post_var must be > 0"), ("var_floor", 0.0, "var_floor"), ("hidden", 0, "hidden must be"), ("nll_power", 2.0, "nll_power must be in")])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(HypergenError, match=message):
        ABMLLConfig(**{field: value})


def test_nan_in_the_bank_stops_training_at_step_0(tiny_bank, tmp_path):
    flat = tiny_bank.flat.clone()
    flat[1, 5] = float("nan")
    bad = ExpertBank(tiny_bank.names, tiny_bank.emb, tiny_bank.variants, flat, [flat[i][None] for i in range(len(tiny_bank))], tiny_bank.layout, tiny_bank.meta)
    with pytest.raises(HypergenError, match=r"non-finite loss nan at step 0"):
        train_generator(build("abmll", bad), quick(), tmp_path / "bad", run_name="abmll-nan-bank")


def test_nan_later_names_its_step(tiny_bank, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = ABMLL.training_loss

    def flaky(self, batch):
        out = real(self, batch)
        calls["n"] += 1
        if calls["n"] == 3:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(ABMLL, "training_loss", flaky)
    with pytest.raises(HypergenError, match="at step 2"):
        train_generator(build("abmll", tiny_bank), quick(), tmp_path / "flaky", run_name="abmll-nan-step")


def test_size_at_smollm2_scale():
    """30 layers, q_proj 576->576, v_proj 576->192, rank 8: P = 460,800; the generator stays ~10 MB in fp16."""
    from hypergen.testing import smollm2_bank

    bank = smollm2_bank(3)
    layout = bank.layout
    g = build("abmll", bank)
    n = sum(v.numel() for v in g.state_for_save().values())
    assert layout.numel == 460_800
    assert 4e6 < n < 7e6 and n * 2 / 2**20 < 12  # ~5.4 M parameters at hidden=128, ~10 MiB fp16 (zoo + generators share a 60 MB budget)
    assert math.isfinite(float(g.hyperprior()))
