"""What the evaluation remembers (issue 14): row keys that cannot lie, the answers, the content metric,
family weighting and the long budget. Tiny model, the demo suite, one seed."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hypergen.cli import app
from hypergen.paths import REPO_ROOT

DEMO = str(REPO_ROOT / "data" / "demo" / "demo.jsonl")


def run(tiny_zoo, tiny_path, out, *extra, instances=3):
    args = ["eval", "--suite", DEMO, "--split", "all", "--zoo", str(tiny_zoo.root), "--base", str(tiny_path), "--encoder", "fake",
            "--instances", str(instances), "--seeds", "1", "--out", str(out), "--tasks", "antonyms", "--tasks", "review_sentiment", "--json", *extra]
    return CliRunner().invoke(app, args)


def rows_of(out):
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


def test_a_changed_instance_count_scores_new_rows_instead_of_reusing_old_ones(tiny_zoo, tiny_path, tmp_path):
    """The issue's reproduction: --instances 2, then --instances 8 into the same --out."""
    out = tmp_path / "res"
    methods = ["--methods", "base", "--methods", "nearest", "--no-controls"]
    assert run(tiny_zoo, tiny_path, out, *methods, instances=2).exit_code == 0
    assert {r["n"] for r in rows_of(out)} == {2}
    r = run(tiny_zoo, tiny_path, out, *methods, instances=8)
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    used = json.loads((out / "results.json").read_text())["rows"]
    # antonyms has 8 test instances, review_sentiment 7: every row of the summary is a new one
    assert sorted((x["task"], x["method"], x["n"]) for x in used) == [("antonyms", "base", 8), ("antonyms", "nearest", 8), ("review_sentiment", "base", 7), ("review_sentiment", "nearest", 7)]
    assert s["rows"] == 4 and s["stale"]["rows"] == 4 and {"data", "n"} <= set(s["stale"]["changed"])
    assert "4 rows of these tasks, methods and seeds made with other settings" in (out / "report.md").read_text()
    n = len(rows_of(out))
    assert n == 8  # the old rows stay in the file, unused
    again = run(tiny_zoo, tiny_path, out, *methods, instances=8)
    assert again.exit_code == 0 and len(rows_of(out)) == n and json.loads(again.stdout)["methods"] == s["methods"]
    # --prune drops those 4 and keeps the rows of a method this run does not score
    assert run(tiny_zoo, tiny_path, out, "--methods", "mix", "--no-controls", instances=8).exit_code == 0
    pruned = run(tiny_zoo, tiny_path, out, *methods, "--prune", instances=8)
    assert pruned.exit_code == 0, pruned.output
    assert json.loads(pruned.stdout)["stale"] == {**s["stale"], "pruned": True}
    assert sorted((x["method"], x["n"]) for x in rows_of(out)) == sorted([(m, 8) for m in ("base", "nearest", "mix")] + [(m, 7) for m in ("base", "nearest", "mix")])
    assert "they are removed from it (--prune)" in (out / "report.md").read_text()
    after = run(tiny_zoo, tiny_path, out, *methods, "--prune", instances=8)
    assert after.exit_code == 0 and json.loads(after.stdout)["stale"]["rows"] == 0 and json.loads(after.stdout)["methods"] == s["methods"]


