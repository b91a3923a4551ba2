"""The sft objective on the tiny model: per-row adapters in one pass, gradients, every family, resume, validation."""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from hypergen.data import answer_loss, collate, encode_example
from hypergen.errors import HypergenError
from hypergen.generators import ExpertBank, build
from hypergen.generators.sft import TrainBatches, adapter_spread, batch_examples, prepare_sft, rows_nll, sft_step, val_batches
from hypergen.generators.train import LR_FLOOR, RUN_ONLY, LitGenerator, TrainConfig, export_run, lr_factor, run_folder, train_generator, weights_fingerprint
from hypergen.text import FakeEncoder


def sft_cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"objective": "sft", "steps": 3, "batch_size": 2, "lr": 3e-3, "sft_examples": 2, "sft_max_tokens": 96, "logger": "none", "progress": False, "log_every": 1, "ckpt_every": 1000, **kw})


@pytest.fixture()
def sft(tiny_bank, tiny_zoo, resident):
    return prepare_sft(tiny_bank, tiny_zoo, resident, sft_cfg())


def test_prepare_reads_each_experts_train_split(sft, tiny_bank, tiny_zoo, resident):
    from hypergen.tasks import load_suite
    from hypergen.zoo.build import instances

    suite = load_suite(tiny_zoo.meta["suite"])
    assert [t.name for t in sft.tasks] == tiny_bank.names and not sft.val  # zoo tasks: no validation families by default
    total = 0
    for i, t in enumerate(sft.tasks):
        total += len(instances(suite.get(t.name), None, "train"))
        assert t.expert == i and t.train and all(len(e.input_ids) <= 96 for e in t.train)
        assert torch.equal(t.cond, tiny_bank.variants[i])
    assert sum(len(t.train) for t in sft.tasks) + sft.n_skipped == total
    assert not resident.adapters and resident.peft is None  # per-row adapters need no peft slot
    assert not any(p.requires_grad for p in resident.model.parameters())  # the base is frozen


@pytest.mark.parametrize("counts", [[2, 2, 2], [1, 3, 2]], ids=["even", "uneven"])
def test_one_pass_equals_each_task_with_its_adapter_loaded(sft, tiny_bank, resident, counts):
    """A mixed batch (3 tasks, 3 adapters, examples padded together) gives each row the loss of its own
    examples with its adapter loaded into peft: the mean of per-task losses within 1e-5."""
    layout = tiny_bank.layout
    g = torch.Generator().manual_seed(0)
    flat = torch.stack([tiny_bank.flat[1], tiny_bank.flat[3], tiny_bank.flat[0] + 0.05 * torch.randn(layout.numel, generator=g)])
    tasks = [sft.tasks[1], sft.tasks[3], sft.tasks[2]]  # the third row runs another task's examples: rows are independent
    examples = [t.train[:k] for t, k in zip(tasks, counts)]
    with torch.no_grad():
        got = rows_nll(resident, layout, flat, examples)
    want = []
    for r in range(3):
        resident.activate(layout.unflatten(flat[r], resident.name), name="one")
        with torch.no_grad():
            want.append(float(answer_loss(resident.forward_model(), collate(examples[r], resident.tokenizer.pad_token_id))))
    resident.deactivate()
    torch.testing.assert_close(got, torch.tensor(want), atol=1e-5, rtol=0)
    assert float(got.mean()) == pytest.approx(sum(want) / 3, abs=1e-5)
    assert len({round(w, 3) for w in want}) == 3  # the adapters differ, so a mix-up would show


@pytest.mark.parametrize("family", ["abmll", "sg", "icm", "t2l"])
def test_gradient_reaches_the_generator_not_the_base(sft, tiny_bank, resident, family):
    torch.manual_seed(0)
    g = build(family, tiny_bank)
    batch = TrainBatches(sft, 3, seed=0)[0]
    out = sft_step(g, sft, batch)
    assert all(torch.isfinite(v) for v in out.values())
    assert float(out["loss"]) == pytest.approx(float(out["nll"] + sum(v for k, v in out.items() if k not in ("loss", "nll"))))
    if family in ("sg", "icm"):
        assert float(out["beta_kl"]) > 0  # zoo rows have an expert: the CVAE's KL to its prior
    out["loss"].backward()
    heads = [p for n, p in g.named_parameters() if n.startswith("decoder.heads")]
    assert heads and all(p.grad is not None for p in heads) and sum(float(p.grad.abs().sum()) for p in heads) > 0
    assert all(p.grad is None for p in resident.model.parameters())


