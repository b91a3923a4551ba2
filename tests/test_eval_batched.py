"""The batched evaluation (issue 14.6): a task's methods scored together through per-row adapters, one
prefill per prompt for the greedy answer, the options and the reference, give the rows that activating
each method's adapter and scoring it alone gives. Tiny model, the demo suite."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from conftest import random_lora
from hypergen.cli import app
from hypergen.paths import REPO_ROOT

DEMO = str(REPO_ROOT / "data" / "demo" / "demo.jsonl")
TOL = 1e-4


def run(zoo, tiny_path, out, *extra):
    args = ["eval", "--suite", DEMO, "--split", "all", "--zoo", str(zoo), "--base", str(tiny_path), "--encoder", "fake",
            "--instances", "3", "--seeds", "1", "--out", str(out), "--tasks", "antonyms", "--tasks", "review_sentiment", "--json", *extra]
    return CliRunner().invoke(app, args)


def rows_of(out):
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


def _same(batched, alone):
    """Answers equal; every score within TOL."""
    assert batched.answers == alone.answers
    for name in ("rougeL", "exact_match", "accuracy", "nll"):
        a, b = getattr(batched, name), getattr(alone, name)
        assert (a is None) == (b is None) and (a is None or abs(a - b) <= TOL), (name, a, b)
    assert (batched.option_probs is None) == (alone.option_probs is None)
    for p, q in zip(batched.option_probs or [], alone.option_probs or []):
        assert p == pytest.approx(q, abs=TOL)


@pytest.mark.parametrize("rows", [1, 4, 64])
def test_score_runs_matches_each_adapter_activated_and_scored_alone(resident, rows):
    from hypergen.scoring import Run, score_instances, score_runs
    from hypergen.tasks import Instance, load_suite

    suite = load_suite(DEMO)
    gen = suite.get("antonyms").instances[:4]
    mc = suite.get("review_sentiment").instances[:3]
    mc = mc + [Instance(mc[0].input, ["not an option"], mc[0].options)]  # a reference outside the options
    adapters = [None, random_lora(resident.model, seed=1, scale=0.3), random_lora(resident.model, seed=2, rank=4, scale=0.3)]
    runs = [Run(insts, w, d) for insts in (gen, mc) for w in adapters for d in (None, "Answer briefly.")]
    budget = 5
    batched = score_runs(resident, runs, max_new_tokens=budget, generate=True, nll=True, rows=rows)
    for r, b in zip(runs, batched):
        if r.adapter is None:
            resident.deactivate()
        else:
            resident.activate(r.adapter, name="evaluated")
        _same(b, score_instances(resident, r.instances, description=r.description, max_new_tokens=budget, generate=True, nll=True))
    resident.deactivate()
    # the adapters and descriptions matter, so the comparison above could fail
    assert len({tuple(b.answers) for b in batched[:6]}) > 1 and len({round(b.nll, 4) for b in batched}) == len(batched)
    longs = score_runs(resident, runs[:3], max_new_tokens=7, generate=True, options=False, rows=rows)  # answers only
    assert all(s.accuracy is None and s.nll is None and len(s.answers) == 4 for s in longs)


def test_batched_eval_rows_are_the_one_job_at_a_time_rows(tiny_zoo, tiny_path, tmp_path):
    """Every row of a batched eval (methods, +desc, controls, long budget) against its job scored alone:
    the adapter activated in the resident model and score_instances, as the evaluation did before."""
    from hypergen import api
    from hypergen.eval.methods import Method, adapter
    from hypergen.eval.protocol import _subset, plan, EvalConfig
    from hypergen.scoring import score_instances

    out = tmp_path / "res"
    methods = ["--methods", "base", "--methods", "base_desc", "--methods", "nearest", "--methods", "mix", "--methods", "nearest+desc", "--methods", "oracle"]
    methods += [x for m in ("nearest", "mix", "nearest+desc") for c in ("gibberish", "other") for x in ("--methods", f"{m}@{c}")]  # named: not a learned family
    r = run(tiny_zoo.root, tiny_path, out, *methods, "--long-budget", "6", "--batch-rows", "5")
    assert r.exit_code == 0, r.output
    rows = rows_of(out)
    cfg = EvalConfig(suite=DEMO, split="all", tasks=("antonyms", "review_sentiment"), zoo=str(tiny_zoo.root), encoder="fake")
    tasks = {et.task.name: et for et in plan(cfg)}
    res = api.resident(str(tiny_path), "auto")
    oracles = {t: tiny_zoo for t in tasks}
    # per task: 6 methods, 2 controls each for nearest, mix and nearest+desc; 6 long-budget rows on the generation task
    assert len(rows) == 2 * (6 + 6) + 6 and {r["task"] for r in rows if r.get("long")} == {"antonyms"}
    for row in rows:
        et, m = tasks[row["task"]], Method.parse(row["method"])
        test = _subset(et.test, 3, 0)
        w = adapter(m, m.given(et.description, et.other_description), 0, et.task.name, str(tiny_zoo.root), "fake", oracles)
        if w is None:
            res.deactivate()
        else:
            res.activate(w, name="evaluated")
        desc = et.description if m.prompt_description else None
        if row.get("long"):
            alone = score_instances(res, test, description=desc, max_new_tokens=6, generate=True, options=False)
            assert list(row) == ["task", "method", "seed", "long", "rougeL", "exact_match", "n", "max_new_tokens", "seconds", "answers", "key"]
        else:
            alone = score_instances(res, test, description=desc, max_new_tokens=row["max_new_tokens"], generate=True, nll=True)
            mc = ["option_probs", "labels", "chosen"] if row["multiple_choice"] else ["answers"]
            assert list(row) == ["task", "method", "seed", "rougeL", "exact_match", "accuracy", "n", "nll", "main", "multiple_choice", "max_new_tokens", "seconds", *mc, "key"]
            assert row["nll"] == pytest.approx(alone.nll, abs=TOL) and row["main"] == pytest.approx(alone.main, abs=TOL)
            if row["multiple_choice"]:
                for p, q in zip(row["option_probs"], alone.option_probs):
                    assert p == pytest.approx(q, abs=TOL)
        assert row["answers" if "answers" in row else "chosen"] == (alone.answers if "answers" in row else [i.options[p.index(max(p))] for p, i in zip(alone.option_probs, test)])
        assert row["rougeL"] == pytest.approx(alone.rougeL, abs=TOL) and row["exact_match"] == pytest.approx(alone.exact_match, abs=TOL)
        assert row["seconds"] > 0  # each row's share of its batch, so scoring_minutes stays a total
    res.deactivate()
    assert len({tuple(x.get("answers") or x["chosen"]) for x in rows if x["task"] == "antonyms"}) > 1  # methods differ: the comparison can fail


def test_base_rows_are_reused_by_an_eval_of_another_zoo(tiny_zoo, tiny_path, tmp_path):
    """The base's rows depend on no zoo or generator: a second eval into the same folder with another
    zoo scores only the generator's rows again."""
    out = tmp_path / "res"
    methods = ["--methods", "base", "--methods", "base_desc", "--methods", "nearest", "--no-controls"]
    assert run(tiny_zoo.root, tiny_path, out, *methods).exit_code == 0
    first = rows_of(out)
    other = tmp_path / "zoo"
    shutil.copytree(tiny_zoo.root, other)
    (other / "manifest.json").write_text((other / "manifest.json").read_text() + " ")  # another zoo, by content
    r = run(other, tiny_path, out, *methods)
    assert r.exit_code == 0, r.output
    new = rows_of(out)[len(first):]
    assert sorted((x["task"], x["method"]) for x in new) == [("antonyms", "nearest"), ("review_sentiment", "nearest")]
    assert json.loads(r.stdout)["stale"]["rows"] == 2  # the first zoo's nearest rows, ignored


