"""The registry is the one list: a family registered only in this file runs through api.generate,
api.train (recon) and the eval with no other edit. Also: Method strings round-trip."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from hypergen.errors import HypergenError
from hypergen.generators import Generator, GeneratorConfig, Sampled, register_generator, registered, unregister_generator
from hypergen.paths import REPO_ROOT

DEMO = str(REPO_ROOT / "data" / "demo" / "demo.jsonl")
ANTONYM = "Give the antonym of the word: the word with the opposite meaning."


@dataclass
class ToyConfig(GeneratorConfig):
    """init: the learned map's starting scale (0: every description starts at the zoo's mean adapter)."""

    init: float = 0.0


class Toy(Generator):
    """x_hat = the zoo's mean adapter + W e(description): the smallest family that learns from the description."""

    trainable = True
    objectives = ("recon",)

    def __init__(self, config: ToyConfig, bank):
        super().__init__(config, bank)
        self.register_buffer("mean", bank.flat.mean(0), persistent=False)  # (P,) rebuilt from the bank
        self.w = nn.Linear(bank.dim, bank.layout.numel, bias=False)  # (D -> P)
        nn.init.constant_(self.w.weight, config.init)

    def training_loss(self, batch):
        loss = ((self.mean + self.w(batch["cond"]) - batch["target"]) ** 2).mean() * 1e4  # tiny-zoo weights are ~1e-2
        return {"loss": loss}

    def sample(self, cond, n, gen, extra=None):
        return Sampled((self.mean + self.w(cond[None])).expand(n, -1))


@pytest.fixture()
def toy():
    register_generator("toy", ToyConfig, Toy)
    yield "toy"
    unregister_generator("toy")
    assert "toy" not in registered()  # the next test sees the shipped families only


def test_a_family_registered_here_generates_trains_and_is_evaluated(toy, tiny_zoo, tiny_path, tmp_path, monkeypatch):
    from hypergen import api
    from hypergen.eval import EvalConfig, run
    from hypergen.generators.train import TrainConfig

    monkeypatch.setenv("HYPERGEN_HOME", str(tmp_path / "home"))  # `hypergen train` writes here; generate looks here first
    common = dict(zoo_path=str(tiny_zoo.root), encoder_name="fake")
    with pytest.raises(HypergenError, match="train it with `hypergen train toy`"):
        api.generate(ANTONYM, toy, activate=False, **common)

    summary = api.train(toy, TrainConfig(steps=20, batch_size=4, lr=1e-3, log_every=1, logger="none", progress=False, ckpt_every=20), **common)
    folder = tmp_path / "home" / "generators" / toy
    assert Path(summary["out"]) == folder and (folder / "generator.safetensors").is_file()
    losses = [h["loss"] for h in summary["history"]]
    assert losses[-1] < 0.5 * losses[0], losses  # it learned something
    with pytest.raises(HypergenError, match="objective 'sft'"):
        api.train(toy, TrainConfig(objective="sft", steps=1, logger="none", progress=False), base=str(tiny_path), **common)

    res = api.generate(ANTONYM, toy, activate=False, **common)  # by name: the checkpoint just trained
    assert res.generator == toy and Path(res.checkpoint) == folder.resolve()
    mean = api.bank(common["zoo_path"], "fake").flat.mean(0)
    p = tuple(res.weights.modules)[0]
    assert not torch.equal(res.weights.modules[p][0].reshape(-1), mean[: res.weights.modules[p][0].numel()])  # not the untrained mean

    cfg = EvalConfig(suite=DEMO, split="all", methods=("base", toy, f"{toy}+desc", f"{toy}@other"), zoo=common["zoo_path"], base=str(tiny_path), encoder="fake",
                     device="cpu", instances=2, seeds=1, tasks=("antonyms", "review_sentiment"), out=str(tmp_path / "eval"), bootstrap=50)
    s = run(cfg, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "eval" / "results.jsonl").read_text().splitlines()]
    # controls: it uses the description; with +desc only the adapter's description is swapped, the prompt keeps the task's
    controlled = ["toy@gibberish", "toy@other", "toy+desc@gibberish", "toy+desc@other"]
    assert {r["method"] for r in rows} == {"base", "toy", "toy+desc", *controlled}
    assert len(rows) == 2 * 7  # a control named in methods and added by --controls is scored once
    assert all(r["key"]["generator"] != "missing" for r in rows if r["method"].startswith(toy))  # keyed on the checkpoint's content
    prompt = {r["method"]: r["key"]["descriptions"] for r in rows}
    assert prompt["toy+desc@gibberish"] != prompt["toy+desc"] and prompt["toy+desc@gibberish"] != prompt["toy@gibberish"]
    assert list(s["methods"]) == ["base", "toy", "toy+desc", *controlled]
    assert set(s["controls"]["toy"]) >= {"aligned_minus_gibberish", "aligned_minus_other", "aligned_minus_gibberish_family"}
    assert set(s["controls"]["toy+desc"]) >= {"aligned_minus_gibberish", "aligned_minus_other"}
    assert s["bar"]["best_family"] == s["bar"]["default"] and s["bar"]["default"] in (toy, f"{toy}+desc")  # the only trainable family scored, in a mode
    assert toy in EvalConfig(suite=DEMO, split="all").methods  # in the default list while registered


def test_an_unregistered_family_is_gone_from_the_registry_and_the_eval():
    """Registered: listed and an eval method; unregistered: neither."""
    from hypergen.eval import EvalConfig, Method
    from hypergen.eval.methods import all_methods

    assert "toy" not in registered()
    register_generator("toy", ToyConfig, Toy)
    try:
        assert "toy" in registered() and "toy" in all_methods()
        assert Method.parse("toy").check() == Method("toy", False, None)  # a method while registered
    finally:
        unregister_generator("toy")
    assert "toy" not in registered() and "toy" not in all_methods()
    with pytest.raises(HypergenError, match="Unknown method"):
        EvalConfig(suite=DEMO, split="all", methods=("toy",))


def test_registry_checks_what_a_family_declares():
    class Untrainable(Toy):
        trainable = False  # yet it declares an objective

    class Unknown(Toy):
        objectives = ("telepathy",)

    for cls in (Untrainable, Unknown):
        with pytest.raises(HypergenError, match="declares its objectives"):
            register_generator("bad", ToyConfig, cls)
    assert "bad" not in registered()
    with pytest.raises(HypergenError, match="Unknown generator 'bad'"):
        unregister_generator("bad")


@pytest.mark.parametrize("key, want", [
    ("base", ("base", False, None)), ("base_desc", ("base", True, None)), ("oracle+desc", ("oracle", True, None)),
    ("sg", ("sg", False, None)), ("sg+desc", ("sg", True, None)), ("sg@gibberish", ("sg", False, "gibberish")), ("mix@other", ("mix", False, "other")),
])
def test_method_strings_round_trip(key, want):
    from hypergen.eval import Method

    m = Method.parse(key)
    assert (m.name, m.prompt_description, m.control) == want and str(m) == key and m.check() == m
    assert Method.parse(str(Method(*want))) == m


@pytest.mark.parametrize("key, message", [("base+desc", "write base_desc"), ("sg@noise", "controls: gibberish, other"), ("telepathy", "available: base"),
                                          ("multitask@gibberish", "no gibberish control"), ("oracle@other", "no other control")])
def test_bad_method_strings_say_what_to_write(key, message):
    from hypergen.eval import Method

    with pytest.raises(HypergenError, match=message):
        Method.parse(key).check()