@pytest.mark.parametrize("family", ["abmll", "sg", "icm", "t2l", "mtlora"])
def test_validation_scores_the_adapter_generate_makes(sft, tiny_bank, family):
    """In eval mode the sft adapter is deterministic and, for a row whose task is a zoo expert, is what
    generate() makes from the description: not a draw, and not read off the task's own expert. sg's
    semantic prior leaves a row's own expert out, so its rows are compared as a task the zoo lacks (index -1),
    which is what generate() meets for a new description."""
    torch.manual_seed(0)
    g = build(family, tiny_bank).eval()
    with torch.no_grad():  # untrained, the output heads are near 0 and would hide a wrong latent
        for p in g.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    cond = torch.stack([t.cond[0] for t in sft.tasks[:2]])
    index = torch.tensor([t.expert for t in sft.tasks[:2]])
    assert bool((index >= 0).all())  # the demo tasks are the tiny zoo's experts
    first, again = (g.adapter_for_training(cond, {"cond": cond, "index": index})[0] for _ in range(2))
    torch.testing.assert_close(first, again, atol=0, rtol=0)
    if family == "sg":
        first = g.adapter_for_training(cond, {"cond": cond, "index": torch.tensor([-1, -1])})[0]
    for r in range(2):
        made = g.sample(cond[r], 1, torch.Generator().manual_seed(0)).flat[0]  # what generate() turns into the adapter
        torch.testing.assert_close(first[r], made, atol=1e-5, rtol=1e-4)


def test_sg_rows_without_an_expert_use_the_prior(sft, tiny_bank):
    g = build("sg", tiny_bank)
    cond = torch.stack([t.cond[0] for t in sft.tasks[:2]])
    flat, extra = g.adapter_for_training(cond, {"index": torch.tensor([-1, -1])})
    assert flat.shape == (2, tiny_bank.layout.numel) and float(extra["beta_kl"]) == 0
    flat, extra = g.adapter_for_training(cond, {"index": torch.tensor([0, -1])})
    assert float(extra["beta_kl"]) > 0


def test_t2l_learns_on_four_demo_tasks(sft, tiny_bank, tmp_path):
    torch.manual_seed(0)
    g = build("t2l", tiny_bank, hidden=64)
    summary = train_generator(g, sft_cfg(steps=20, batch_size=4, lr=3e-2, warmup=3), tmp_path / "t2l", sft_data=sft, run_name="t2l-learns")
    losses = [h["loss"] for h in summary["history"] if "loss" in h]
    assert len(losses) == 20 and summary["steps_done"] == 20
    # the random tiny base moves little under a rank-8 LoRA (its experts too); lr 0 keeps ~5.5 throughout
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1, losses


def test_families_without_sft_are_refused(sft, tiny_bank):
    from hypergen.generators import registered

    recon_only = next((n for n, c in registered().items() if c.trainable and "sft" not in c.objectives), None)
    with pytest.raises(HypergenError, match="cannot train with objective 'sft'"):
        sft_step(build("multitask", tiny_bank), sft, TrainBatches(sft, 1, 0)[0])
    assert recon_only is None  # every trainable family has the sft objective now


def test_prepare_refuses_another_base(tiny_zoo, resident):
    bank = ExpertBank.from_zoo(tiny_zoo, FakeEncoder(), trajectories=False)
    bank.meta["base_model"] = "SmolLM2-360M-Instruct"
    with pytest.raises(HypergenError, match="made for base model 'SmolLM2-360M-Instruct'"):
        prepare_sft(bank, tiny_zoo, resident, sft_cfg())


def test_batches_are_a_function_of_the_step_and_drawn_family_first(sft):
    a, b = TrainBatches(sft, 4, seed=1), TrainBatches(sft, 4, seed=1)
    assert torch.equal(a[7], b[7]) and not torch.equal(a[7], a[8])
    assert not torch.equal(a[7], TrainBatches(sft, 4, seed=1, rank=1)[7])
    # one family of 1 task against one of 3: rows come half from each, not 1 in 4
    sft.tasks[1].name, sft.tasks[2].name, sft.tasks[3].name = "big/a", "big/b", "big/c"
    sft.__post_init__()
    rows = torch.cat([TrainBatches(sft, 8, seed=0)[s] for s in range(100)])
    assert 0.4 < float((rows[:, 0] == 0).float().mean()) < 0.6


def _whole_and_killed_at_3(bank, cfg, data, tmp_path, name, monkeypatch):
    """Two runs of `cfg` from the same start: one whole (returns its generator and summary), one (`name`)
    stopped when step 3 begins, a SIGKILL stand-in that leaves its checkpoints as they were."""
    torch.manual_seed(0)
    whole = build("t2l", bank, hidden=32, dropout=0.0, noise=0.0)
    start = {k: v.clone() for k, v in whole.state_dict().items()}
    ref = train_generator(whole, cfg, tmp_path / "whole", sft_data=data, run_name="whole")
    g = build("t2l", bank, hidden=32, dropout=0.0, noise=0.0)
    g.load_state_dict(start)
    step = LitGenerator.training_step

    def dies_at_3(self, batch, i):
        if self.global_step == 3:
            raise KeyboardInterrupt("SIGKILL stand-in")
        return step(self, batch, i)

    monkeypatch.setattr(LitGenerator, "training_step", dies_at_3)
    with pytest.raises((KeyboardInterrupt, SystemExit)):  # Lightning ends a run that catches Ctrl-C with exit 1
        train_generator(g, cfg, tmp_path / name, sft_data=data, run_name=name)
    monkeypatch.setattr(LitGenerator, "training_step", step)
    return whole, ref