def test_batch_rows_must_be_positive():
    from hypergen.errors import HypergenError
    from hypergen.eval import EvalConfig

    with pytest.raises(HypergenError, match="--batch-rows must be >= 1"):
        EvalConfig(suite=DEMO, split="all", batch_rows=0)


def test_rows_that_end_early_match_generate(resident):
    """Forced end-of-turn on a third of the steps (the random tiny model never says it): rows that stop
    early pad after it, as generate does, and the answers still equal the one-adapter-at-a-time ones."""
    import torch

    from hypergen.base import ResidentModel
    from hypergen.scoring import Run, score_instances, score_runs
    from hypergen.tasks import load_suite

    eos = resident.tokenizer.eos_token_id

    def end_sometimes(module, inputs, out):  # end-of-turn wins wherever the top token's id is 0 mod 3
        out = out.clone()
        top, best = out.argmax(-1), out.max(-1).values
        out[..., eos] = torch.where(top % 3 == 0, best + 1.0, out[..., eos])
        return out

    suite = load_suite(DEMO)
    runs = [Run(suite.get("antonyms").instances[:4], w, None) for w in (None, random_lora(resident.model, seed=1, scale=0.3))]
    greedy, made = ResidentModel._greedy, []
    hook = resident.model.lm_head.register_forward_hook(end_sometimes)
    try:
        ResidentModel._greedy = lambda self, *a, **k: made.append(greedy(self, *a, **k)) or made[-1]
        batched = score_runs(resident, runs, max_new_tokens=8, generate=True, nll=True, rows=8)
        ResidentModel._greedy = greedy
        for r, b in zip(runs, batched):
            resident.deactivate() if r.adapter is None else resident.activate(r.adapter, name="evaluated")
            _same(b, score_instances(resident, r.instances, max_new_tokens=8, generate=True, nll=True))
    finally:
        ResidentModel._greedy = greedy
        hook.remove()
        resident.deactivate()
    ended = torch.cat([(m == eos).long().cumsum(1)[:, :-1].gt(0).any(1) for m in made])
    assert ended.any() and not ended.all()  # some rows stopped before the others: the path under test ran


