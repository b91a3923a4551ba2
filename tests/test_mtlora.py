"""mtlora, one multi-task LoRA trained with sft: t2l's fair baseline (same rows, steps and examples)."""

from __future__ import annotations

import pytest
import torch

from hypergen.errors import HypergenError
from hypergen.generators import build, get_family, load_generator
from hypergen.generators.sft import TrainBatches, prepare_sft, sft_step
from hypergen.generators.train import LitGenerator, TrainConfig, train_generator
from hypergen.paths import REPO_ROOT
from hypergen.text import FakeEncoder

ENC = FakeEncoder()
ANTONYM = "Give the antonym of the word: the word with the opposite meaning."
OTHER = "Classify the sentiment of the movie review as positive or negative."


def sft_cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"objective": "sft", "steps": 3, "batch_size": 2, "lr": 3e-3, "sft_examples": 2, "sft_max_tokens": 96, "logger": "none",
                          "progress": False, "log_every": 1, "ckpt_every": 1000, **kw})


@pytest.fixture()
def sft(tiny_bank, tiny_zoo, resident):
    return prepare_sft(tiny_bank, tiny_zoo, resident, sft_cfg())


def test_declares_a_description_blind_sft_family():
    from hypergen.eval import Method

    cls = get_family("mtlora")
    assert (cls.uses_description, cls.trainable, cls.objectives, cls.stochastic) == (False, True, ("sft",), False)
    assert not Method("mtlora").controlled  # the eval adds no gibberish / other rows for it
    with pytest.raises(HypergenError, match="no gibberish control"):
        Method.parse("mtlora@gibberish").check()


def test_untrained_it_is_the_base_with_peft_init(tiny_bank, resident):
    """B = 0 (the first adapter changes nothing), A ~ U(+-1/sqrt(in)) seeded by the config: the very A
    a zoo expert starts from with the same seed (ResidentModel.new_trainable)."""
    from hypergen.config import LoraSpec

    w = build("mtlora", tiny_bank).generate(ENC.encode([ANTONYM])[0]).weights
    for a, b in w.modules.values():
        bound = a.shape[1] ** -0.5
        assert torch.count_nonzero(b) == 0
        assert float(a.abs().max()) <= bound and float(a.std()) == pytest.approx(bound / 3**0.5, rel=0.1)  # the uniform's std
    assert torch.equal(build("mtlora", tiny_bank).flat, build("mtlora", tiny_bank).flat)
    assert not torch.equal(build("mtlora", tiny_bank).flat, build("mtlora", tiny_bank, seed=1).flat)
    resident.new_trainable("fresh", LoraSpec(rank=tiny_bank.layout.rank, alpha=tiny_bank.layout.alpha))
    fresh = resident.weights("fresh")
    assert tuple(fresh.modules) == tiny_bank.layout.paths
    assert all(torch.equal(a, fresh.modules[p][0]) for p, (a, _) in w.modules.items())


def test_same_adapter_whatever_the_description(tiny_bank, sft):
    g = build("mtlora", tiny_bank)
    with torch.no_grad():
        g.flat.add_(0.01 * torch.randn(g.flat.shape, generator=torch.Generator().manual_seed(0)))  # B != 0, so a difference would show
    a, b = (g.generate(ENC.encode([d])[0], description=d).weights for d in (ANTONYM, OTHER))
    assert all(torch.equal(a.modules[p][i], b.modules[p][i]) for p in a.modules for i in (0, 1))
    res = g.generate(ENC.encode([ANTONYM])[0], samples=3)  # not stochastic: 3 draws are one adapter
    assert res.uncertainty["sample_rel_std"] == 0 and all(torch.equal(s.modules[p][1], a.modules[p][1]) for s in res.samples for p in a.modules)
    batch = TrainBatches(sft, 3, seed=0)[0]
    cond = torch.stack([sft.tasks[r[0]].cond[r[1]] for r in batch.tolist()])
    flat, extra = g.adapter_for_training(cond, {"cond": cond})
    assert flat.shape == (3, g.layout.numel) and not extra and all(torch.equal(f, g.flat) for f in flat)
    a.modules[g.layout.paths[0]][1].add_(1.0)  # the adapter handed out is a copy, not the parameter
    assert not torch.equal(g.generate(ENC.encode([ANTONYM])[0]).weights.modules[g.layout.paths[0]][1], a.modules[g.layout.paths[0]][1])


def test_the_gradient_reaches_the_lora_not_the_base(tiny_bank, sft, resident):
    g = build("mtlora", tiny_bank)
    out = sft_step(g, sft, TrainBatches(sft, 3, seed=0)[0])
    assert set(out) == {"loss", "nll"} and torch.isfinite(out["loss"])
    out["loss"].backward()
    grads = g.layout.unflatten(g.flat.grad).modules.values()
    assert float(sum(b.abs().sum() for _, b in grads)) > 0
    assert float(sum(a.abs().sum() for a, _ in grads)) == 0  # dL/dA = s B^T (...) = 0 while B = 0, as in peft's first step
    assert all(p.grad is None for p in resident.model.parameters())


