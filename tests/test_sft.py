"""The sft objective on the tiny model: data preparation, adapter injection, gradients, training."""

from __future__ import annotations

import json

import pytest
import torch

from hypergen.data import collate, encode_example
from hypergen.errors import HypergenError
from hypergen.generators import ExpertBank, build
from hypergen.generators.sft import SLOT, prepare_sft, sft_step, task_nll
from hypergen.generators.train import TrainConfig, train_generator
from hypergen.text import FakeEncoder


def sft_cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"objective": "sft", "steps": 3, "batch_size": 2, "lr": 3e-3, "sft_examples": 2, "sft_max_tokens": 64, "logger": "none", "progress": False, "log_every": 1, "ckpt_every": 1000, **kw})


@pytest.fixture()
def sft(tiny_bank, tiny_zoo, resident):
    return prepare_sft(tiny_bank, tiny_zoo, resident, sft_cfg())


def test_prepare_reads_each_experts_train_split(sft, tiny_bank, tiny_zoo, resident):
    from hypergen.tasks import load_suite
    from hypergen.zoo.build import instances

    suite = load_suite(tiny_zoo.meta["suite"])
    assert sft.names == tiny_bank.names
    total = 0
    for name, exs in zip(sft.names, sft.examples):
        train = instances(suite.get(name), None, "train")  # the demo suite has no split file
        total += len(train)
        assert exs and all(len(e.input_ids) <= 64 for e in exs)
        first = encode_example(resident.tokenizer, train[0].input, train[0].targets[0], max_tokens=64)
        assert first is None or exs[0].input_ids == first.input_ids
    assert sum(map(len, sft.examples)) + sft.n_skipped == total
    assert SLOT in resident.adapters and resident.active is None
    assert not any(p.requires_grad for p in resident.model.parameters())  # the base is frozen


def test_injected_adapter_equals_a_loaded_one(sft, tiny_bank, tiny_zoo, resident):
    """functional_call with the expert's flat weights gives the loss of the expert loaded for real."""
    i = 2
    layout = tiny_bank.layout
    resident.activate(SLOT)
    sft.gen.manual_seed(5)
    with torch.no_grad():
        injected = task_nll(sft, tiny_bank.flat[i], layout, i)
        sft.gen.manual_seed(5)  # the same examples again
        zero = task_nll(sft, torch.zeros(layout.numel), layout, i)
    sft.gen.manual_seed(5)
    pick = torch.randperm(len(sft.examples[i]), generator=sft.gen)[: sft.n_examples].tolist()
    enc = collate([sft.examples[i][j] for j in pick], resident.tokenizer.pad_token_id)
    resident.activate(tiny_zoo.weights(tiny_bank.names[i]), name="real")
    with torch.no_grad():
        real = resident.forward_model()(**enc).loss
        resident.deactivate()
        with resident.forward_model().disable_adapter():
            base = resident.forward_model()(**enc).loss
    assert float(injected) == pytest.approx(float(real), rel=1e-4)
    assert float(zero) == pytest.approx(float(base), rel=1e-4) and abs(float(real) - float(base)) > 1e-4


def test_gradient_reaches_the_generator_not_the_base(sft, tiny_bank, resident):
    torch.manual_seed(0)
    g = build("abmll", tiny_bank)
    out = sft_step(g, sft, torch.tensor([[0, 0, 0], [3, 1, 0]]))
    assert set(out) == {"loss", "nll", "beta_kl", "gamma_prior"} and all(torch.isfinite(v) for v in out.values())
    assert float(out["loss"]) == pytest.approx(float(out["nll"] + out["beta_kl"] + out["gamma_prior"]))
    out["loss"].backward()
    # (the trunk gets gradient from the second step on: the heads start at zero)
    for n in ("mu_g", "logvar_g", "decoder.heads.q_proj.weight", "decoder.heads.v_proj.bias"):
        p = dict(g.named_parameters())[n]
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    assert all(p.grad is None for p in resident.forward_model().parameters())
    assert resident.active is None  # the resident is left as it was found


def test_families_without_adapter_for_training_are_refused(sft, tiny_bank):
    with pytest.raises(HypergenError, match="use --objective recon"):
        sft_step(build("sg", tiny_bank), sft, torch.tensor([[0, 0, 0]]))


def test_prepare_refuses_another_base(tiny_zoo, resident):
    bank = ExpertBank.from_zoo(tiny_zoo, FakeEncoder(), trajectories=False)
    bank.meta["base_model"] = "SmolLM2-360M-Instruct"
    with pytest.raises(HypergenError, match="made for base model 'SmolLM2-360M-Instruct'"):
        prepare_sft(bank, tiny_zoo, resident, sft_cfg())


def test_train_generator_sft_end_to_end(sft, tiny_bank, tmp_path):
    torch.manual_seed(0)
    g = build("abmll", tiny_bank, hidden=32)
    before = {k: v.clone() for k, v in g.state_for_save().items()}
    summary = train_generator(g, sft_cfg(), tmp_path / "sft", sft_data=sft, run_name="abmll-sft")
    assert len(summary["history"]) == 3 and all(set(h) >= {"loss", "nll", "beta_kl"} for h in summary["history"])
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in summary["history"])
    assert any(not torch.equal(before[k], v) for k, v in g.state_for_save().items() if k.startswith("decoder.heads"))
    assert json.loads((tmp_path / "sft" / "train.json").read_text())["train"]["objective"] == "sft"


def test_api_train_warm_starts_from_a_saved_checkpoint(tiny_zoo, tiny_path, tmp_path, monkeypatch):
    """recon, then sft from that checkpoint (--init): with lr 0 the sft run must keep the recon weights."""
    from safetensors.torch import load_file

    from hypergen import api

    monkeypatch.setenv("HYPERGEN_HOME", str(tmp_path / "home"))
    common = {"zoo_path": str(tiny_zoo.root), "encoder_name": "fake", "base": str(tiny_path), "device": "cpu"}
    api.train("abmll", TrainConfig(steps=5, batch_size=4, lr=3e-3, logger="none", progress=False), out=tmp_path / "recon", hidden=32, **common)
    api.train("abmll", sft_cfg(steps=1, lr=0.0), out=tmp_path / "sft", init=tmp_path / "recon", **common)
    recon, sft = (load_file(str(tmp_path / d / "generator.safetensors")) for d in ("recon", "sft"))
    assert recon.keys() == sft.keys() and all(torch.equal(recon[k], sft[k]) for k in recon)
    assert json.loads((tmp_path / "sft" / "generator.json").read_text())["config"]["hidden"] == 32
    with pytest.raises(HypergenError, match="keeps the config"):
        api.train("abmll", sft_cfg(), out=tmp_path / "x", init=tmp_path / "recon", hidden=64, **common)
    with pytest.raises(HypergenError, match="not 'icm'"):
        api.train("icm", sft_cfg(), out=tmp_path / "y", init=tmp_path / "recon", **common)