def test_long_prompts_take_fewer_rows_a_batch():
    from hypergen.base import _batches

    short = [([1] * 10, [[2, 3], [4, 5]]) for _ in range(8)]
    long = [([1] * 1000, [[2, 3], [4, 5]]) for _ in range(8)]
    assert [len(b) for b in _batches(short, 8, 128)] == [8]
    assert [len(b) for b in _batches(long, 8, 128)] == [8]  # candidates alone: 2 x 2 tokens a row
    assert max(len(b) for b in _batches(long, 8, 128, kv_per_logit=0.12)) == 1  # + each candidate's copy of a 1000-token cache
    assert [len(b) for b in _batches(short, 8, 128, kv_per_logit=0.12)] == [8]


def test_shared_prefixes_are_each_groups_common_start():
    from hypergen.base import SHARED_MIN, _shared_prefixes

    start = list(range(100, 100 + SHARED_MIN + 2))
    prompts = [start + [1, 2], start + [1, 3, 4], start + [9], start + [1], start[:-1] + [7, 8]]
    groups = ["a", "a", "a", "b", "b"]
    assert _shared_prefixes(prompts, groups)[:3] == [len(start)] * 3  # a: up to where the third differs
    assert _shared_prefixes(prompts, groups)[3:] == [len(start) - 1] * 2
    assert _shared_prefixes([start + [1], start + [1]], ["a", "a"]) == [len(start)] * 2  # the last token always runs
    assert _shared_prefixes([start, start], ["a", "b"]) == [0, 0]  # a group of one shares nothing
    assert _shared_prefixes([start[: SHARED_MIN - 1] + [1], start[: SHARED_MIN - 1] + [2]], ["a", "a"]) == [0, 0]  # too short to bother


def test_a_shared_prefix_runs_once_and_changes_no_score(resident, monkeypatch):
    """Rows of one adapter and description run their common start (the system turn, the description)
    once: fewer prompt tokens go through the model, and the answers and scores are those without it."""
    import hypergen.base
    from hypergen.scoring import Run, score_runs
    from hypergen.tasks import load_suite

    suite = load_suite(DEMO)
    adapters = [None, random_lora(resident.model, seed=1, scale=0.3), random_lora(resident.model, seed=2, rank=4, scale=0.3)]
    said = "Answer with one word: the opposite of the given word, in lower case."  # most of each prompt
    runs = [Run(suite.get(t).instances[:4], w, d) for t in ("antonyms", "review_sentiment") for w in adapters for d in (None, said)]
    seen = []
    hook = resident.model.model.embed_tokens.register_forward_hook(lambda m, args, out: seen.append(args[0].numel()) if args[0].shape[1] > 1 else None)
    try:
        shared = score_runs(resident, runs, max_new_tokens=5, generate=True, nll=True, rows=8)
        prefilled, seen[:] = sum(seen), []
        monkeypatch.setattr(hypergen.base, "SHARED_MIN", 10**6)  # no prefix is long enough: every prompt runs whole
        whole = score_runs(resident, runs, max_new_tokens=5, generate=True, nll=True, rows=8)
    finally:
        hook.remove()
    assert prefilled < 0.8 * sum(seen), (prefilled, sum(seen))  # tokens of the prompt (and candidate) passes, padding included
    for a, b in zip(shared, whole):
        _same(a, b)


def test_batches_follow_the_tokens_left_after_a_shared_prefix():
    from hypergen.base import _batches

    items = [([1] * 100, [[2]]), ([1] * 10, [[2]]), ([1] * 100, [[2]]), ([1] * 10, [[2]])]
    assert _batches(items, 2, 10**6) == [[1, 3], [0, 2]]  # by whole prompts
    assert _batches(items, 2, 10**6, order=[5, 10, 5, 10]) == [[0, 2], [1, 3]]  # by what still runs: 5 tokens after a 95-token prefix
    # memory: a batch's cache is its longest prefix + its longest rest wide (95 + 10 here, not 100)
    assert _batches(items, 4, 4 * 1 * (1 + 100 * 1.0), kv_per_logit=1.0, order=[5, 10, 5, 10]) == [[0, 2, 1], [3]]
