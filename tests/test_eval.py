"""The evaluation protocol, small: tiny model, two tasks, one seed."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hypergen.cli import app
from hypergen.errors import HypergenError
from hypergen.eval import EvalConfig
from hypergen.paths import REPO_ROOT

DEMO = str(REPO_ROOT / "data" / "demo" / "demo.jsonl")


def run(tiny_zoo, tiny_path, out, *extra):
    args = ["eval", "--suite", DEMO, "--split", "all", "--zoo", str(tiny_zoo.root), "--base", str(tiny_path), "--encoder", "fake",
            "--instances", "3", "--seeds", "1", "--out", str(out), "--tasks", "antonyms", "--tasks", "review_sentiment", "--json", *extra]
    return CliRunner().invoke(app, args)


def test_small_eval_end_to_end_and_resume(tiny_zoo, tiny_path, tmp_path):
    methods = ["--methods", "base", "--methods", "base_desc", "--methods", "multitask", "--methods", "nearest", "--methods", "mix", "--methods", "oracle",
               "--methods", "nearest@gibberish", "--methods", "nearest@other"]  # a retrieval baseline's controls come when named
    r = run(tiny_zoo, tiny_path, tmp_path / "res", *methods)
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    ms = s["methods"]
    assert {"base", "base_desc", "multitask", "nearest", "mix", "oracle"} <= set(ms) and s["tasks"] == 2
    assert ms["nearest"]["tasks"] == 2 and 0 <= ms["nearest"]["rougeL"] <= 1 and len(ms["nearest"]["ci95"]) == 2
    assert "main_vs_multitask" in ms["nearest"] and "main_vs_multitask" not in ms["multitask"]
    assert ms["nearest"]["accuracy"] is not None and ms["nearest"]["exact_match"] is not None  # the MC task adds accuracy
    assert {"aligned_minus_gibberish", "aligned_minus_other"} <= set(s["controls"]["nearest"])
    assert s["calibration"] == {}  # calibration compares against ABMLL, which was not asked for
    files = {p.name for p in (tmp_path / "res").iterdir()}
    assert {"results.json", "results.jsonl", "report.md", "methods.png"} <= files
    rows = (tmp_path / "res" / "results.jsonl").read_text().splitlines()
    # oracle on a seen-by-zoo task = the task's own expert: identical to nearest (its own description)
    by = {(json.loads(x)["task"], json.loads(x)["method"]): json.loads(x) for x in rows}
    assert all(1 <= json.loads(x)["max_new_tokens"] <= 16 for x in rows)
    probs = [p for x in rows for ps in json.loads(x).get("option_probs", []) for p in ps]
    assert probs and all(p == round(p, 6) for p in probs)  # kept short: the file is committed for the project's run
    oracle, nearest, base = (by[("antonyms", m)] for m in ("oracle", "nearest", "base"))
    assert oracle["answers"] == nearest["answers"] and oracle["nll"] == pytest.approx(nearest["nll"], abs=1e-6)  # the same adapter
    assert oracle["nll"] != pytest.approx(base["nll"], abs=1e-4)  # and not no adapter (ROUGE-L is ~0 for all on the tiny model)
    # resume: a rerun finds every row done and appends nothing
    r2 = run(tiny_zoo, tiny_path, tmp_path / "res", *methods)
    assert r2.exit_code == 0 and len((tmp_path / "res" / "results.jsonl").read_text().splitlines()) == len(rows)


@pytest.mark.parametrize("args, message", [(["--methods", "telepathy"], "Unknown method"), (["--split", "sideways"], "'sideways' is not one of"),
                                           (["--limit", "0"], "--limit must be >= 1"), (["--bootstrap", "0"], "--bootstrap and --calibration-samples must be >= 1")])
def test_bad_eval_input(tiny_zoo, tiny_path, tmp_path, args, message):
    r = run(tiny_zoo, tiny_path, tmp_path / "res", *args)
    assert r.exit_code != 0 and message in r.stderr and not (tmp_path / "res").exists()
    with pytest.raises(HypergenError, match="--split must be"):  # the config refuses it too, for API callers
        EvalConfig(suite=DEMO, split="sideways")


def test_plan_keeps_to_the_split_and_describes_the_control_as_its_own(tiny_zoo, monkeypatch):
    """BIG-bench's split, stood in for by the demo suite: --tasks may only narrow it (a training task scored as
    held-out would flatter the generators), and on seen tasks the other task's description is made the way
    the task's own is (the first sentence of its last description), not the one the generators trained on."""
    from types import SimpleNamespace

    import hypergen.tasks as tasks
    from hypergen.eval.protocol import plan

    demo = tasks.load_suite(DEMO)
    zoo, heldout = tiny_zoo.names()[:3], [n for n in demo.names() if n not in tiny_zoo.names()[:3]]
    monkeypatch.setattr(tasks, "load_suite", lambda suite: demo)
    monkeypatch.setattr(tasks, "load_split", lambda: SimpleNamespace(zoo=zoo, heldout=heldout, instances={}, may_train=lambda n: n not in heldout))
    seen = plan(EvalConfig(split="seen", zoo=str(tiny_zoo.root), methods=("base",)))
    assert [et.task.name for et in seen] == zoo
    for i, et in enumerate(seen):
        assert et.description != et.task.description and et.other_description == seen[(i + 1) % 3].description
    assert [et.task.name for et in plan(EvalConfig(split="heldout", methods=("base",), tasks=(heldout[0],)))] == heldout[:1]
    with pytest.raises(HypergenError, match=f"{zoo[0]} not in the heldout split"):
        plan(EvalConfig(split="heldout", methods=("base",), tasks=(zoo[0],)))


