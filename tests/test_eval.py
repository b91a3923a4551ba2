"""The evaluation protocol, small: tiny model, two tasks, one seed."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hypergen.cli import app
from hypergen.paths import REPO_ROOT

DEMO = str(REPO_ROOT / "data" / "demo" / "demo.jsonl")


def run(tiny_zoo, tiny_path, out, *extra):
    args = ["eval", "--suite", DEMO, "--split", "all", "--zoo", str(tiny_zoo.root), "--base", str(tiny_path), "--encoder", "fake",
            "--instances", "3", "--seeds", "1", "--out", str(out), "--tasks", "antonyms", "--tasks", "review_sentiment", "--json", *extra]
    return CliRunner().invoke(app, args)


def test_small_eval_end_to_end_and_resume(tiny_zoo, tiny_path, tmp_path):
    methods = ["--methods", "base", "--methods", "base_desc", "--methods", "multitask", "--methods", "nearest", "--methods", "mix", "--methods", "oracle"]
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
    assert by[("antonyms", "oracle")]["rougeL"] == by[("antonyms", "nearest")]["rougeL"]
    # resume: a rerun finds every row done and appends nothing
    r2 = run(tiny_zoo, tiny_path, tmp_path / "res", *methods)
    assert r2.exit_code == 0 and len((tmp_path / "res" / "results.jsonl").read_text().splitlines()) == len(rows)


@pytest.mark.parametrize("args, message", [(["--methods", "telepathy"], "Unknown method"), (["--split", "sideways"], "--split must be")])
def test_bad_eval_input(tiny_zoo, tiny_path, tmp_path, args, message):
    r = run(tiny_zoo, tiny_path, tmp_path / "res", *args)
    assert r.exit_code == 1 and message in r.stderr


def test_empty_suite_is_an_error(tiny_zoo, tiny_path, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    r = CliRunner().invoke(app, ["eval", "--suite", str(empty), "--split", "all", "--zoo", str(tiny_zoo.root), "--encoder", "fake", "--base", str(tiny_path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and r.stderr.startswith("error: ")