def test_a_results_folder_without_row_keys_is_refused_with_how_to_start_fresh(tiny_zoo, tiny_path, tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    # a row as the evaluation wrote them before keys (docs/results/heldout until 2026-11-30)
    old = {"task": "anachronisms", "method": "base", "seed": 0, "rougeL": 0.0, "exact_match": 0.0, "accuracy": 0.478, "n": 46, "main": 0.478, "multiple_choice": True}
    (out / "results.jsonl").write_text(json.dumps(old) + "\n")
    r = run(tiny_zoo, tiny_path, out, "--methods", "base")
    assert r.exit_code == 1 and "older hypergen" in r.stderr and "another --out" in r.stderr and "delete" in r.stderr


def _task(name="fam/sub", n=4):
    from hypergen.eval.protocol import EvalTask
    from hypergen.tasks import Instance, Task

    inst = [Instance(f"q{i}", [f"a{i}"]) for i in range(n)]
    return EvalTask(Task(name, ["Answer it."], inst), "Answer it.", inst, "Something else.")


@pytest.mark.parametrize("change", ["seed", "instances", "description", "budget", "base", "base weights", "zoo", "generator", "encoder"])
def test_every_setting_that_changes_a_row_changes_its_key(tiny_zoo, tmp_path, monkeypatch, change):
    import shutil

    from hypergen import api
    from hypergen.eval.protocol import EvalConfig, RowKeys, digest

    gens = tmp_path / "generators"
    (gens / "sg").mkdir(parents=True)
    (gens / "sg" / "generator.json").write_text("{}")
    monkeypatch.setattr(api, "generators_dir", lambda: gens)
    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo.root, zoo)
    base = tmp_path / "tiny-llama"  # a base folder: its name and its files are the base's identity
    base.mkdir()
    (base / "model.safetensors").write_bytes(b"weights")
    et = _task()
    args = dict(m="sg", seed=0, desc=et.description, test=et.test[:2], budget=5)

    def key(keys=None, **kw):
        a = {**args, **kw}
        keys = keys or RowKeys(EvalConfig(suite=DEMO, split="all", zoo=str(zoo), encoder="fake"), "tiny-llama", {}, base_path=base)
        return digest(keys.row(et, a["m"], a["seed"], a["desc"], a["test"], a["budget"]))

    before = key()
    assert key() == before  # the same settings find the same row
    if change == "seed":
        after = key(seed=1)
    elif change == "instances":
        after = key(test=et.test[:3])
    elif change == "description":
        after = key(desc="Another task entirely.")
        assert key(m="base", desc="Another task entirely.") == key(m="base")  # the base is given no description
        assert key(m="base_desc", desc="Another task entirely.") == key(m="base_desc") != key(m="base")  # it has one in its prompt
    elif change == "budget":
        after = key(budget=6)
    elif change == "base":
        after = key(RowKeys(EvalConfig(suite=DEMO, split="all", zoo=str(zoo), encoder="fake"), "SmolLM2-135M-Instruct", {}, base_path=base))  # the same files: only the name changes
    elif change == "base weights":  # the same folder name, other weights (a retrained or reconverted base)
        (base / "model.safetensors").write_bytes(b"other weights")
        after = key()
    elif change == "encoder":
        after = key(RowKeys(EvalConfig(suite=DEMO, split="all", zoo=str(zoo), encoder="minilm"), "tiny-llama", {}, base_path=base))  # the same base: only the encoder changes
    elif change == "zoo":
        (zoo / "manifest.json").write_text((zoo / "manifest.json").read_text() + " ")
        after = key()
    else:
        (gens / "sg" / "training.safetensors").write_bytes(b"posterior encoder")  # training-only, git-ignored: a clone has none
        assert key() == before
        (gens / "sg" / "generator.json").write_text('{"lr": 2}')  # a retrained checkpoint
        after = key()
    assert after != before