@pytest.mark.parametrize("share", [0.0, 0.5], ids=["plain", "half-with-description"])
def test_a_killed_run_resumes_to_the_same_end(tiny_bank, tiny_zoo, resident, tmp_path, monkeypatch, share):
    """Stopped after step 3 (last checkpoint at 2), the rerun loads it and ends where an uninterrupted run
    does; before the rerun, --export writes the generator of that last checkpoint (no validation here)."""
    cfg = sft_cfg(steps=6, ckpt_every=2, log_every=1, sft_prompt_description=share, sft_max_tokens=400)  # room for descriptions
    sft = prepare_sft(tiny_bank, tiny_zoo, resident, cfg)
    flagged = sum(int(TrainBatches(sft, cfg.batch_size, cfg.seed, prompt_description=share)[s][:, 2].sum()) for s in range(6))
    assert (flagged > 0) == (share > 0)
    whole, ref = _whole_and_killed_at_3(tiny_bank, cfg, sft, tmp_path, "resumed", monkeypatch)
    exported = export_run(build("t2l", tiny_bank, hidden=32, dropout=0.0, noise=0.0), replace(cfg, steps=100), tmp_path / "resumed", sft_data=sft, run_name="resumed")
    last = torch.load(exported["exported_from"], map_location="cpu", weights_only=False)
    assert exported["exported_from"].endswith("last.ckpt") and exported["step"] == last["global_step"] == 2 and exported["val_nll"] is None
    saved = load_file(str(tmp_path / "resumed" / "generator.safetensors"))
    assert saved and all(torch.equal(v, last["state_dict"][f"generator.{k}"].half()) for k, v in saved.items())
    g2 = build("t2l", tiny_bank, hidden=32, dropout=0.0, noise=0.0)
    again = train_generator(g2, cfg, tmp_path / "resumed", sft_data=sft, run_name="resumed")
    assert again["steps_done"] == ref["steps_done"] == 6
    assert again["resumed_from"] == 2  # it started from the step-2 checkpoint
    assert [h["step"] for h in again["history"]] == [h["step"] for h in ref["history"]] == [0, 1, 2, 3, 4, 5]  # the curve survived the kill
    for k, v in whole.state_for_save().items():
        torch.testing.assert_close(g2.state_for_save()[k], v, atol=1e-6, rtol=1e-5)