def test_the_other_task_control_comes_from_another_family_and_a_zoo_with_held_out_experts_is_refused(tiny_zoo, monkeypatch):
    """linguistic_mappings has 11 held-out subtasks: a sibling's description as the control would be nearly
    the task's own. And a held-out run must not draw on a zoo that holds a held-out family's expert."""
    from types import SimpleNamespace

    import hypergen.tasks as tasks
    from hypergen.eval.protocol import plan
    from hypergen.tasks import Task, TaskSuite

    demo = tasks.load_suite(DEMO)
    src = [demo.get(n) for n in demo.names()[:3]]
    suite = TaskSuite([Task("fam/a", src[0].descriptions, src[0].instances), Task("fam/b", src[1].descriptions, src[1].instances),
                       Task("solo", src[2].descriptions, src[2].instances)])
    heldout = ["fam/a", "fam/b", "solo"]
    monkeypatch.setattr(tasks, "load_suite", lambda suite_name: suite)
    monkeypatch.setattr(tasks, "load_split", lambda: SimpleNamespace(zoo=[], heldout=heldout, instances={}, may_train=lambda n: True))
    got = {et.task.name: et for et in plan(EvalConfig(split="heldout", zoo=str(tiny_zoo.root), methods=("base",)))}
    assert got["fam/a"].other_description == got["solo"].description  # not fam/b's, the next task's
    assert got["fam/b"].other_description == got["solo"].description
    assert got["solo"].other_description == got["fam/a"].description
    expert = tiny_zoo.names()[0]
    monkeypatch.setattr(tasks, "load_split", lambda: SimpleNamespace(zoo=[], heldout=heldout, instances={}, may_train=lambda n: n != expert))
    with pytest.raises(HypergenError, match=f"holds experts of held-out families \\({expert}\\)"):
        plan(EvalConfig(split="heldout", zoo=str(tiny_zoo.root), methods=("base",)))


def test_desc_variant_puts_the_description_in_the_prompt_next_to_the_adapter(tiny_zoo, tiny_path, tmp_path, monkeypatch):
    """`nearest+desc` scores nearest's adapter with the description in the prompt; `base_desc` the bare base with it."""
    import hypergen.scoring as scoring

    seen = []
    real = scoring.score_runs

    def spy(res, runs, **kw):
        seen.extend((r.adapter is not None, r.description) for r in runs)  # in row order
        return real(res, runs, **kw)

    monkeypatch.setattr(scoring, "score_runs", spy)
    r = run(tiny_zoo, tiny_path, tmp_path / "res", "--methods", "nearest", "--methods", "nearest+desc", "--methods", "base_desc", "--no-controls")
    assert r.exit_code == 0, r.output
    assert list(json.loads(r.stdout)["methods"]) == ["base_desc", "nearest", "nearest+desc"]
    rows = [json.loads(x)["method"] for x in (tmp_path / "res" / "results.jsonl").read_text().splitlines()]
    (m1, d1), (m2, d2), (m3, d3) = [seen[rows.index(m)] for m in ("nearest", "nearest+desc", "base_desc")]
    assert (m1, d1) == (True, None) and m2 and d2 and not m3 and d3 == d2
    bad = run(tiny_zoo, tiny_path, tmp_path / "bad", "--methods", "base+desc")
    assert bad.exit_code == 1 and "Unknown method" in bad.stderr