def test_rows_keep_the_answers_and_the_report_shows_examples_per_family(tiny_zoo, tiny_path, tmp_path):
    from hypergen.eval.protocol import _subset
    from hypergen.tasks import load_suite, rouge_l
    from hypergen.zoo.build import instances

    out = tmp_path / "res"
    r = run(tiny_zoo, tiny_path, out, "--methods", "base", "--methods", "base_desc", "--methods", "nearest", "--methods", "oracle", "--no-controls")
    assert r.exit_code == 0, r.output
    suite = load_suite(DEMO)
    for row in rows_of(out):
        test = _subset(instances(suite.get(row["task"]), None, "test"), 3, 0)
        if row["task"] == "review_sentiment":  # multiple choice: the option of highest likelihood
            assert "answers" not in row
            assert row["chosen"] == [i.options[p.index(max(p))] for p, i in zip(row["option_probs"], test)]
            assert row["accuracy"] == pytest.approx(sum(c in i.targets for c, i in zip(row["chosen"], test)) / 3)
        else:  # the very answers that were scored
            assert "chosen" not in row and len(row["answers"]) == 3 and all(len(a) <= 200 for a in row["answers"])
            assert row["rougeL"] == pytest.approx(sum(rouge_l(a, i.targets) for a, i in zip(row["answers"], test)) / 3)
    report = (out / "report.md").read_text()
    ex = json.loads((out / "results.json").read_text())["examples"]
    assert [x["family"] for x in ex] == ["antonyms"] * 3 + ["review_sentiment"] * 3  # a suite without families: each task is one
    # base, base_desc, the default generator (sg: not run here) and the oracle
    assert all(set(x["answers"]) == {"base", "base_desc", "oracle"} for x in ex)
    first = next(row for row in rows_of(out) if row["task"] == "antonyms" and row["method"] == "base")
    assert ex[0]["answers"]["base"] == first["answers"][0]
    assert "## Example answers (seed 0)" in report and "### antonyms" in report and "### review_sentiment" in report


def test_nll_is_the_training_loss_of_the_reference_answer(resident):
    """The content metric is what experts train on: answer_loss over encode_example / collate, with the
    same adapter and prompt; reused from the option scores on multiple-choice tasks."""
    import torch

    from conftest import random_lora
    from hypergen.data import answer_loss, collate, encode_example
    from hypergen.scoring import score_instances
    from hypergen.tasks import Instance, load_suite

    gen = load_suite(DEMO).get("antonyms").instances[:5]
    mc = load_suite(DEMO).get("review_sentiment").instances[:5]
    mc = mc + [Instance(mc[0].input, ["not an option"], mc[0].options)]  # a reference outside the options is scored apart
    tok = resident.tokenizer

    def training_loss(insts, description):
        batch = collate([encode_example(tok, i.input, i.targets[0], description=description, max_tokens=10_000) for i in insts], tok.pad_token_id)
        with torch.inference_mode():
            return float(answer_loss(resident.forward_model(), batch))

    resident.activate(random_lora(resident.model, scale=0.3), name="evaluated")
    seen = []
    for insts, desc in ((gen, None), (mc, "Say if the review is positive."), (gen, "Give the opposite.")):
        s = score_instances(resident, insts, description=desc, nll=True, generate=False)
        assert s.nll == pytest.approx(training_loss(insts, desc), rel=1e-4)
        seen.append(s.nll)
    resident.deactivate()
    base = score_instances(resident, gen, nll=True, generate=False).nll
    with torch.inference_mode():  # deactivate switched peft's layers off
        batch = collate([encode_example(tok, i.input, i.targets[0], max_tokens=10_000) for i in gen], tok.pad_token_id)
        assert base == pytest.approx(float(answer_loss(resident.forward_model(), batch)), rel=1e-4)
    assert abs(base - seen[0]) > 1e-3  # the adapter moves it
    assert score_instances(resident, gen, generate=False).nll is None  # asked for only


def _rows(task, method, main, nll, mc):
    key = "accuracy" if mc else "rougeL"
    return {"task": task, "method": method, "seed": 0, key: main, "main": main, "nll": nll, "multiple_choice": mc, "seconds": 0.0}


