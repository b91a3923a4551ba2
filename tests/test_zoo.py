"""Expert training and the zoo on the tiny model: records, trajectories, resumability under SIGKILL."""

from __future__ import annotations

import inspect
import json
import os
import signal
import stat
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

from hypergen.errors import HypergenError
from hypergen.paths import REPO_ROOT
from hypergen.zoo.build import BuildConfig, build_multitask, build_zoo
from hypergen.zoo.expert import ExpertConfig, train_expert
from hypergen.zoo.store import Zoo

DEMO = str(REPO_ROOT / "data" / "demo" / "demo.jsonl")


def tiny_cfg(tiny_path, out, **kw):
    expert = ExpertConfig(steps=6, batch_size=4, every=2, keep_last=3, warmup=2, logger="none", progress=False)
    return BuildConfig(suite=DEMO, out=str(out), base=str(tiny_path), limit=None, expert=expert, eval_instances=4, max_new_tokens=3, **kw)


def test_expert_training_learns_and_keeps_trajectory(resident):
    examples = [(f"item {i}", "zz") for i in range(12)]
    out = train_expert(resident, examples, ExpertConfig(steps=20, max_epochs=None, batch_size=4, lr=1e-2, warmup=2, every=5, keep_last=3, logger="none", progress=False))
    assert out.losses[-1] < out.losses[0] - 0.2  # a random tiny base learns slowly; the real-model test asks for more
    assert [s for s, _ in out.trajectory] == [10, 15, 20]
    assert torch.equal(out.trajectory[-1][1].modules[next(iter(out.weights.modules))][1], out.weights.modules[next(iter(out.weights.modules))][1])
    assert resident.active is None  # the base is left as it was found
    b = next(iter(out.weights.modules.values()))[1]
    assert b.abs().sum() > 0  # B started at zero: it trained


def test_answer_loss_equals_the_full_loss_and_its_gradient(resident):
    """Projecting only the labelled positions onto the vocabulary changes the cost, not the loss."""
    from hypergen.config import LoraSpec
    from hypergen.data import answer_loss, collate, encode_example

    tok = resident.tokenizer
    batch = collate([encode_example(tok, "word " * (3 + 4 * i), "yes no" * (1 + i % 2), max_tokens=48) for i in range(4)], tok.pad_token_id)
    params = resident.new_trainable("grad_check", LoraSpec(init_seed=1))
    with torch.no_grad():
        for p in params:
            p.add_(0.1 * torch.randn_like(p))  # a non-zero B so every LoRA factor gets a gradient
    net = resident.forward_model()
    grads = []
    for loss_fn in (lambda: net(**batch).loss, lambda: answer_loss(net, batch)):
        for p in params:
            p.grad = None
        loss = loss_fn()
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in params]))
    (full, g_full), (ans, g_ans) = grads
    assert torch.allclose(full, ans, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(g_full, g_ans))
    assert any(g.abs().sum() > 0 for g in g_ans)


def test_validation_loss_picks_the_expert_checkpoint(resident):
    """Early stopping: training on 'zz' makes the validation answers 'yy' ever less likely, so the
    first checkpoint wins; the expert is that checkpoint and the trajectory ends at it."""
    examples = [(f"item {i}", "zz") for i in range(12)]
    val = [(f"item {i}", "yy") for i in range(12, 18)]
    cfg = ExpertConfig(steps=20, max_epochs=None, batch_size=4, lr=1e-2, warmup=2, every=5, keep_last=3, logger="none", progress=False)
    out = train_expert(resident, examples, cfg, val_examples=val)
    assert sorted(out.val_losses) == [5, 10, 15, 20]
    assert out.selected_step == min(out.val_losses, key=out.val_losses.get) == 5
    assert [s for s, _ in out.trajectory] == [5]  # nothing after the chosen step
    first = next(iter(out.weights.modules))
    assert torch.equal(out.trajectory[-1][1].modules[first][1], out.weights.modules[first][1])
    last = train_expert(resident, examples, replace(cfg, select="last"), val_examples=val)
    assert last.selected_step == 20 and last.val_losses == {} and [s for s, _ in last.trajectory] == [10, 15, 20]
    assert not torch.equal(last.weights.modules[first][1], out.weights.modules[first][1])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_validation_loss_on_cuda(tiny_path):
    """The validation batches are built on the CPU; early stopping must move them to the model's
    device (an H200 zoo build stopped here at the first validation step)."""
    from hypergen.base import load_base

    res = load_base(tiny_path, device="cuda")
    examples = [(f"item {i}", "zz") for i in range(12)]
    val = [(f"item {i}", "yy") for i in range(12, 18)]
    cfg = ExpertConfig(steps=10, max_epochs=None, batch_size=4, lr=1e-2, warmup=2, every=5, keep_last=3, logger="none", progress=False)
    out = train_expert(res, examples, cfg, val_examples=val)
    assert sorted(out.val_losses) == [5, 10] and all(v > 0 for v in out.val_losses.values())