def test_validation_families_pick_the_checkpoint(tiny_bank, tiny_zoo, resident, tmp_path):
    cfg = sft_cfg(steps=6, val_families=1, val_every=2, lr=3e-2)
    data = prepare_sft(tiny_bank, tiny_zoo, resident, cfg)
    assert len(data.tasks) == 3 and len(data.val) == 1 and data.val[0].family not in {t.family for t in data.tasks}
    torch.manual_seed(0)
    g = build("t2l", tiny_bank, hidden=32)
    summary = train_generator(g, cfg, tmp_path / "v", sft_data=data, run_name="val")
    vals = [h["val_nll"] for h in summary["history"] if "val_nll" in h]
    assert len(vals) == 3 and summary["best_val_nll"] == pytest.approx(min(vals), abs=1e-6)
    assert vals.index(min(vals)) < len(vals) - 1  # the best is not the last step, so keeping the last would show below
    best = torch.load(summary["best_checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    for k, v in g.state_for_save().items():
        torch.testing.assert_close(v, best[f"generator.{k}"])  # the generator kept is the best, not the last
    saved = json.loads((tmp_path / "v" / "train.json").read_text())
    assert saved["sft_tasks"]["val"] == 1 and saved["train"]["objective"] == "sft"


def test_a_run_killed_after_a_validation_keeps_its_score(tiny_bank, tiny_zoo, resident, tmp_path, monkeypatch):
    """The step-2 checkpoint is written before step 2's validation: killed at step 3, the rerun must still
    know that validation (its history entry and the best score so far), or the loss curve loses a point
    and a worse later step can replace the best checkpoint."""
    cfg = sft_cfg(steps=4, val_families=1, val_every=2, ckpt_every=2, lr=3e-2)
    data = prepare_sft(tiny_bank, tiny_zoo, resident, cfg)
    whole, ref = _whole_and_killed_at_3(tiny_bank, cfg, data, tmp_path, "killed", monkeypatch)
    g2 = build("t2l", tiny_bank, hidden=32, dropout=0.0, noise=0.0)
    again = train_generator(g2, cfg, tmp_path / "killed", sft_data=data, run_name="killed")
    assert again["resumed_from"] == 2 and not list(Path(again["best_checkpoint"]).parent.glob("*.tmp"))
    vals = [(h["step"], h["val_nll"]) for h in again["history"] if "val_nll" in h]
    assert [s for s, _ in vals] == [h["step"] for h in ref["history"] if "val_nll" in h] == [2, 4]
    assert again["best_val_nll"] == pytest.approx(ref["best_val_nll"], abs=1e-5)
    assert again["best_val_nll"] == pytest.approx(min(v for _, v in vals), abs=1e-6)
    for k, v in whole.state_for_save().items():  # the same generator kept as the uninterrupted run's
        torch.testing.assert_close(g2.state_for_save()[k], v, atol=1e-6, rtol=1e-5)


def test_validation_measures_another_tasks_description(tiny_bank, tiny_zoo, resident, tmp_path):
    """The held-out control during training: the validation rows again, each adapter made from the next
    validation task's first description, the rows' own examples kept."""
    cfg = sft_cfg(steps=4, val_families=2, val_every=2, lr=3e-2)
    data = prepare_sft(tiny_bank, tiny_zoo, resident, cfg)
    assert len(data.val) == 2
    torch.manual_seed(0)
    g = build("t2l", tiny_bank, hidden=32)
    summary = train_generator(g, cfg, tmp_path / "o", sft_data=data, run_name="other")
    logged = [h for h in summary["history"] if "val_nll" in h]
    assert len(logged) == 2 and all("val_nll_other" in h for h in logged)
    # how far the descriptions move the adapter, read at each validation: the kept (best) step's is the generator's
    assert all(0 < h["adapter_spread"] < 1 for h in logged)
    kept = min(logged, key=lambda h: h["val_nll"])
    assert kept["adapter_spread"] == pytest.approx(adapter_spread(g, data), rel=1e-5)
    assert logged[0]["adapter_spread"] != pytest.approx(logged[1]["adapter_spread"], rel=1e-3)  # read after each step's training
    for mode in (True, False):  # it leaves the mode as it found it
        g.train(mode)
        adapter_spread(g, data)
        assert g.training is mode
    g.eval()
    batch = val_batches(data, 4)[0]
    other = [data.val[(t + 1) % 2] for t in batch[:, 0].tolist()]
    cond = torch.stack([t.cond[0] for t in other])
    flat, _ = g.adapter_for_training(cond, {"cond": cond, "index": torch.tensor([t.expert for t in other])})
    want = rows_nll(data.resident, g.layout, flat, batch_examples(data, batch, validation=True)).mean()
    got, own = (sft_step(g, data, batch, validation=True, other=o)["nll"] for o in (True, False))
    torch.testing.assert_close(got, want)
    assert abs(float(got - own)) > 1e-4  # trained on them, the two descriptions make different adapters
    with pytest.raises(HypergenError, match="at least 2 tasks"):
        sft_step(g, replace(data, val=data.val[:1]), batch[:1], validation=True, other=True)


def test_the_contrast_term_is_a_hinge_on_own_against_another_rows_adapter(sft, tiny_bank):
    """contrast > 0: each row's examples are scored again under the next row's adapter (another task's),
    and the loss adds contrast * mean relu(margin + own - other), computed here from rows_nll directly."""
    torch.manual_seed(0)
    g = build("t2l", tiny_bank, hidden=32).eval()  # eval: deterministic adapters, so both calls make the same ones
    with torch.no_grad():  # untrained heads are near 0: every adapter would be alike
        for p in g.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    batch = torch.tensor([[0, 0, 0, 0, 1], [1, 0, 0, 0, 1], [1, 1, 0, 2, 3], [2, 0, 0, 1, 2]])  # rows 1 and 2: one task
    pairs = [(0, 1), (2, 3), (3, 0)]
    from hypergen.generators.sft import partners

    assert partners(batch[:, 0].tolist()) == pairs and partners([5, 5, 5]) == []
    cond = torch.stack([sft.tasks[t].cond[v] for t, v in batch[:, :2].tolist()])
    flat, _ = g.adapter_for_training(cond, {"cond": cond, "index": batch[:, 0]})
    examples = batch_examples(sft, batch)
    with torch.no_grad():
        own = rows_nll(sft.resident, g.layout, flat, examples)
        other = rows_nll(sft.resident, g.layout, flat[[j for _, j in pairs]], [examples[i] for i, _ in pairs])
    gaps = own[[i for i, _ in pairs]] - other
    assert float(gaps.abs().min()) > 1e-4  # the adapters differ, so a mix-up would show
    for weight, margin in [(0.5, 10.0), (2.0, 0.0), (1.0, -10.0)]:
        out = sft_step(g, sft, batch, contrast=weight, margin=margin)
        torch.testing.assert_close(out["nll"], own.mean())
        torch.testing.assert_close(out["contrast"], weight * torch.relu(margin + gaps).mean())
        torch.testing.assert_close(out["nll_other"], other.mean())
        torch.testing.assert_close(out["other_minus_own"], -gaps.mean())
        torch.testing.assert_close(out["loss"], out["nll"] + out["contrast"])  # nll_other is only logged
    plain = sft_step(g, sft, batch)  # contrast 0 (the default): the plain loss, no second pass
    assert set(plain) == {"loss", "nll"}
    torch.testing.assert_close(plain["loss"], own.mean())
    g.train()
    out = sft_step(g, sft, batch, contrast=1.0, margin=10.0)
    (out["contrast"]).backward()  # the term alone trains the generator
    assert sum(float(p.grad.abs().sum()) for p in g.parameters() if p.grad is not None) > 0
    with pytest.raises(HypergenError, match="must be >= 0"):
        TrainConfig(objective="sft", contrast=-1.0)
    with pytest.raises(HypergenError, match="needs --objective sft"):
        TrainConfig(objective="recon", contrast=1.0)


def test_contrast_is_part_of_the_run_identity_and_trains(sft, tiny_bank, tmp_path):
    g = build("t2l", tiny_bank, hidden=32)
    folder = run_folder(g, sft_cfg(), tmp_path / "o", sft_data=sft)
    assert run_folder(g, sft_cfg(contrast=0.0, contrast_margin=0.5), tmp_path / "o", sft_data=sft) == folder  # the default: older runs keep theirs
    assert run_folder(g, sft_cfg(contrast=1.0), tmp_path / "o", sft_data=sft) != folder
    torch.manual_seed(0)
    summary = train_generator(g, sft_cfg(steps=3, batch_size=4, contrast=1.0, contrast_margin=10.0), tmp_path / "c", sft_data=sft, run_name="contrast")
    logged = [h for h in summary["history"] if "loss" in h]
    assert len(logged) == 3 and all(h["contrast"] > 0 and "nll_other" in h for h in logged)
    assert all(h["loss"] == pytest.approx(h["nll"] + h["contrast"], abs=1e-5) for h in logged)


def test_a_run_starts_from_weights_its_seed_decides(tiny_zoo, tmp_path, monkeypatch):
    """TrainConfig.seed seeds the initial weights: two runs of one config start alike even when the process
    drew random numbers in between (loading the encoder and the base can), and another seed starts elsewhere."""
    from safetensors.torch import load_file

    from hypergen import api

    monkeypatch.setenv("HYPERGEN_HOME", str(tmp_path / "home"))
    cfg = TrainConfig(steps=1, batch_size=4, lr=0.0, logger="none", progress=False)  # lr 0: the saved weights are the initial ones
    common = {"zoo_path": str(tiny_zoo.root), "encoder_name": "fake"}
    api.train("icm", cfg, out=tmp_path / "a", **common)
    torch.rand(1000)
    monkeypatch.setenv("HYPERGEN_RUNS", str(tmp_path / "runs-b"))  # a second run, not a resume of the first
    api.train("icm", cfg, out=tmp_path / "b", **common)
    api.train("icm", replace(cfg, seed=1), out=tmp_path / "c", **common)
    a, b, c = (load_file(str(tmp_path / x / "generator.safetensors")) for x in "abc")
    assert a.keys() == b.keys() == c.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


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


def test_a_finished_run_extends_with_more_steps(sft, tiny_bank, tmp_path):
    """--steps is RUN_ONLY: rerun with 5 steps, a finished 3-step run continues from step 3 (not from 0)
    and ends where a 5-step run ends."""
    assert "steps" in RUN_ONLY and "sft_prompt_description" not in RUN_ONLY
    torch.manual_seed(0)
    whole = build("t2l", tiny_bank, hidden=32, dropout=0.0, noise=0.0)
    start = {k: v.clone() for k, v in whole.state_dict().items()}
    ref = train_generator(whole, sft_cfg(steps=5), tmp_path / "whole", sft_data=sft, run_name="whole")
    g = build("t2l", tiny_bank, hidden=32, dropout=0.0, noise=0.0)
    g.load_state_dict(start)
    first = train_generator(g, sft_cfg(steps=3), tmp_path / "ext", sft_data=sft, run_name="ext")
    g_more = build("t2l", tiny_bank, hidden=32, dropout=0.0, noise=0.0)
    more = train_generator(g_more, sft_cfg(steps=5), tmp_path / "ext", sft_data=sft, run_name="ext")
    assert first["steps_done"] == 3 and more["resumed_from"] == 3 and more["steps_done"] == 5
    assert [h["step"] for h in more["history"]] == [0, 1, 2, 3, 4]
    for a, b in zip(more["history"], ref["history"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    for k, v in whole.state_for_save().items():  # and the weights after step 5's update too
        torch.testing.assert_close(g_more.state_for_save()[k], v, atol=1e-6, rtol=1e-5)


def test_the_description_goes_in_the_prompt_of_a_share_of_rows(tiny_bank, tiny_zoo, resident):
    tok = resident.tokenizer  # byte-level: a description takes ~60 of the budget's tokens
    sft = prepare_sft(tiny_bank, tiny_zoo, resident, sft_cfg(sft_max_tokens=400))
    plain, full = TrainBatches(sft, 4, seed=0)[0], TrainBatches(sft, 4, seed=0, prompt_description=1.0)[0]
    assert torch.equal(plain[:, [0, 1, 3, 4]], full[:, [0, 1, 3, 4]]) and plain[:, 2].eq(0).all() and full[:, 2].eq(1).all()  # only the flag differs
    without, with_ = batch_examples(sft, plain), batch_examples(sft, full)
    for row, a, b in zip(full.tolist(), without, with_):
        task = sft.tasks[row[0]]
        desc = task.descriptions[row[1]]
        assert task.descriptions == tiny_zoo.record(task.name).descriptions  # the texts of the embedded variants
        assert a and len(a) == len(b)
        for j, ea, eb in zip(row[3:], a, b):
            assert ea is task.train[j] and desc not in tok.decode(ea.input_ids)
            assert desc in tok.decode(eb.input_ids)
            assert eb == encode_example(tok, *task.train_text[j], description=desc, max_tokens=sft.max_tokens)  # the eval's +desc prompt
            assert [x for x in eb.labels if x != -100] == [x for x in ea.labels if x != -100]  # the same answer learned
    g = build("t2l", tiny_bank, hidden=32).eval()
    with torch.no_grad():
        assert abs(float(sft_step(g, sft, plain)["nll"]) - float(sft_step(g, sft, full)["nll"])) > 1e-4
    half = torch.cat([TrainBatches(sft, 8, seed=0, prompt_description=0.5)[s] for s in range(50)])
    assert 0.35 < float(half[:, 2].float().mean()) < 0.65
    assert torch.equal(half[:8], TrainBatches(sft, 8, seed=0, prompt_description=0.5)[0])  # a function of (seed, step, row)
    assert torch.equal(half[:, [0, 1, 3, 4]], torch.cat([TrainBatches(sft, 8, seed=0)[s] for s in range(50)])[:, [0, 1, 3, 4]])  # the draw of old runs kept
    as_val = SimpleNamespace(n_examples=sft.n_examples, val=sft.tasks)  # validation rows: fixed, the same share
    assert val_batches(as_val, 8, prompt_description=1.0)[0][:, 2].eq(1).all() and val_batches(as_val, 8)[0][:, 2].eq(0).all()
    sft.max_tokens = 40  # no room beside the description: the example keeps its plain prompt
    assert all(eb is task_ex for row, b in zip(full.tolist(), batch_examples(sft, full)) for eb, task_ex in zip(b, [sft.tasks[row[0]].train[j] for j in row[3:]]))
    with pytest.raises(HypergenError, match="share of rows, from 0 to 1"):
        TrainConfig(sft_prompt_description=1.5)


def test_the_share_and_max_tasks_are_part_of_the_run_identity(sft, tiny_bank, tmp_path):
    g = build("t2l", tiny_bank, hidden=32)
    folder = run_folder(g, sft_cfg(), tmp_path / "o", sft_data=sft)
    assert run_folder(g, sft_cfg(steps=500, log_every=7), tmp_path / "o", sft_data=sft) == folder  # RUN_ONLY: the same run
    assert run_folder(g, sft_cfg(sft_prompt_description=0.5), tmp_path / "o", sft_data=sft) != folder
    assert run_folder(g, sft_cfg(sft_prompt_description=1.0), tmp_path / "o", sft_data=sft) not in (folder, run_folder(g, sft_cfg(sft_prompt_description=0.5), tmp_path / "o", sft_data=sft))
    assert run_folder(g, sft_cfg(max_tasks=None), tmp_path / "o", sft_data=sft) == folder  # the default: runs from before the field keep theirs
    assert run_folder(g, sft_cfg(max_tasks=50), tmp_path / "o", sft_data=sft) != folder  # even where it keeps every task


def test_where_the_generator_is_written_is_not_part_of_the_run(sft, tiny_bank, tmp_path):
    """--out only says where the trained generator goes. A run folder named the way runs were named before
    2026-12-02 (the destination in the key) is still found while the run has no folder of the new kind."""
    import hashlib
    from dataclasses import asdict

    from hypergen import paths
    from hypergen.generators.train import ADDED

    g = build("t2l", tiny_bank, hidden=32)
    folder = run_folder(g, sft_cfg(), tmp_path / "o", sft_data=sft)
    assert run_folder(g, sft_cfg(), tmp_path / "elsewhere", sft_data=sft) == folder
    learns = {k: v for k, v in asdict(sft_cfg()).items() if k not in RUN_ONLY and not (k in ADDED and v == ADDED[k])}
    shapes = {k: list(v.shape) for k, v in g.state_for_save().items()}
    old_key = json.dumps([g.family, g.config.identity(), learns, g.bank.names, str((tmp_path / "o").resolve()), shapes, sft.fingerprint], sort_keys=True, default=str)
    legacy = paths.runs_dir() / "generators" / f"t2l-{hashlib.sha1(old_key.encode()).hexdigest()[:10]}" / "ckpt"
    legacy.mkdir(parents=True)
    assert run_folder(g, sft_cfg(), tmp_path / "o", sft_data=sft) == legacy  # resumes and exports the old run
    assert run_folder(g, sft_cfg(), tmp_path / "elsewhere", sft_data=sft) == folder  # its destination was "o"
    folder.mkdir(parents=True)
    assert run_folder(g, sft_cfg(), tmp_path / "o", sft_data=sft) == folder  # a run of the new kind comes first


def test_weights_fingerprint_moves_with_any_trained_weight_and_only_those(tiny_bank):
    """The ranks of a DDP run compare it (train.json's ranks_agree): a change in any one trainable weight,
    or one tensor's change moved to another, changes it; frozen weights and a copy do not."""
    g = build("t2l", tiny_bank, hidden=32)
    f0 = weights_fingerprint(g)
    assert torch.equal(f0, weights_fingerprint(copy.deepcopy(g)))
    params = [p for p in g.parameters() if p.requires_grad]
    with torch.no_grad():
        for p in (params[0], params[-1]):
            p.view(-1)[0] += 1e-3
            assert not torch.equal(weights_fingerprint(g), f0), "a change in one weight went unseen"
            p.view(-1)[0] -= 1e-3
        params[0].view(-1)[0] += 1e-3  # the same change split between two tensors
        params[1].view(-1)[0] -= 1e-3
        moved = weights_fingerprint(g)
        params[0].view(-1)[0] -= 1e-3
        params[1].view(-1)[0] += 1e-3
    assert not torch.allclose(moved, f0, rtol=0, atol=1e-6)
    params[0].requires_grad_(False)
    frozen = weights_fingerprint(g)
    with torch.no_grad():
        params[0].view(-1)[0] += 1.0
    assert torch.equal(weights_fingerprint(g), frozen)  # a frozen tensor is left out


def test_lr_decay_is_a_cosine_to_the_floor_after_the_warm_up(sft, tiny_bank, tmp_path):
    """--lr-decay N: warm-up as before, then a cosine from lr to LR_FLOOR * lr over N steps, then flat; the
    optimiser Lightning gets follows it; it is part of the run's identity (0, the default, is not)."""
    f = [lr_factor(s, warmup=2, decay=4) for s in range(9)]
    assert f[:2] == [0.5, 1.0] and f[2] == 1.0 and f[4] == pytest.approx((1 + LR_FLOOR) / 2) and f[6:] == [LR_FLOOR] * 3
    assert all(a > b for a, b in zip(f[2:6], f[3:7]))  # falls every step of the decay
    assert [lr_factor(s, warmup=3, decay=0) for s in range(5)] == [1 / 3, 2 / 3, 1.0, 1.0, 1.0]  # without it: the old warm-up
    g = build("t2l", tiny_bank, hidden=32)
    opt = LitGenerator(g, sft_cfg(lr=1e-2, warmup=1, lr_decay=2), None, sft).configure_optimizers()
    lrs = []
    for _ in range(4):
        lrs.append(opt["optimizer"].param_groups[0]["lr"])
        opt["optimizer"].step()
        opt["lr_scheduler"]["scheduler"].step()
    assert lrs == pytest.approx([1e-2, 1e-2, 1e-2 * (1 + LR_FLOOR) / 2, 1e-2 * LR_FLOOR])
    folder = run_folder(g, sft_cfg(), tmp_path / "o", sft_data=sft)
    assert run_folder(g, sft_cfg(lr_decay=0), tmp_path / "o", sft_data=sft) == folder
    assert run_folder(g, sft_cfg(lr_decay=100), tmp_path / "o", sft_data=sft) != folder
    with pytest.raises(HypergenError, match="--lr-decay"):
        TrainConfig(lr_decay=-1)


def test_export_writes_the_best_checkpoint_without_training(tiny_zoo, tiny_path, tmp_path, monkeypatch):
    """Train 4 steps with validation (description in every prompt), then --export with the run's
    arguments (and another --steps): the generator folder holds the best checkpoint's tensors, and no
    step runs. A run with no checkpoint is a clear error."""
    from hypergen import api

    monkeypatch.setenv("HYPERGEN_HOME", str(tmp_path / "home"))
    common = {"zoo_path": str(tiny_zoo.root), "encoder_name": "fake", "base": str(tiny_path), "device": "cpu", "hidden": 32}
    cfg = sft_cfg(steps=4, val_families=1, val_every=2, lr=3e-2, sft_prompt_description=1.0, sft_max_tokens=400)
    ran = api.train("t2l", cfg, out=tmp_path / "t2l", **common)
    vals = [h["val_nll"] for h in ran["history"] if "val_nll" in h]
    assert len(vals) == 2 and ran["best_val_nll"] == pytest.approx(min(vals), abs=1e-6)
    best = torch.load(ran["best_checkpoint"], map_location="cpu", weights_only=False)
    shutil.rmtree(tmp_path / "t2l")

    def no_training(self, batch, i):
        raise AssertionError("export must not train")

    monkeypatch.setattr(LitGenerator, "training_step", no_training)
    exported = api.train("t2l", replace(cfg, steps=1000), out=tmp_path / "t2l", export=True, **common)
    assert exported["exported_from"] == ran["best_checkpoint"] and exported["step"] == best["global_step"]
    assert exported["val_nll"] == pytest.approx(ran["best_val_nll"], abs=1e-6)
    saved = load_file(str(tmp_path / "t2l" / "generator.safetensors"))
    assert saved and all(torch.equal(v, best["state_dict"][f"generator.{k}"].half()) for k, v in saved.items())
    on_disk = json.loads((tmp_path / "t2l" / "train.json").read_text())
    assert on_disk["step"] == best["global_step"] and on_disk["val_nll"] == pytest.approx(ran["best_val_nll"], abs=1e-6)
    assert json.loads((tmp_path / "t2l" / "generator.json").read_text())["config"]["hidden"] == 32
    # --export-last: the run's last checkpoint (step 4), whatever validation preferred
    final = api.train("t2l", cfg, out=tmp_path / "t2l", export=True, export_last=True, **common)
    last = torch.load(final["exported_from"], map_location="cpu", weights_only=False)
    assert final["exported_from"].endswith("last.ckpt") and final["step"] == last["global_step"] == 4 and final["val_nll"] is None
    saved = load_file(str(tmp_path / "t2l" / "generator.safetensors"))
    assert all(torch.equal(v, last["state_dict"][f"generator.{k}"].half()) for k, v in saved.items())
    # another --out is the same run: the export finds it and writes there
    moved = api.train("t2l", cfg, out=tmp_path / "elsewhere", export=True, export_last=True, **common)
    assert moved["exported_from"] == final["exported_from"] and (tmp_path / "elsewhere" / "generator.safetensors").is_file()
    # a serving setting (t2l's guidance) is not part of the run: the same checkpoint, written with it
    guided = api.train("t2l", cfg, out=tmp_path / "guided", export=True, export_last=True, **{**common, "guidance": 2.0})
    assert guided["exported_from"] == final["exported_from"]
    assert json.loads((tmp_path / "guided" / "generator.json").read_text())["config"]["guidance"] == 2.0
    with pytest.raises(HypergenError, match="--export-last goes with --export"):
        api.train("t2l", cfg, out=tmp_path / "t2l", export_last=True, **common)
    with pytest.raises(HypergenError, match="No checkpoint to export"):
        api.train("t2l", replace(cfg, seed=1), out=tmp_path / "t2l", export=True, **common)


def test_guidance_carries_the_adapter_away_from_the_mean_descriptions_at_generation_only(sft, tiny_bank, tmp_path):
    """t2l's guidance g: generate() makes f(mu) + g (f(e) - f(mu)), mu the mean training description (e = 0);
    g = 1 is the adapter as trained, g = 0 the same adapter for every description. Training and validation
    (adapter_for_training) never see it, and it is not part of the run's identity, so `--export --set
    guidance=G` writes another setting of the same run."""
    plain = build("t2l", tiny_bank, hidden=32).eval()
    guided = build("t2l", tiny_bank, hidden=32, guidance=2.5).eval()
    guided.load_state_dict(plain.state_dict())
    cond = torch.randn(2, tiny_bank.dim)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        f, mean = plain(cond), plain(plain.cond_mean[None])
        assert torch.allclose(plain.sample(cond[0], 1, gen).flat[0], f[0], atol=1e-6)  # batch of 1 against 2: rounding only
        assert torch.allclose(guided.sample(cond[0], 1, gen).flat[0], mean[0] + 2.5 * (f[0] - mean[0]), atol=1e-6)
        assert not torch.allclose(guided.sample(cond[0], 1, gen).flat, plain.sample(cond[0], 1, gen).flat)
        assert torch.allclose(guided.adapter_for_training(cond, {})[0], f, atol=1e-6)  # what the sft loss and validation score
        made = guided.generate(cond[0]).weights  # the path the CLI, the app and the evaluation take
        assert torch.allclose(guided.layout.flatten(made), mean[0] + 2.5 * (f[0] - mean[0]), atol=1e-6)
    guided.config.guidance = 0.0
    with torch.no_grad():
        assert torch.allclose(guided.sample(cond[0], 1, gen).flat, guided.sample(cond[1], 1, gen).flat, atol=1e-6)
    assert run_folder(guided, sft_cfg(), tmp_path / "o", sft_data=sft) == run_folder(plain, sft_cfg(), tmp_path / "o", sft_data=sft)
    assert run_folder(build("t2l", tiny_bank, hidden=64), sft_cfg(), tmp_path / "o", sft_data=sft) != run_folder(plain, sft_cfg(), tmp_path / "o", sft_data=sft)
    with pytest.raises(HypergenError, match="guidance must be >= 0"):
        build("t2l", tiny_bank, guidance=-1.0)


def test_adapter_spread_reads_one_description_of_evenly_spaced_training_families_and_each_validation_one(sft, tiny_bank, monkeypatch):
    """The first task of every k-th training family (at most n_families) and of each validation family, by its
    first description; None when that makes fewer than 2."""
    from hypergen.generators.layout import Layout

    g = build("t2l", tiny_bank, hidden=32)
    conds = []
    real = Layout.spread
    monkeypatch.setattr(Layout, "spread", lambda self, flat: conds.append(len(flat)) or real(self, flat))
    fams = sorted({t.family for t in sft.tasks})
    assert len(fams) >= 3 and not sft.val
    adapter_spread(g, sft, n_families=2)
    assert conds[-1] == 2  # ceil(N / 2) apart: 2 of N >= 3 families
    with_val = replace(sft, tasks=[t for t in sft.tasks if t.family != fams[0]], val=[t for t in sft.tasks if t.family == fams[0]])
    adapter_spread(g, with_val, n_families=100)
    assert conds[-1] == len(fams)  # every training family once, and the validation family once
    one = [t for t in sft.tasks if t.family == fams[0]]
    assert adapter_spread(g, replace(sft, tasks=one, val=[])) is None
