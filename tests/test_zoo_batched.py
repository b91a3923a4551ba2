"""Batched expert training (zoo/batched.py): N experts in one run give each expert what training it
alone gives it, and a zoo built with --parallel is the zoo built one expert at a time, resumable."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from hypergen.errors import HypergenError
from hypergen.paths import REPO_ROOT
from hypergen.zoo import batched
from hypergen.zoo.batched import ExpertJob, train_experts
from hypergen.zoo.build import BuildConfig, build_zoo
from hypergen.zoo.expert import ExpertConfig, train_expert
from hypergen.zoo.store import Zoo

DEMO = str(REPO_ROOT / "data" / "demo" / "demo.jsonl")
TASKS = ["antonyms", "review_sentiment", "reverse_words", "uppercase"]

# Float32 rounding differs between the two paths (batched matmuls vs peft's Linear, padding to the longest
# row of N tasks instead of one): ~1e-7 per op. Adam divides each gradient by its running scale, so an
# element whose gradient is near 0 can move by a visible fraction of lr; over 12 steps the worst factor
# measured 1.7e-5 relative (norm of the difference / norm). 1e-4 is 6x that and far below any real
# difference: one step less, another data order or another init moves a factor by > 1e-2.
RTOL = 1e-4


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def jobs():
    """Three tasks of different sizes: `zz` early-stops (its validation answers are another word),
    `capped` has 12 examples (max_epochs 2 caps it at 6 of 12 steps), one example too long to fit and
    one cut to fit; `noval` has no validation examples (its expert is the last step)."""
    zz = ExpertJob("zz", [(f"item {i}", "zz") for i in range(40)], [(f"item {i}", "yy") for i in range(40, 47)])
    capped = [(f"word number {i} " * (1 + i % 3), "yes no") for i in range(10)] + [("x", "y" * 200), ("long " * 40, "no")]
    return [zz, ExpertJob("capped", capped, [(f"w {i}", "yes") for i in range(5)]), ExpertJob("noval", [(f"q{i}", "answer " * (1 + i % 2)) for i in range(30)])]


def test_batched_experts_equal_experts_trained_alone(resident):
    cfg = ExpertConfig(steps=12, max_epochs=2, batch_size=4, lr=1e-2, warmup=2, every=2, keep_last=3, max_tokens=96, logger="none", progress=False)
    together = train_experts(resident, jobs(), cfg)
    assert resident.active is None  # the base is left as it was found
    for job, got in zip(jobs(), together):
        want = train_expert(resident, job.examples, cfg, run_name=job.name, val_examples=job.val_examples)
        assert (got.n_examples, got.n_truncated, got.n_skipped) == (want.n_examples, want.n_truncated, want.n_skipped), job.name
        assert len(got.losses) == len(want.losses) and got.losses == pytest.approx(want.losses, abs=1e-5), job.name
        assert got.selected_step == want.selected_step and [s for s, _ in got.trajectory] == [s for s, _ in want.trajectory], job.name
        assert sorted(got.val_losses) == sorted(want.val_losses)
        assert list(got.val_losses.values()) == pytest.approx(list(want.val_losses.values()), rel=1e-5)
        assert got.weights.alpha == want.weights.alpha and list(got.weights.modules) == list(want.weights.modules)
        for (s, g), (_, w) in zip(got.trajectory, want.trajectory):
            for p in w.modules:
                for k in (0, 1):
                    assert rel_err(g.modules[p][k], w.modules[p][k]) < RTOL, (job.name, s, p, k)
    by = {j.name: r for j, r in zip(jobs(), together)}
    # the three cases the test is for: capped early, early-stopped, no validation
    assert len(by["capped"].losses) == 6 and by["capped"].n_skipped == 1 and by["capped"].n_truncated == 1
    assert by["zz"].selected_step < 12 and by["noval"].selected_step == 12 and by["noval"].val_losses == {}
    first = next(iter(by["zz"].weights.modules))
    assert rel_err(by["zz"].weights.modules[first][1], by["noval"].weights.modules[first][1]) > 100 * RTOL  # tasks differ visibly


def test_steps_give_rows_only_to_experts_still_training(resident):
    """Past its own step count an expert has no rows in a batch (so no gradient and no AdamW step)."""
    cfg = ExpertConfig(steps=12, max_epochs=2, batch_size=4, max_tokens=96, logger="none", progress=False)
    seen = []
    orig = batched._Steps.__getitem__

    def spy(self, s):
        b = orig(self, s)
        seen.append((s, b["experts"].tolist(), b["input_ids"].shape[0]))
        return b

    with pytest.MonkeyPatch.context() as m:
        m.setattr(batched._Steps, "__getitem__", spy)
        train_experts(resident, jobs(), cfg)
    assert [s for s, _, _ in seen] == list(range(12))
    assert all(e == ([0, 1, 2] if s < 6 else [0, 2]) and n == 4 * len(e) for s, e, n in seen)


def zoo_cfg(tiny_path, out, **kw):
    expert = ExpertConfig(steps=6, batch_size=4, every=2, keep_last=3, warmup=2, logger="none", progress=False)
    return BuildConfig(suite=DEMO, out=str(out), base=str(tiny_path), limit=None, expert=expert, eval_instances=4, max_new_tokens=3, **kw)


def test_parallel_build_makes_the_same_zoo(tiny_path, tmp_path):
    from safetensors.torch import load_file

    one = build_zoo(zoo_cfg(tiny_path, tmp_path / "one"))
    three = build_zoo(zoo_cfg(tiny_path, tmp_path / "three", parallel=3))  # a group of 3, then a group of 1
    assert three.names() == one.names() == TASKS
    assert three.meta == one.meta
    for name in TASKS:
        a, b = one.record(name), three.record(name)
        assert b.config.pop("parallel") == (3 if name != "uppercase" else 1) and "parallel" not in a.config
        va, vb = a.config.pop("val_loss"), b.config.pop("val_loss")
        assert sorted(va) == sorted(vb) and list(vb.values()) == pytest.approx(list(va.values()), rel=1e-5)
        assert a.config == b.config  # every training field, steps run and the selected step
        assert replace(a, seconds=0, config={}) == replace(b, seconds=0, config={})  # scores, steps, trajectory steps ...
        fa, fb = one.folder(name), three.folder(name)
        files = sorted(p.relative_to(fa).as_posix() for p in fa.rglob("*"))
        assert files == sorted(p.relative_to(fb).as_posix() for p in fb.rglob("*"))
        assert json.loads((fa / "adapter_config.json").read_text()) == json.loads((fb / "adapter_config.json").read_text())
        for f in [p for p in files if p.endswith(".safetensors")]:
            ta, tb = load_file(str(fa / f)), load_file(str(fb / f))
            assert sorted(ta) == sorted(tb)
            for k in ta:  # fp16 on disk: a last-bit rounding flip is 5e-4 relative
                assert ta[k].dtype == tb[k].dtype == torch.float16
                assert rel_err(tb[k].float(), ta[k].float()) < 1e-3, (name, f, k)


def test_a_parallel_build_resumes_after_its_finished_groups(tiny_path, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from hypergen.cli import app

    with pytest.raises(HypergenError, match="--parallel must be >= 1"):
        BuildConfig(parallel=0)
    calls: list[list[str]] = []
    real = batched.train_experts

    def interrupted(res, jobs, cfg, **kw):
        calls.append([j.name for j in jobs])
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while training the second group
        return real(res, jobs, cfg, **kw)

    monkeypatch.setattr(batched, "train_experts", interrupted)
    cfg = zoo_cfg(tiny_path, tmp_path / "zoo", parallel=2)
    with pytest.raises(KeyboardInterrupt):
        build_zoo(cfg)
    assert calls == [TASKS[:2], TASKS[2:]] and Zoo(cfg.out).names() == TASKS[:2]  # the first group was written
    mtimes = {n: (Zoo(cfg.out).folder(n) / "expert.json").stat().st_mtime for n in TASKS[:2]}

    calls.clear()
    args = ["zoo", "build", "--suite", DEMO, "--out", cfg.out, "--base", str(tiny_path), "--steps", "6", "--batch-size", "4", "--every", "2",
            "--keep-last", "3", "--warmup", "2", "--eval-instances", "4", "--max-new-tokens", "3", "--logger", "none", "--parallel", "2"]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert calls == [TASKS[2:]]  # only the interrupted group is trained again
    zoo = Zoo(cfg.out)
    assert zoo.names() == TASKS and all(zoo.record(n).config["parallel"] == 2 for n in TASKS)
    assert {n: (zoo.folder(n) / "expert.json").stat().st_mtime for n in TASKS[:2]} == mtimes