def test_empty_suite_is_an_error(tiny_zoo, tiny_path, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    r = CliRunner().invoke(app, ["eval", "--suite", str(empty), "--split", "all", "--zoo", str(tiny_zoo.root), "--encoder", "fake", "--base", str(tiny_path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and r.stderr.startswith("error: ")


def test_seeds_repeat_only_when_they_draw_the_same_instances(tiny_zoo, tiny_path, tmp_path):
    """Every method is deterministic at one sample: a seed that draws the same instances is recorded, not rerun."""
    from hypergen.tasks import load_suite

    n_test = len(load_suite(DEMO).get("antonyms").instances)
    for instances, repeats in ((1000, True), (2, False)):
        out = tmp_path / f"res{instances}"
        r = run(tiny_zoo, tiny_path, out, "--methods", "base", "--methods", "nearest", "--no-controls", "--seeds", "2", "--instances", str(instances))
        assert r.exit_code == 0, r.output
        rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
        second = [x for x in rows if x["seed"] == 1]
        assert len(second) == 4 and all(("repeat_of_seed" in x) == repeats for x in second), (n_test, second)
        if repeats:
            first = {(x["task"], x["method"]): x for x in rows if x["seed"] == 0}
            assert all(x["main"] == first[(x["task"], x["method"])]["main"] for x in second)


def test_answer_budget_follows_the_longest_reference():
    from hypergen.eval.protocol import ANSWER_SLACK, answer_budget
    from hypergen.tasks import Instance

    def words(text, add_special_tokens=False):  # a tokenizer of whitespace words
        return {"input_ids": text.split()}

    short = [Instance("q", ["yes"]), Instance("q", ["no", "not at all"])]
    assert answer_budget(words, short, 16) == 3 + ANSWER_SLACK  # "not at all" is the longest accepted answer
    assert answer_budget(words, [Instance("q", [" ".join(["w"] * 40)])], 16) == 16  # never above the cap


def test_calibration_compares_abmll_samples_and_resumes_from_its_cache(tiny_zoo, tiny_path, tmp_path, monkeypatch):
    import torch

    from hypergen import api
    from hypergen.generators import build

    real = api.get_generator
    torch.manual_seed(0)
    abmll = build("abmll", api.bank(str(tiny_zoo.root), "fake"), init_post_var=1.0)  # untrained, wide posterior

    def with_tiny_abmll(name=None, zoo_path=None, encoder_name="minilm", checkpoint=None, **kw):
        return abmll if name == "abmll" else real(name, zoo_path, encoder_name, checkpoint, **kw)

    monkeypatch.setattr(api, "get_generator", with_tiny_abmll)
    out = tmp_path / "res"
    r = run(tiny_zoo, tiny_path, out, "--methods", "base", "--methods", "abmll", "--no-controls")
    assert r.exit_code == 0, r.output
    cal = json.loads(r.stdout)["calibration"]
    assert {"base", "abmll", "abmll_bma4"} <= set(cal)
    bma = cal["abmll_bma4"]
    assert bma["n"] == cal["base"]["n"] == 3 and 0 <= bma["ece"] <= 1 and 0 <= bma["brier"] <= 2 and bma["mutual_information"] > 0
    cached = (out / "calibration.jsonl").read_text().splitlines()
    assert [json.loads(x)["task"] for x in cached] == ["review_sentiment"]  # the multiple-choice task only

    def no_sampling(*a, **k):
        raise AssertionError("a resumed run must reuse calibration.jsonl")

    monkeypatch.setattr("hypergen.eval.calibration.bayesian_calibration", no_sampling)
    r2 = run(tiny_zoo, tiny_path, out, "--methods", "base", "--methods", "abmll", "--no-controls")
    assert r2.exit_code == 0, r2.output
    assert json.loads(r2.stdout)["calibration"]["abmll_bma4"] == bma


def test_bar_checks_the_best_family_against_the_targets():
    """Issue 17's bar, family-weighted, for the default generator and mode; the default is the best
    generator-and-mode whose own description beats gibberish by >= 0.03 (family-weighted main), else the
    lowest family-weighted NLL among the modes of families that take the description."""
    from types import SimpleNamespace

    from hypergen.eval.stats import bar
    from hypergen.eval.report import report_markdown

    def m(main, **kw):
        return {"tasks": 2, "main": main - 0.1, "main_family": main, **kw}  # the family-weighted score decides

    summary = {
        "split": "heldout", "suite": "x", "tasks": 2, "seeds": 1, "instances": 3, "calibration": {},
        "methods": {"base": m(0.2), "base_desc": m(0.35), "mtlora": m(0.3), "mtlora+desc": m(0.38), "nearest": m(0.5),
                    "sg": m(0.45, main_family_oracle_gap_closed=0.4), "icm": m(0.4), "sg+desc": m(0.42, main_family_oracle_gap_closed=0.3)},
        "controls": {"sg": {"aligned_minus_gibberish_family": 0.05, "aligned_minus_other_family": 0.01},
                     "sg+desc": {"aligned_minus_gibberish_family": 0.2}, "icm": {"aligned_minus_gibberish_family": 0.01}},
    }
    b = bar(summary)
    assert b["best_family"] == "sg" and b["best_method"] == "nearest"  # by the family-weighted main score
    assert b["uses_description"] == ["sg", "sg+desc"] and b["default"] == "sg"  # nearest has no control; icm's is too small
    got = {c["check"]: (round(c["value"], 6), c["met"]) for c in b["checks"]}
    assert got == {"main minus other task's description": (0.01, False), "main minus gibberish description": (0.05, True),
                   "main minus base_desc": (0.1, True), "main minus fair multi-task LoRA (mtlora)": (0.15, True), "oracle gap closed (main)": (0.4, False)}
    summary["bar"] = b
    text = report_markdown(summary, SimpleNamespace(suite="x", split="heldout", instances=3, seeds=1, out="o"))
    assert "| main minus other task's description | 0.010 | >= 0.03 | no (short by 0.020) |" in text and "**sg**" in text
    prompted = bar({**summary, "methods": {**summary["methods"], "sg+desc": m(0.6)}})  # +desc the better mode: judged and picked with its own mtlora mode
    assert prompted["best_family"] == prompted["default"] == "sg+desc"
    checks = {c["check"]: c["value"] for c in prompted["checks"]}
    assert round(checks["main minus fair multi-task LoRA (mtlora+desc)"], 6) == 0.22 and checks["main minus other task's description"] is None  # not scored
    seen = {**summary, "split": "seen", "methods": {**summary["methods"], "oracle": m(0.5)}}
    share = [c for c in bar(seen)["checks"] if c["check"].startswith("share of the oracle")]
    assert [(round(c["value"], 6), c["met"]) for c in share] == [(0.875, False)]  # sg's task-weighted 0.35 of the oracle's 0.4
    # no mode clears its gibberish control: main scores are noise, the content metric (family NLL) picks, and the bar judges the pick
    quiet = {**summary, "controls": {"sg": {"aligned_minus_gibberish_family": 0.01}, "icm": {"aligned_minus_gibberish_family": -0.02}},
             "methods": {**summary["methods"], "sg": m(0.45, nll_family=2.9), "icm": m(0.4, nll_family=2.7), "sg+desc": m(0.42, nll_family=2.0),
                         "mtlora+desc": m(0.38, nll_family=1.5), "nearest": m(0.5, nll_family=3.5)}}
    q = bar(quiet)
    assert q["uses_description"] == [] and q["default"] == q["best_family"] == "sg+desc" and q["by"] == "nll"  # not mtlora+desc: blind to it
    assert {c["check"] for c in q["checks"]} >= {"main minus fair multi-task LoRA (mtlora+desc)"}
    assert "content metric picks the default generator and mode" in report_markdown({**quiet, "bar": q}, SimpleNamespace(suite="x", split="heldout", instances=3, seeds=1, out="o"))
    # only the held-out split picks the shipped default: a seen run's rule is reported as that split's pick
    on_seen = report_markdown({**quiet, "split": "seen", "bar": q}, SimpleNamespace(suite="x", split="seen", instances=3, seeds=1, out="o"))
    assert "default generator and mode" not in on_seen and "this split's pick (the shipped default is picked on the held-out split): sg+desc" in on_seen
    blind = bar({**seen, "controls": {}})  # no controls scored: no method is shown to use its description
    assert blind["default"] is None and "picks no default generator" in report_markdown({**seen, "bar": blind}, SimpleNamespace(suite="x", split="seen", instances=3, seeds=1, out="o"))


def test_every_eval_option_has_help():
    """`hypergen eval --help` documents every EvalConfig field: the help comes from its docstring's `name: text.` entries."""
    import dataclasses

    from hypergen.cli_options import docstring_fields

    names = [f.name for f in dataclasses.fields(EvalConfig)]
    assert sorted(docstring_fields(EvalConfig.__doc__, names)) == sorted(names)
    r = CliRunner().invoke(app, ["eval", "--help"])
    shown = " ".join(r.stdout.split()).replace("- ", "-")  # rich may wrap a line after a hyphen
    assert r.exit_code == 0, r.output
    for text in ("ABMLL samples for each multiple-choice task", "resamples behind each 95% bootstrap CI", "the description encoder", "auto, cpu or cuda", "instead of SmolLM2", "the results folder"):
        assert text in shown, text