def test_each_family_counts_once_and_multiple_choice_is_apart_from_generation():
    from types import SimpleNamespace

    from hypergen.eval.protocol import EvalConfig
    from hypergen.eval.stats import summarize
    from hypergen.eval.report import report_markdown

    # family "big" holds three generation tasks at 0.9; "a" and "b" one task each at 0.0 / 0.3;
    # "q" one multiple-choice task at 0.5
    rows = [_rows(t, "base", v, n, False) for t, v, n in (("big/1", 0.9, 1.0), ("big/2", 0.9, 1.0), ("big/3", 0.9, 1.0), ("a", 0.0, 4.0), ("b/x", 0.3, 1.0))]
    rows += [_rows("q", "base", 0.5, 2.0, True)]
    # the oracle scores 1.0 everywhere; sg closes the gap on the three "big" tasks only
    rows += [_rows(r["task"], "oracle", 1.0, 0.5, r["multiple_choice"]) for r in rows if r["method"] == "base"]
    rows += [_rows(r["task"], "sg", *((1.0, 0.5) if r["task"].startswith("big") else (r["main"], r["nll"])), r["multiple_choice"]) for r in rows if r["method"] == "base"]
    s = summarize(rows, EvalConfig(suite=DEMO, split="all", bootstrap=200))
    assert (s["tasks"], s["families"], s["mc_tasks"], s["mc_families"], s["gen_tasks"], s["gen_families"]) == (6, 4, 1, 1, 5, 3)
    e = s["methods"]["base"]
    assert e["main"] == pytest.approx((2.7 + 0.3 + 0.5) / 6) and e["main_family"] == pytest.approx((0.9 + 0.0 + 0.3 + 0.5) / 4)
    assert e["gen_rougeL"] == pytest.approx(3.0 / 5) and e["gen_rougeL_family"] == pytest.approx(1.2 / 3)
    assert e["mc_accuracy"] == e["mc_accuracy_family"] == 0.5
    assert e["nll"] == pytest.approx(10 / 6) and e["nll_family"] == pytest.approx(8 / 4)
    sg = s["methods"]["sg"]  # gaps: 0.1 on each big task, 1.0, 0.7 and 0.5 on the others
    assert sg["main_oracle_gap_closed"] == pytest.approx(0.3 / 2.5) and sg["main_family_oracle_gap_closed"] == pytest.approx(0.1 / 2.3)
    # the same share in content (NLL falls from base to oracle): 0.5 nats of 0.5 + 3.5 + 0.5 + 1.5 family gaps
    assert sg["nll_oracle_gap_closed"] == pytest.approx(1.5 / 7.0) and sg["nll_family_oracle_gap_closed"] == pytest.approx(0.5 / 6.0)
    lo, hi = e["gen_rougeL_family_ci95"]
    assert 0.0 <= lo < e["gen_rougeL_family"] < hi <= 0.9  # resampled over the 3 families, not the 5 tasks
    text = report_markdown({**s, "bar": {}}, SimpleNamespace(suite="x", split="all", instances=3, seeds=1, out="o"))
    assert "6 tasks in 4 families: 1 multiple-choice tasks in 1 families, 5 generation tasks in 3 families" in text
    assert "| base | 0.425 [" in text and "lower is better" in text and "| 0.04 | 0.12 | 0.08 |" in text


def test_control_gaps_count_each_family_once_with_a_paired_ci_and_in_content():
    from types import SimpleNamespace

    from hypergen.eval.protocol import EvalConfig
    from hypergen.eval.report import report_markdown
    from hypergen.eval.stats import summarize

    tasks = (("big/1", False), ("big/2", False), ("big/3", False), ("a", False), ("b/x", False), ("q", True))
    rows = [_rows(t, "sg", 0.5, 1.0, mc) for t, mc in tasks]
    # another task's description: 0.1 lower on the "big" family's three tasks only, and 1 nat worse everywhere
    rows += [_rows(t, "sg@other", 0.4 if t.startswith("big") else 0.5, 2.0, mc) for t, mc in tasks]
    s = summarize(rows, EvalConfig(suite=DEMO, split="all", bootstrap=200))
    c = s["controls"]["sg"]
    assert c["aligned_minus_other"] == pytest.approx(0.3 / 6) and c["aligned_minus_other_family"] == pytest.approx(0.1 / 4)
    lo, hi = c["aligned_minus_other_family_ci95"]
    assert 0.0 <= lo < 0.1 / 4 < hi <= 0.1  # resampled over the 4 families
    assert c["nll_aligned_minus_other_family"] == pytest.approx(-1.0)
    text = report_markdown({**s, "bar": {}}, SimpleNamespace(suite="x", split="all", instances=3, seeds=1, out="o"))
    assert f"| sg | - | 0.025 [{lo:.3f}, {hi:.3f}] | - / 0.050 | - / -1.000 |" in text