def test_it_learns_with_sft_and_the_checkpoint_round_trips(tiny_bank, sft, tmp_path):
    g = build("mtlora", tiny_bank)
    summary = train_generator(g, sft_cfg(steps=20, batch_size=4, lr=1e-1), tmp_path / "mt", sft_data=sft, run_name="mtlora-learns")
    losses = [h["loss"] for h in summary["history"] if "loss" in h]
    assert len(losses) == 20 and summary["steps_done"] == 20
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1, losses  # lr 0 keeps ~5.5 throughout (test_sft)
    assert (tmp_path / "mt" / "generator.json").is_file() and (tmp_path / "mt" / "generator.safetensors").is_file()
    again = load_generator(tmp_path / "mt", tiny_bank, family="mtlora")
    assert again.checkpoint == tmp_path / "mt" and not again.inference_only
    assert torch.equal(again.flat, g.flat.detach().half().float())  # fp16 on disk, nothing else lost
    e = ENC.encode([ANTONYM])[0]
    for (a1, b1), (a2, b2) in zip(again.generate(e).weights.modules.values(), g.generate(e).weights.modules.values()):
        assert torch.equal(a1, a2.half().float()) and torch.equal(b1, b2.half().float())
    assert float(again.flat.abs().sum()) > float(build("mtlora", tiny_bank).flat.abs().sum())  # trained: B moved off 0


def test_t2l_and_mtlora_runs_see_the_same_batches(tiny_bank, tiny_zoo, resident, tmp_path, monkeypatch):
    """The fair baseline: with one TrainConfig both families train on identical rows, step by step."""
    seen: dict[str, list[torch.Tensor]] = {}
    step = LitGenerator.training_step

    def recording(self, batch, i):
        seen.setdefault(self.generator.family, []).append(batch.clone())
        return step(self, batch, i)

    monkeypatch.setattr(LitGenerator, "training_step", recording)
    cfg = sft_cfg(steps=4, batch_size=3, seed=7, sft_prompt_description=0.5, sft_max_tokens=400)
    data = prepare_sft(tiny_bank, tiny_zoo, resident, cfg)  # room for the descriptions in the prompt
    for family, kw in (("t2l", {"hidden": 16}), ("mtlora", {})):
        train_generator(build(family, tiny_bank, **kw), cfg, tmp_path / family, sft_data=data, run_name=f"same-{family}")
    assert len(seen["t2l"]) == len(seen["mtlora"]) == 4
    assert all(torch.equal(a, b) for a, b in zip(seen["t2l"], seen["mtlora"]))
    assert len({tuple(b[:, 0].tolist()) for b in seen["t2l"]}) > 1  # the steps differ, so a shift would show
    assert all(torch.equal(b, TrainBatches(data, 3, seed=7, prompt_description=0.5)[s]) for s, b in enumerate(seen["mtlora"]))


def test_eval_leaves_it_out_untrained_and_refuses_it_by_name_as_for_t2l(tiny_zoo, tiny_path, tmp_path, monkeypatch):
    """Like t2l, an untrained mtlora can be named but is not in the default methods, and naming it says how to train it."""
    from hypergen.eval import EvalConfig, all_methods
    from hypergen.eval.methods import default_methods

    monkeypatch.setenv("HYPERGEN_HOME", str(tmp_path / "home"))
    (tmp_path / "shipped").mkdir()  # a generators/ folder without mtlora, as the checkout's is
    monkeypatch.setenv("HYPERGEN_GENERATORS", str(tmp_path / "shipped"))
    assert {"mtlora", "t2l"} <= set(all_methods()) and not {"mtlora", "t2l"} & set(default_methods())
    assert {"base", "base_desc", "nearest", "oracle"} <= set(default_methods())
    with pytest.raises(HypergenError, match=r"No trained checkpoint for mtlora, t2l: train with `hypergen train NAME`"):
        EvalConfig(suite=str(REPO_ROOT / "data" / "demo" / "demo.jsonl"), split="all", methods=("base", "mtlora", "t2l+desc"), zoo=str(tiny_zoo.root), base=str(tiny_path),
                   encoder="fake", device="cpu", instances=1, seeds=1, tasks=("antonyms",), out=str(tmp_path / "eval"), bootstrap=10)
    assert "mtlora" not in EvalConfig(suite=str(REPO_ROOT / "data" / "demo" / "demo.jsonl"), split="all", zoo=str(tiny_zoo.root)).methods


def test_the_issue_bar_judges_a_generator_not_the_baseline():
    """mtlora scoring highest is the best method, but the bar's targets are for a learned family that
    maps descriptions to adapters: sg here, not the description-blind baseline."""
    from hypergen.eval.stats import bar

    def m(main, rouge, **kw):
        return {"tasks": 2, "main": main, "rougeL": rouge, **kw}

    summary = {"split": "heldout", "methods": {"base": m(0.2, 0.1), "multitask": m(0.3, 0.3), "nearest": m(0.4, 0.4), "sg": m(0.45, 0.35), "mtlora": m(0.5, 0.5)},
               "controls": {"sg": {"aligned_minus_gibberish": 0.01, "aligned_minus_gibberish_family": 0.1}}}
    b = bar(summary)
    assert (b["best_family"], b["best_method"], b["default"]) == ("sg", "mtlora", "sg")
    assert bar({**summary, "methods": {k: v for k, v in summary["methods"].items() if k != "sg"}}) == {}  # no generator scored
    blind = bar({**summary, "controls": {"sg": {"aligned_minus_gibberish_family": 0.0}}})  # no mode clears the control
    assert blind["uses_description"] == [] and blind["default"] == "sg"  # still a family that takes the description, not mtlora