def test_expert_config_rejects_bad_values():
    with pytest.raises(HypergenError, match="steps must be >= 1"):
        ExpertConfig(steps=0)
    with pytest.raises(HypergenError, match="lr must be"):
        ExpertConfig(lr=3.0)
    with pytest.raises(HypergenError, match="select must be"):
        ExpertConfig(select="best")


def test_a_log_file_gets_a_line_based_progress_bar(monkeypatch):
    """Rich draws nothing into a log file until the run ends; there a tqdm bar shows the steps."""
    import sys

    from pytorch_lightning.callbacks import TQDMProgressBar

    from hypergen.zoo.expert import progress_bars

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    (bar,) = progress_bars(True)
    assert isinstance(bar, TQDMProgressBar) and bar.refresh_rate == 10
    assert progress_bars(False) == []
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert progress_bars(True) == []  # a terminal keeps Lightning's default bar


def test_build_writes_records_and_resumes(tiny_path, tmp_path):
    cfg = tiny_cfg(tiny_path, tmp_path / "zoo")
    zoo = build_zoo(cfg)
    names = zoo.names()
    assert names == ["antonyms", "review_sentiment", "reverse_words", "uppercase"]
    rec = zoo.record("review_sentiment")
    assert rec.metric == "accuracy" and rec.base_score["n"] == 4
    # early stopping on the task's validation instances: the expert is the lowest-val-loss checkpoint
    val = {int(k): v for k, v in rec.config["val_loss"].items()}
    assert sorted(val) == [2, 4, 6] and rec.config["selected_step"] == min(val, key=val.get) == rec.trajectory_steps[-1]
    assert len(zoo.trajectory("antonyms")) == len(zoo.record("antonyms").trajectory_steps) >= 1
    assert zoo.weights("antonyms").rank == 8
    mtime = (zoo.folder("antonyms") / "expert.json").stat().st_mtime
    build_zoo(cfg)  # nothing left to do: no expert is retrained
    build_zoo(replace(cfg, refresh=True))  # nor with --refresh: every record matches the config
    assert (zoo.folder("antonyms") / "expert.json").stat().st_mtime == mtime
    # --refresh retrains the picked experts that were trained another way, and only those
    old_way = replace(cfg, refresh=True, tasks=["antonyms"], expert=replace(cfg.expert, select="last"))
    zoo = build_zoo(old_way)  # a fresh view of the manifest
    assert zoo.record("antonyms").config["select"] == "last" and zoo.record("antonyms").trajectory_steps == [2, 4, 6]
    assert zoo.record("uppercase").config["select"] == "val_loss" and zoo.names() == names
    mtime = (zoo.folder("antonyms") / "expert.json").stat().st_mtime
    zoo = build_zoo(old_way)  # resumable: done is done
    assert (zoo.folder("antonyms") / "expert.json").stat().st_mtime == mtime

    build_multitask(cfg, steps=2, per_task=4)  # packed beside the experts (the shipped zoo/ has one)
    packed = zoo.pack(tmp_path / "packed")  # int8 per-row absmax
    assert {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in (tmp_path / "packed").rglob("*") if f.is_file() and stat.S_IMODE(f.stat().st_mode) != 0o644} == {}
    mt, mt_packed = zoo.multitask(), packed.multitask()
    assert mt is not None and mt_packed is not None and packed.multitask_record().name == "multitask"
    for p in mt.modules:
        assert (mt_packed.delta(p) - mt.delta(p)).norm() <= 0.02 * mt.delta(p).norm() + 1e-9, p
    fresh = replace(cfg, out=str(tmp_path / "fresh"), seed_from=str(tmp_path / "packed"))  # a fresh machine
    with pytest.raises(HypergenError, match=r"antonyms \(select last -> val_loss\). Use --refresh"):
        build_zoo(fresh)  # the seed's antonyms was trained another way than this build asks
    assert Zoo(tmp_path / "fresh").names() == []  # refused before a seed expert was copied
    seeded = build_zoo(replace(fresh, tasks=["uppercase"]))  # every seed expert is adopted; uppercase needs no training
    assert seeded.names() == names and seeded.record("antonyms").seconds == zoo.record("antonyms").seconds  # adopted, not retrained
    assert packed.names() == names and not (packed.folder("antonyms") / "trajectory").exists()
    got, want = packed.weights("antonyms"), zoo.weights("antonyms")
    assert list(got.modules) == list(want.modules) and got.alpha == want.alpha
    for p in want.modules:
        assert got.modules[p][0].dtype == torch.float32  # loaded back as fp32
        err = (got.delta(p) - want.delta(p)).norm() / want.delta(p).norm().clamp_min(1e-12)
        assert err < 0.02, (p, float(err))  # int8 rounding: ~0.5% relative on each factor
    from safetensors import safe_open

    with safe_open(str(packed.folder("antonyms") / "adapter_q8.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys() if k.endswith(".q")} == {torch.int8}
    fp16 = zoo.pack(tmp_path / "packed16", dtype=torch.float16)

    with safe_open(str(fp16.folder("antonyms") / "adapter_model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}


def test_heldout_tasks_only_go_to_an_oracle_zoo(tiny_path, tiny_zoo, tmp_path):
    from hypergen.zoo.build import plan

    split = {"version": 1, "seed": 0, "zoo": ["uppercase", "reverse_words"], "heldout": ["antonyms"], "instances": {}, "sizes": {}, "criteria": {}, "counts": {}}
    (tmp_path / "split.json").write_text(json.dumps(split))
    common = dict(suite=DEMO, split=str(tmp_path / "split.json"), base=str(tiny_path), out=str(tmp_path / "z"), limit=None)
    with pytest.raises(HypergenError, match="are held-out tasks, or of a held-out family"):
        plan(BuildConfig(tasks=["antonyms"], **common))
    assert plan(BuildConfig(**common))[2] == ["uppercase", "reverse_words"]
    assert plan(BuildConfig(oracle=True, **common))[2] == ["antonyms"]
    assert plan(BuildConfig(tasks=["antonyms"], oracle=True, **common))[2] == ["antonyms"]
    with pytest.raises(HypergenError, match="seed zoo .* holds held-out tasks' experts \\(antonyms\\)"):  # nor through --seed-from
        build_zoo(BuildConfig(seed_from=str(tiny_zoo.root), **common))
    assert Zoo(tmp_path / "z").names() == []


def test_multitask_is_stored_beside_the_experts(tiny_path, tmp_path):
    cfg = tiny_cfg(tiny_path, tmp_path / "zoo")
    rec = build_multitask(cfg, steps=4, per_task=10)
    assert rec.n_train == 40 and rec.config["tasks"] == ["antonyms", "review_sentiment", "reverse_words", "uppercase"]
    assert rec.config["select"] == "last"  # no validation set: the record must not claim early stopping
    assert Zoo(tmp_path / "zoo").multitask().rank == 8


def test_multitask_rerun_keeps_the_same_adapter_and_retrains_a_changed_one(tiny_path, tmp_path, monkeypatch):
    """A rebuild rerun after a stop must not train the same multi-task LoRA again; other settings must."""
    from hypergen.zoo import build

    cfg = tiny_cfg(tiny_path, tmp_path / "zoo")
    first = build_multitask(cfg, steps=4, per_task=10)
    before = (tmp_path / "zoo" / "multitask" / "expert.json").read_text()
    calls = []
    real = build.train_expert
    monkeypatch.setattr(build, "train_expert", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    quiet = replace(cfg, expert=replace(cfg.expert, logger="csv"))  # how a run is logged does not change the adapter
    assert build_multitask(quiet, steps=4, per_task=10).seconds == first.seconds and calls == []
    assert (tmp_path / "zoo" / "multitask" / "expert.json").read_text() == before
    assert build_multitask(cfg, steps=5, per_task=10).steps == 5 and [c.steps for c in calls] == [5]
    assert build_multitask(replace(cfg, expert=replace(cfg.expert, lr=2e-3)), steps=5, per_task=10).config["lr"] == 2e-3
    assert build_multitask(cfg, steps=5, per_task=8).n_train == 32
    assert build_multitask(replace(cfg, refresh=True), steps=5, per_task=8).n_train == 32 and len(calls) == 4


def test_sigkill_at_any_moment_loses_nothing(tiny_path, tmp_path):
    """Kill the build with SIGKILL several times at different moments; the rerun finishes the zoo."""
    out = tmp_path / "zoo"
    cmd = [
        sys.executable, "-m", "hypergen.cli", "zoo", "build", "--suite", DEMO, "--out", str(out), "--base", str(tiny_path),
        "--steps", "30", "--batch-size", "4", "--eval-instances", "4", "--logger", "none", "--limit", "4",
    ]
    env = {**os.environ, "WANDB_MODE": "disabled"}

    def built() -> list[str]:
        return [r["name"] for r in json.loads((out / "manifest.json").read_text())["experts"]] if (out / "manifest.json").is_file() else []

    kills = 0
    for after in (0.0, 0.4, 1.5):  # killed at a varying moment after an expert lands: in the next one's training or writing
        before = len(built())
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while p.poll() is None and len(built()) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(after)
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            kills += 1
        p.wait()
        built()  # the manifest is never half-written: it parses after every kill
    assert kills >= 2 and built()
    done = {n: (Zoo(out).record(n).seconds, (out / "experts" / n / "expert.json").stat().st_mtime) for n in built()}
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    zoo = Zoo(out)
    assert sorted(zoo.names()) == sorted(["antonyms", "review_sentiment", "reverse_words", "uppercase"])
    assert {n: (zoo.record(n).seconds, (out / "experts" / n / "expert.json").stat().st_mtime) for n in done} == done  # finished ones kept, not retrained
    for n in zoo.names():
        zoo.weights(n).validate_for(__import__("hypergen.base", fromlist=["x"]).load_base(tiny_path).model)
    assert not [p for p in (out / "experts").iterdir() if p.name.startswith(".")]  # no half-written folder left


def test_zoo_list_cli(tiny_zoo, tmp_path):
    from typer.testing import CliRunner

    from hypergen.cli import app

    r = CliRunner().invoke(app, ["zoo", "list", "--zoo", str(tiny_zoo.root), "--json"])  # the session's zoo: no build of its own
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [x["name"] for x in rows][:2] == ["antonyms", "review_sentiment"] and {"base_score", "expert_score", "steps", "description"} <= set(rows[0])
    r = CliRunner().invoke(app, ["zoo", "list", "--zoo", str(tmp_path / "nothing")])
    assert r.exit_code == 1 and "not a zoo" in r.stderr


def test_zoo_report_names_every_expert_and_the_losers(tiny_zoo, tmp_path):
    from hypergen.zoo.report import write_report

    text = write_report(tiny_zoo, tmp_path / "zoo.md", command="hypergen zoo build ...").read_text()
    assert f"**Summary: {len(tiny_zoo)} experts" in text
    for name in tiny_zoo.names():
        assert f"| {name} |" in text
    losers = [r.name for r in tiny_zoo.records() if r.gain <= 0]
    assert ("## Experts that do not beat the base" in text) == bool(losers)
    for name in losers:
        assert f"- `{name}`:" in text


def test_zoo_report_lists_experts_by_name_whatever_the_build_order(tiny_zoo, tmp_path, monkeypatch):
    """A zoo built in resumed pieces records its experts in build order; its page must not depend on that."""
    from hypergen.zoo.report import write_report
    from hypergen.zoo.store import Zoo

    built = Zoo.records
    monkeypatch.setattr(Zoo, "records", lambda self: built(self)[::-1])
    text = write_report(tiny_zoo, tmp_path / "zoo.md").read_text()
    rows = [line.split(" | ")[0][2:] for line in text.splitlines() if line.startswith("| ") and not line.startswith("| expert ")]
    assert rows == sorted(tiny_zoo.names()) and len(rows) == len(tiny_zoo) > 1


def test_zoo_report_quotes_its_own_command(tiny_zoo, tmp_path, monkeypatch):
    """The page names the file it was written to and the zoo without the user's home folder (an oracle zoo's page is not docs/zoo.md)."""
    from hypergen.zoo.report import write_report

    monkeypatch.setenv("HOME", str(tiny_zoo.root.parent))
    text = write_report(tiny_zoo, tmp_path / "oracle.md", command="hypergen zoo build --oracle", title="Oracles").read_text()
    quoted = f"`hypergen zoo report --zoo ~/{tiny_zoo.root.name} --out {tmp_path / 'oracle.md'} --title \"Oracles\" --command \"hypergen zoo build --oracle\"`"
    assert quoted in text and "# Oracles" in text
    assert str(tiny_zoo.root.parent) not in text
    from hypergen import api
    from hypergen.zoo.report import COMMAND, TITLE

    assert inspect.signature(api.zoo_report).parameters["command"].default == COMMAND  # the report leaves out exactly the defaults
    assert inspect.signature(api.zoo_report).parameters["title"].default == TITLE
    plain = write_report(tiny_zoo, tmp_path / "zoo.md", command=COMMAND).read_text()
    assert f"this page: `hypergen zoo report --zoo ~/{tiny_zoo.root.name} --out {tmp_path / 'zoo.md'}`." in plain


def test_max_epochs_caps_steps_on_small_tasks(resident):
    examples = [(f"item {i}", "zz") for i in range(16)]
    out = train_expert(resident, examples, ExpertConfig(steps=100, max_epochs=2, batch_size=4, warmup=1, every=2, keep_last=2, logger="none", progress=False))
    assert len(out.losses) == 8 and [s for s, _ in out.trajectory] == [6, 8]


@pytest.mark.slow
def test_build_shards_tasks_across_two_processes(tiny_path, tmp_path):
    """--devices 2: Lightning Fabric launches two CPU processes; each builds every second task."""
    out = tmp_path / "zoo"
    cmd = [sys.executable, "-m", "hypergen.cli", "zoo", "build", "--suite", DEMO, "--out", str(out), "--base", str(tiny_path), "--steps", "3",
           "--batch-size", "4", "--eval-instances", "2", "--logger", "none", "--devices", "2", "--strategy", "ddp"]
    p = subprocess.run(cmd, env={**os.environ, "WANDB_MODE": "disabled"}, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "[0] antonyms" in p.stderr and "[1] review_sentiment" in p.stderr and "[0] reverse_words" in p.stderr and "[1] uppercase" in p.stderr
    reports = [line for line in p.stdout.splitlines() if line.startswith("zoo: ")]
    assert reports == [f"zoo: {out} (4 experts)"]  # rank 0 reports once, after the barrier
    assert sorted(Zoo(out).names()) == sorted(["antonyms", "review_sentiment", "reverse_words", "uppercase"])


def _imports_eval(node, package: str) -> list[str]:
    """The modules an import node names that are hypergen.eval or inside it; relative imports resolved against package."""
    import ast
    import importlib.util

    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):  # "from hypergen import eval" and "from .. import eval" name hypergen.eval
        base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level else node.module
        names = [base] + [f"{base}.{a.name}" for a in node.names]
    else:
        return []
    return [n for n in names if n == "hypergen.eval" or n.startswith("hypergen.eval.")]


def test_the_eval_import_check_sees_every_spelling():
    """The check below flags absolute, from-package and relative imports of the eval, and nothing else."""
    import ast

    def flagged(src: str) -> list[str]:
        return [n for node in ast.walk(ast.parse(src)) for n in _imports_eval(node, "hypergen.zoo")]

    for src in ["from hypergen import eval", "import hypergen.eval", "from ..eval import x", "from .. import eval",
                "import hypergen.eval.protocol as p", "from hypergen.eval.protocol import RowKeys"]:
        assert flagged(src), src
    for src in ["from hypergen import scoring", "from . import store", "from .store import Zoo", "from .. import scoring",
                "import hypergen.evaluation", "from hypergen.tasks import rouge_l"]:
        assert not flagged(src), src


def test_the_zoo_never_imports_the_eval():
    """The eval sits above the zoo (it reads the zoo's split rule); both score through hypergen.scoring, below them."""
    import ast

    files = list((REPO_ROOT / "hypergen" / "zoo").glob("*.py"))
    assert len(files) >= 4  # the zoo package was found
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            bad = _imports_eval(node, "hypergen.zoo")
            assert not bad, f"hypergen/zoo/{path.name} imports {bad}: move what it needs below both (as hypergen.scoring)"