def test_controls_pair_seed_0_and_gap_shares_need_an_oracle_ahead_of_the_base():
    """Controls are scored on seed 0 only: the method's other seeds (other instances) stay out of the pair.
    An oracle no better than the base (a --tasks subset can give one) makes no "gap closed" share: below
    the base, the ratio would flip sign and pass the bar's 0.5 for a method worse than the base."""
    from hypergen.eval.protocol import EvalConfig
    from hypergen.eval.stats import summarize

    rows = [_rows("a", "sg", 0.5, 1.0, False), {**_rows("a", "sg", 0.9, 1.0, False), "seed": 1}, _rows("a", "sg@other", 0.5, 1.0, False)]
    rows += [_rows("a", "base", 0.6, 2.0, False), _rows("a", "oracle", 0.5, 0.5, False)]  # the oracle below the base in main
    s = summarize(rows, EvalConfig(suite=DEMO, split="all", bootstrap=50, seeds=2))
    assert s["methods"]["sg"]["main"] == pytest.approx(0.7)  # the method's mean is over both seeds
    assert s["controls"]["sg"]["aligned_minus_other"] == pytest.approx(0.0)  # the pair is seed 0's (not 0.7 - 0.5)
    sg = s["methods"]["sg"]
    assert "main_oracle_gap_closed" not in sg and "main_family_oracle_gap_closed" not in sg  # (0.7 - 0.6) / (0.5 - 0.6) = -1 otherwise
    assert sg["nll_oracle_gap_closed"] == pytest.approx(1.0 / 1.5)  # in NLL the oracle is ahead: the share stands


def test_long_budget_scores_a_separate_column_without_touching_the_short_rows(tiny_zoo, tiny_path, tmp_path):
    out = tmp_path / "res"
    methods = ["--methods", "base", "--methods", "nearest", "--no-controls"]
    assert run(tiny_zoo, tiny_path, out, *methods).exit_code == 0
    short = rows_of(out)
    r = run(tiny_zoo, tiny_path, out, *methods, "--long-budget", "7")
    assert r.exit_code == 0, r.output
    new = rows_of(out)[len(short):]
    # the generation task only: review_sentiment is multiple choice, scored on its options whatever the budget
    assert len(new) == 2 and all(x["task"] == "antonyms" and x["long"] and x["max_new_tokens"] == 7 and x["seed"] == 0 and len(x["answers"]) == 3 for x in new)
    assert not any("accuracy" in x or "nll" in x for x in new)  # answers only
    s = json.loads(r.stdout)
    assert s["stale"]["rows"] == 0 and s["long_budget"] == 7
    for m in ("base", "nearest"):
        e = s["methods"][m]
        (ours,) = [x["rougeL"] for x in new if x["method"] == m]
        assert e["rougeL_long"] == pytest.approx(ours)
        (theirs,) = [x["rougeL"] for x in short if x["method"] == m and x["task"] == "antonyms"]
        assert e["rougeL_long_minus_short"] == pytest.approx(ours - theirs)
    assert "## ROUGE-L at a 7-token budget (seed 0, generation tasks)" in (out / "report.md").read_text()
    assert "--long-budget 7" in (out / "report.md").read_text()


def test_many_options_are_cut_to_the_right_ones_and_the_same_seeded_distractors():
    from hypergen.errors import HypergenError
    from hypergen.eval.protocol import EvalConfig, fewer_options
    from hypergen.tasks import Instance

    options = [f"element {k}" for k in range(118)]
    inst = Instance("Which element has atomic number 2?", ["element 7", "element 90"], options)
    cut = fewer_options(inst, 16)
    assert len(cut.options) == 16 and {"element 7", "element 90"} <= set(cut.options)
    assert cut.options == sorted(cut.options, key=options.index)  # the original order
    assert fewer_options(inst, 16).options == cut.options  # seeded by the instance: every method, every rerun
    assert fewer_options(Instance("Another question?", inst.targets, options), 16).options != cut.options
    assert fewer_options(inst, 0) is inst and fewer_options(Instance("q", ["a"], ["a", "b"]), 16).options == ["a", "b"]
    assert cut.input == inst.input and cut.targets == inst.targets
    for bad in (1, -1):
        with pytest.raises(HypergenError, match="--max-options must be >= 2"):
            EvalConfig(suite=DEMO, split="all", max_options=bad)


def test_recorded_oracle_rows_stand_in_for_an_absent_oracle_expert_only_when_asked_and_only_if_they_match(tiny_zoo, tiny_path, tmp_path):
    """A fresh machine has no oracle zoo (it lives in the cache). --recorded-oracle takes the oracle's rows
    from results.jsonl, said in the report; without the flag the task has no oracle row; a recorded row
    made with other settings stops the run (there is no expert to score it again)."""
    import shutil

    from hypergen.zoo.store import Zoo

    out = tmp_path / "res"
    both = ["--methods", "base", "--methods", "oracle", "--no-controls", "--tasks", "antonyms"]

    def go(zoo, *extra, instances=3):
        args = ["eval", "--suite", DEMO, "--split", "all", "--zoo", str(zoo), "--oracle-zoo", str(tmp_path / "none"), "--base", str(tiny_path), "--encoder", "fake",
                "--instances", str(instances), "--seeds", "1", "--out", str(out), "--json", *both, *extra]
        return CliRunner().invoke(app, args)

    first = go(tiny_zoo.root)
    assert first.exit_code == 0, first.output
    oracle = json.loads(first.stdout)["methods"]["oracle"]
    # the same zoo without the antonyms expert: the oracle's expert is gone
    gone = tmp_path / "gone"
    shutil.copytree(tiny_zoo.root, gone)
    shutil.rmtree(Zoo(gone).folder("antonyms"))
    Zoo(gone, create=True)  # drops the manifest's row of the missing folder
    assert not Zoo(gone).has("antonyms")
    n = len(rows_of(out))
    without = go(gone)
    assert without.exit_code == 0 and "oracle" not in json.loads(without.stdout)["methods"]
    taken = go(gone, "--recorded-oracle")
    assert taken.exit_code == 0, taken.output
    s = json.loads(taken.stdout)
    assert s["methods"]["oracle"] == oracle and s["recorded_oracle"] == {"rows": 1, "tasks": 1, "no_long": []} and len(rows_of(out)) == n  # nothing scored
    report = (out / "report.md").read_text()
    assert "The oracle's 1 rows of 1 tasks are an earlier run's" in report and "--recorded-oracle" in report
    # a long-budget pass: no run recorded the oracle's long row, so it is left out (said), the base's is scored
    long = go(gone, "--recorded-oracle", "--long-budget", "8")
    assert long.exit_code == 0, long.output
    s = json.loads(long.stdout)
    assert s["recorded_oracle"]["no_long"] == ["antonyms"] and "rougeL_long" in s["methods"]["base"] and "rougeL_long" not in s["methods"]["oracle"]
    assert [r["method"] for r in rows_of(out)[n:]] == ["base"] and rows_of(out)[-1]["long"]
    assert "The oracle has no ROUGE-L at the 8-token budget on 1 tasks" in (out / "report.md").read_text()
    changed = go(gone, "--recorded-oracle", instances=2)
    assert changed.exit_code == 1 and "recorded with other settings (changed: data, n)" in changed.stderr and "hypergen zoo build --oracle" in changed.stderr
