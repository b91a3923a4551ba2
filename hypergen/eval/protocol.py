"""The held-out evaluation: do generated adapters beat the baselines on tasks no expert saw?

For every task of the chosen split and every method, the same test instances are scored (ROUGE-L and
exact match of the greedy answer; accuracy by option log-likelihood for multiple choice), over K
seeds (the seed draws the instance subset when --instances is below the test size, and seeds the
sampling generators). Every method is deterministic at one sample, so when a task has no more test
instances than --instances all seeds score the same instances with the same adapter: that run is made
once and recorded for each seed (`repeat_of_seed`). A task's pending methods (and controls) are scored
together, each test instance under every method's adapter in one batch (per-row adapters, one prefill
of each prompt for its greedy answer, options and reference: scoring.score_runs), and their rows are
appended to results.jsonl when the task and seed finish, so an interrupted run resumes where it stopped. Each row carries its key: everything that changes it (the scored instances'
content, so the suite as read, the split and the --instances draw; the descriptions; the seed; the base, by
name and by its files' content; the answer budget; the content of the zoo, generator checkpoint or oracle expert behind its adapter). A
rerun scores the rows whose key it has not seen and summarises only the rows of its own keys, so rows
made with other settings are never reused. Rows also keep the greedy answers (or the chosen option).
Then: means over tasks and over families (each BIG-bench top-level task counts once), multiple choice
and generation apart, with bootstrap CIs; the content metric (NLL of the reference answer); multiple-choice accuracy
with each option's prior over the task's questions divided out (`calibrated`, derived from the stored option
probabilities when a run summarises: a method's bias to one option hides no content); paired-bootstrap CIs of each method's
difference to the multi-task LoRA, the share of the base-to-oracle gap closed, the aligned-minus-control
gap (gibberish / another task's description), and calibration on held-out multiple-choice tasks.

This module plans, runs and resumes; methods.py says what each method is and what makes its adapter,
stats.py computes the summary from the rows.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from hypergen import paths
from hypergen.base import machine
from hypergen.errors import HypergenError
from hypergen.eval.methods import BASE, BASE_PROMPTED, GIBBERISH, ORACLE, PROMPTED, Method, adapter, all_methods, default_methods, files_hash, sources, untrained
from hypergen.eval.stats import family, summarize

ANSWER_SLACK = 4  # tokens allowed past the task's longest reference answer
PROB_DIGITS = 6  # option probabilities kept in results.jsonl (for calibration); ECE/Brier move < 1e-5
KEY_VERSION = 2  # of the row key; results.jsonl rows of version 1 (scores only) carry none
ANSWER_CHARS = 200  # each answer kept in results.jsonl is cut to this many characters
EXAMPLES = 3  # example answers per family in the report


@dataclass
class EvalConfig:
    """One evaluation run.

    suite: "bigbench" (with the committed split) or a path load_suite reads (then every task counts as
    unseen). split: heldout | seen | all. methods: Method strings (methods.py): base, base_desc, oracle, a
    registered generator family, or a family's or the oracle's name + "+desc" (its adapter with the
    description in the prompt too), or a control (GENERATOR@other, scored on seed 0); default
    default_methods(), every method that can run here. instances: test instances per task (a seeded
    subset when fewer than the task has; 20 and 1 seed keep the default run of the held-out split within
    an hour on a 2-core CPU: the CIs are over families, whose spread dwarfs the instance draw;
    --instances 50 scores every test instance). seeds: how many seeds (K) each method is scored with;
    each seed draws its own instances. controls: also score each learned description-dependent generator
    (Method.controlled) with a gibberish and another task's description (seed 0 only). out: the results
    folder (results.jsonl, results.json, report.md and methods.png); rerun with the same folder to resume.
    zoo / oracle_zoo: expert zoos (the oracle zoo holds experts trained on held-out tasks only, for the
    upper reference; never shown to a generator). recorded_oracle: where a task's oracle expert is not
    here (the oracle zoo lives in the cache: hours of this CPU to rebuild), take its oracle rows from
    --out's results.jsonl instead, matched on every setting but the expert's files, which cannot be hashed
    again; a row that does not match stops the run, and the report counts the rows taken (a long-budget row
    that no run recorded is left out, and the report says so). Without it such a task has no oracle row.
    tasks / limit: restrict the task list.
    base: a local Hugging Face model folder instead of SmolLM2. device: auto, cpu or cuda.
    encoder: the description encoder the generators use, minilm (real) or fake (tests); it must be the
    one their checkpoints were trained with.
    max_new_tokens: greedy answers stop at the task's longest reference answer + ANSWER_SLACK tokens,
    at most this many (a reference of one word needs no 16-token answer; this cut the eval's decoding
    ~2x on the CPU and treats every method alike; the base, which rambles, gains most).
    long_budget: also answer the generation tasks with up to this many new tokens whatever the reference's
    length (seed 0, no controls; a separate ROUGE-L column), to see what the short budget cuts off (a
    multiple-choice task is scored on its options, which no budget cuts). None: skip.
    prune: drop the stale rows from results.jsonl when the run ends: rows of this run's tasks, methods,
    seeds and budgets made with other settings (a retrained generator, another zoo); the report counts
    them either way. Rows of other tasks or methods, and the long-budget rows of a run without
    --long-budget, stay.
    calibration_samples: adapters ABMLL samples for each multiple-choice task of the split, whose
    averaged option probabilities (the Bayesian model average) give its calibration.
    max_options: a multiple-choice question with more options is scored among its correct option(s) and
    seeded distractors, this many in all (the prompt is unchanged; every method sees the same ones):
    periodic_elements' 118 options per question cost an hour of this CPU for the default methods.
    0: every option.
    bootstrap: resamples behind each 95% bootstrap CI of the summary.
    batch_rows: rows (one test instance under one method) per batched forward pass: a task's pending
    methods are scored together through per-row adapters, one prefill of each prompt serving its greedy
    answer, options and reference answer; more rows use more memory (logits of every option token).
    """

    suite: str = "bigbench"
    split: Literal["heldout", "seen", "all"] = "heldout"
    methods: tuple[str, ...] = field(default_factory=default_methods)
    instances: int = 20
    seeds: int = 1
    controls: bool = True
    out: str = "docs/results"
    zoo: str | None = None
    oracle_zoo: str | None = field(default_factory=lambda: str(paths.home() / "zoo" / "oracle"))
    recorded_oracle: bool = False
    tasks: tuple[str, ...] | None = None
    limit: int | None = None
    base: str | None = None
    device: str = "auto"
    encoder: str = "minilm"
    max_new_tokens: int = 16
    long_budget: int | None = None
    prune: bool = False
    calibration_samples: int = 4
    max_options: int = 16
    bootstrap: int = 2000
    batch_rows: int = 32

    def __post_init__(self):
        self.methods = tuple(self.methods) if self.methods else default_methods()
        unknown = []
        for m in self.methods:
            try:
                Method.parse(m).check()  # a named control (nearest@other) is scored on seed 0, as --controls' are
            except HypergenError:
                unknown.append(m)
        if unknown:
            raise HypergenError(f"Unknown method(s) {unknown}; available: {', '.join(all_methods())}, GENERATOR{PROMPTED} (its adapter with the description "
                                f"in the prompt), and GENERATOR@gibberish / GENERATOR@other (a control, for a generator given a description).")
        if self.split not in ("heldout", "seen", "all"):
            raise HypergenError(f"--split must be heldout, seen or all; got {self.split!r}.")
        if self.instances < 1 or self.seeds < 1 or (self.limit is not None and self.limit < 1):
            raise HypergenError(f"--instances, --seeds and --limit must be >= 1; got {self.instances}, {self.seeds}, {self.limit}.")
        if self.long_budget is not None and self.long_budget < 1:
            raise HypergenError(f"--long-budget must be >= 1 new tokens (e.g. 32); got {self.long_budget}.")
        if self.max_options < 0 or self.max_options == 1:
            raise HypergenError(f"--max-options must be >= 2 (e.g. 16), or 0 to score every option; got {self.max_options}.")
        if self.bootstrap < 1 or self.calibration_samples < 1:  # else the summary fails after the whole run
            raise HypergenError(f"--bootstrap and --calibration-samples must be >= 1; got {self.bootstrap}, {self.calibration_samples}.")
        if self.batch_rows < 1:
            raise HypergenError(f"--batch-rows must be >= 1 (e.g. 32); got {self.batch_rows}.")
        missing = sorted({Method.parse(m).name for m in self.methods if untrained(Method.parse(m).name)})
        if missing:  # before the model loads and the first task runs
            raise HypergenError(f"No trained checkpoint for {', '.join(missing)}: train with `hypergen train NAME`, or leave them out of --methods "
                                f"(without --methods the eval runs only what can run: {', '.join(default_methods())}).")


@dataclass
class EvalTask:
    task: object  # hypergen.tasks.Task
    description: str  # what the generators are given
    test: list  # instances
    other_description: str  # another task's description (control)


def _first_sentence(text: str) -> str:
    import re

    parts = re.split(r"(?<=[.!?])\s+", text.strip())
    return parts[0] if parts and len(parts[0]) > 10 else text.strip()


def plan(cfg: EvalConfig) -> list[EvalTask]:
    """The tasks of the split, their evaluation descriptions and test instances."""
    from hypergen import api
    from hypergen.tasks import load_split, load_suite
    from hypergen.zoo.build import instances as split_instances

    suite = load_suite(cfg.suite)
    split = load_split() if cfg.suite == "bigbench" else None
    if cfg.split == "all" or split is None:
        if cfg.split != "all" and split is None:
            raise HypergenError(f"--split {cfg.split} needs the BIG-bench split; for a suite given by path use --split all.")
        names = suite.names()
    elif cfg.split == "heldout":
        names = [n for n in split.heldout if n in suite]
        _refuse_heldout_experts(cfg.zoo, split)
    else:
        zoo_names = set(api.zoo(cfg.zoo).names())
        names = [n for n in split.zoo if n in zoo_names]
    if cfg.tasks:
        wanted = [suite.get(n).name for n in cfg.tasks]  # an unknown name fails here, with the suite's names
        outside = [n for n in wanted if n not in names]
        if outside:  # scored as held-out, a training task would flatter every generator
            raise HypergenError(f"{', '.join(outside)} not in the {cfg.split} split of {cfg.suite}: name tasks of the split, or use --split all.")
        names = wanted
    if cfg.limit:
        names = names[: cfg.limit]
    if not names:
        raise HypergenError(f"The {cfg.split} split of {cfg.suite} has no tasks to evaluate.")
    out = []
    for n in names:
        task = suite.get(n)
        test = split_instances(task, split, "test")
        if not test:
            raise HypergenError(f"Task {n} has no test instances; evaluation needs some.")
        test = [fewer_options(i, cfg.max_options) for i in test]
        # seen tasks are described differently from what the generators trained on
        desc = _first_sentence(task.descriptions[-1]) if cfg.split == "seen" else task.description
        out.append(EvalTask(task, desc, test, ""))
    for i, et in enumerate(out):
        # the next task of another family, described as the split describes its own: a sibling subtask's
        # description (linguistic_mappings has 11) would be nearly the task's own and hide a real gap
        others = out[i + 1 :] + out[:i]
        other = next((o for o in others if o.task.family != et.task.family), others[0] if others else None)
        et.other_description = other.description if other is not None else GIBBERISH
    return out


def _refuse_heldout_experts(zoo_path, split) -> None:
    """A held-out run whose zoo (what the generators draw on) holds an expert of a held-out family, or of
    one related to it, would score retrieval of the answer (e.g. --zoo naming the oracle zoo)."""
    from hypergen import api

    try:
        names = api.zoo(zoo_path).names()
    except HypergenError:
        return  # no zoo: the methods that need one say so
    bad = [n for n in names if not split.may_train(n)]
    if bad:
        raise HypergenError(f"The zoo at {zoo_path or api.default_zoo_path()} holds experts of held-out families ({', '.join(bad[:4])}): "
                            "a held-out evaluation needs a zoo built without them (hypergen zoo build, not --oracle).")


def fewer_options(inst, cap: int):
    """The instance with at most `cap` options (0: all): its correct ones and distractors drawn with a
    seed from its content (so a rerun, and every method, get the same), in their original order."""
    if not cap or not inst.options or len(inst.options) <= cap:
        return inst
    right = [o for o in inst.options if o in inst.targets][:cap]
    wrong = [o for o in inst.options if o not in inst.targets]
    keep = set(right) | set(random.Random(digest([inst.input, inst.options])).sample(wrong, cap - len(right)))
    return replace(inst, options=[o for o in inst.options if o in keep])


def answer_budget(tokenizer, test: list, cap: int) -> int:
    """New tokens for a task's greedy answers: its longest reference + ANSWER_SLACK, at most cap."""
    longest = max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for i in test for t in i.targets)
    return max(1, min(cap, longest + ANSWER_SLACK))


def _subset(test: list, n: int, seed: int) -> list:
    if n >= len(test):
        return list(test)
    return random.Random(seed).sample(test, n)


# ---- row keys ----------------------------------------------------------------------------------
def digest(obj) -> str:
    """A short content hash of a JSON-able value."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


@dataclass
class RowKeys:
    """Builds each row's key: a dict of everything that changes the row (see the module doc)."""

    cfg: EvalConfig
    base: str  # the resident base model's name
    oracles: dict  # task -> the Zoo holding its oracle expert
    recorded: dict = field(default_factory=dict)  # task -> its oracle expert's hash as an earlier run's rows recorded it (--recorded-oracle)
    base_path: Path | None = None  # the base's folder: its files' content is part of every key (same name, other weights: new rows)
    _sources: dict = field(default_factory=dict)  # (method name, task) -> sources, hashed once a run

    def __post_init__(self):
        self.base_files = files_hash(self.base_path) if self.base_path else None  # ~1 s for SmolLM2's 0.5 GB, once a run

    def sources(self, m: Method, task: str) -> dict:
        """What the method's adapter is made from, by content (methods.sources), hashed once a run."""
        at = (m.name, task if m.name == ORACLE else None)
        if at not in self._sources:
            recorded = m.name == ORACLE and task in self.recorded  # only tasks whose expert is not here
            self._sources[at] = {"oracle": self.recorded[task]} if recorded else sources(m, task, self.cfg.zoo, self.cfg.encoder, self.oracles)
        return self._sources[at]

    def row(self, et: EvalTask, m: Method | str, seed: int, desc: str | None, test: list, budget: int, long: bool = False) -> dict:
        """desc: what the generator is given (ignored for the references, which take none)."""
        m = Method.parse(m) if isinstance(m, str) else m
        return {
            "version": KEY_VERSION, "task": et.task.name, "method": str(m), "seed": seed, "long": long,
            "data": digest([[i.input, i.targets, i.options] for i in test]),  # the suite as read, the split, the draw
            "n": len(test),
            # what the generator is given (the base and the oracle take none), and what the prompt holds
            "descriptions": digest([desc if m.family is not None else None, et.description if m.prompt_description else None]),
            "base": self.base, "base_files": self.base_files, "max_new_tokens": budget, **self.sources(m, et.task.name),
        }


@dataclass
class Job:
    et: EvalTask
    method: Method
    seed: int
    long: bool = False  # a long-budget row (answers only)

    @property
    def description(self) -> str | None:
        """What the generator is given (None for the references)."""
        return self.method.given(self.et.description, self.et.other_description)


def _read_rows(rows_path: Path) -> list[dict]:
    rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()] if rows_path.is_file() else []
    if any("key" not in r for r in rows):
        raise HypergenError(
            f"{rows_path} was written by an older hypergen: its rows do not record the settings that made them, "
            f"so they cannot be resumed safely. Evaluate into another --out, or delete {rows_path.parent} to start fresh."
        )
    return rows


def _prune(rows_path: Path, drop: set[str]) -> None:
    """Rewrite results.jsonl without the rows whose key digest is in drop (through a temporary file: a kill leaves the old one)."""
    kept = [line for line in rows_path.read_text().splitlines() if line.strip() and digest(json.loads(line)["key"]) not in drop]
    tmp = rows_path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(rows_path)


def _changed(old: dict, new: dict) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def run(cfg: EvalConfig, progress: bool = True) -> dict:
    """Run (or resume) the evaluation; returns the summary and writes results + report into cfg.out."""
    from tqdm.auto import tqdm

    from hypergen import api
    from hypergen.zoo.store import Zoo

    tasks = plan(cfg)
    out = Path(cfg.out)
    rows_path = out / "results.jsonl"
    old_rows = _read_rows(rows_path)  # before the model loads: an old folder fails fast
    out.mkdir(parents=True, exist_ok=True)
    done = {digest(r["key"]): r for r in old_rows}
    # oracle experts: the zoo's own for seen tasks; the separate oracle zoo for held-out ones
    oracles = {}
    methods = [Method.parse(m) for m in cfg.methods]
    if any(m.name == ORACLE for m in methods):
        zoos = [api.zoo(cfg.zoo)]
        if cfg.oracle_zoo and (Path(cfg.oracle_zoo) / "manifest.json").is_file():
            zoos.append(Zoo(cfg.oracle_zoo))
        for et in tasks:
            for z in zoos:
                if z.has(et.task.name):
                    oracles[et.task.name] = z
    # --recorded-oracle: the newest recorded hash of each oracle expert that is not here
    recorded = {r["task"]: r["key"]["oracle"] for r in old_rows if r["method"] == ORACLE and r["task"] not in oracles} if cfg.recorded_oracle else {}
    recorded_long = {r["task"] for r in old_rows if r["method"] == ORACLE and r.get("long") and r["task"] in recorded}
    no_long: list[str] = []  # tasks whose oracle has no recorded long-budget row and no expert here to make one
    res = api.resident(cfg.base, cfg.device)
    keys = RowKeys(cfg, res.name, oracles, recorded, base_path=res.path)
    jobs = []
    named = [m for m in methods if m.control]  # controls named in --methods
    methods = [m for m in methods if not m.control]
    for et in tasks:
        for seed in range(cfg.seeds):
            for m in methods:
                if m.name == ORACLE and et.task.name not in oracles and et.task.name not in recorded:
                    continue
                jobs.append(Job(et, m, seed))
                if cfg.long_budget and seed == 0 and not et.task.is_multiple_choice:
                    if m.name == ORACLE and et.task.name in recorded and et.task.name not in recorded_long:
                        no_long.append(et.task.name)
                    else:
                        jobs.append(Job(et, m, 0, long=True))
            if seed == 0:
                added = [c for m in methods if cfg.controls and m.controlled for c in m.controls()]
                jobs += [Job(et, c, 0) for c in added + [c for c in named if c not in added]]
    budget = {et.task.name: answer_budget(res.tokenizer, et.test, cfg.max_new_tokens) for et in tasks}

    def key_of(j: Job, seed: int | None = None) -> dict:
        s = j.seed if seed is None else seed
        return keys.row(j.et, j.method, s, j.description, _subset(j.et.test, cfg.instances, s), cfg.long_budget if j.long else budget[j.et.task.name], j.long)

    wanted = [(j, key_of(j)) for j in jobs]
    todo = [(j, k) for j, k in wanted if digest(k) not in done]
    unmatched = [(j, k) for j, k in todo if j.method.name == ORACLE and j.et.task.name in recorded]
    if unmatched:  # a recorded oracle row made with other settings: there is no expert here to score it again
        old = {(r["task"], r["seed"], r.get("long", False)): r["key"] for r in old_rows if r["method"] == ORACLE}
        changed = sorted({c for j, k in unmatched for c in _changed(old.get((j.et.task.name, j.seed, j.long), {}), k)})
        raise HypergenError(
            f"--recorded-oracle: {len(unmatched)} oracle rows (tasks: {', '.join(sorted({j.et.task.name for j, _ in unmatched}))}) were recorded with other "
            f"settings (changed: {', '.join(changed)}) and their experts are not in {cfg.oracle_zoo}: build them with `hypergen zoo build --oracle`, "
            f"or run without --recorded-oracle (no oracle rows for those tasks).")
    # one task and seed at a time: its pending methods are scored together (score_runs), and a seed's
    # repeats find seed 0's rows already written
    groups: dict[tuple[str, int], list[tuple[Job, dict]]] = {}
    for j, k in todo:
        groups.setdefault((j.et.task.name, j.seed), []).append((j, k))
    bar = tqdm(total=len(todo), desc="eval", unit="run", disable=not progress)
    with open(rows_path, "a") as f:
        for group in groups.values():
            et = group[0][0].et
            bar.set_postfix_str(et.task.name[:30])
            rows: dict[int, dict] = {}  # job in the group -> its row
            for n, (j, key) in enumerate(group):
                first = done.get(digest(key_of(j, 0))) if j.seed > 0 else None
                if first is not None and cfg.instances >= len(et.test):
                    rows[n] = {**first, "seed": j.seed, "seconds": 0.0, "repeat_of_seed": 0, "key": key}
            pending = [n for n in range(len(group)) if n not in rows]
            rows |= zip(pending, _score_group(cfg, res, [group[n] for n in pending], budget[et.task.name], oracles))
            for n, (_, key) in enumerate(group):
                done[digest(key)] = rows[n]
                f.write(json.dumps(rows[n]) + "\n")
            f.flush()
            bar.update(len(group))
    bar.close()
    res.deactivate()
    rows = [calibrated(done[digest(k)], _subset(j.et.test, cfg.instances, j.seed)) for j, k in wanted]
    # rows of the same task, method and seed made with other settings: ignored, and said so
    current = {(k["task"], k["method"], k["seed"], k["long"]): k for _, k in wanted}
    stale = [r for r in old_rows if (c := current.get((r["task"], r["method"], r["seed"], r.get("long", False)))) is not None and digest(r["key"]) != digest(c)]
    calib = calibration(cfg, tasks, rows, out, keys) if "abmll" in cfg.methods and cfg.split != "seen" else {}
    summary = summarize(rows, cfg, calib)
    summary["stale"] = {"rows": len(stale), "changed": sorted({k for r in stale for k in _changed(r["key"], current[(r["task"], r["method"], r["seed"], r.get("long", False))])})}
    if cfg.prune and stale:
        _prune(rows_path, {digest(r["key"]) for r in stale})
        summary["stale"]["pruned"] = True
    taken = [j for j, _ in wanted if j.method.name == ORACLE and j.et.task.name in recorded]
    summary["recorded_oracle"] = {"rows": len(taken), "tasks": len({j.et.task.name for j in taken}), "no_long": no_long}
    summary["scoring_minutes"] = round(sum(r["seconds"] for r in rows) / 60, 1)  # repeats count 0
    summary["machine"] = machine()
    shipped = api.DEFAULT_GENERATOR + (PROMPTED if api.DEFAULT_PROMPT_DESCRIPTION and api.DEFAULT_GENERATOR + PROMPTED in cfg.methods else "")
    # the held-out run shows the default it picks; another split shows the shipped default
    default = ((summary.get("bar") or {}).get("default") if cfg.split == "heldout" else None) or shipped
    shown = [m for m in (BASE, BASE_PROMPTED, default, ORACLE) if m in cfg.methods]
    ex = examples(tasks, rows, shown, cfg.instances)
    light = ("option_probs", "labels", "answers", "chosen", "key")
    (out / "results.json").write_text(json.dumps({"config": asdict(cfg), "summary": summary, "examples": ex, "rows": [{k: v for k, v in r.items() if k not in light} for r in rows]}, indent=2))
    from hypergen.eval.report import write_report

    write_report(summary, cfg, out, ex)
    return summary


def _score_group(cfg: EvalConfig, res, group: list[tuple[Job, dict]], budget: int, oracles: dict) -> list[dict]:
    """The rows of jobs of one task and seed, in their order, scored in one score_runs call (the
    long-budget ones in another). A row's seconds: making its adapter plus its share of the batched
    scoring (every run of a call scores the same instances)."""
    from hypergen.scoring import Run, score_runs

    if not group:
        return []
    et, seed = group[0][0].et, group[0][0].seed
    test = _subset(et.test, cfg.instances, seed)
    runs: dict[bool, list[tuple[int, Run]]] = {False: [], True: []}  # long budget? -> (job, run)
    made: list[float] = []  # job -> seconds to make its adapter
    for n, (j, _) in enumerate(group):
        t = time.perf_counter()
        w = adapter(j.method, j.description, seed, et.task.name, cfg.zoo, cfg.encoder, oracles)
        made.append(time.perf_counter() - t)
        runs[j.long].append((n, Run(test, w, et.description if j.method.prompt_description else None)))
    rows: dict[int, dict] = {}
    for long, batch in runs.items():
        if not batch:
            continue
        t = time.perf_counter()
        if long:
            scores = score_runs(res, [r for _, r in batch], max_new_tokens=cfg.long_budget, generate=True, options=False, rows=cfg.batch_rows)
        else:
            scores = score_runs(res, [r for _, r in batch], max_new_tokens=budget, generate=True, nll=True, rows=cfg.batch_rows)
        share = (time.perf_counter() - t) / len(batch)
        for (n, _), s in zip(batch, scores):
            rows[n] = _row(group[n][0], s, test, group[n][1], made[n] + share)
    return [rows[n] for n in range(len(group))]


def _row(j: Job, s, test: list, key: dict, seconds: float) -> dict:
    """A results.jsonl row from a job's TaskScore."""
    et, m = j.et, j.method
    if j.long:
        row = {"task": et.task.name, "method": str(m), "seed": j.seed, "long": True, "rougeL": s.rougeL, "exact_match": s.exact_match, "n": s.n}
    else:
        row = {"task": et.task.name, "method": str(m), "seed": j.seed, **s.to_dict(), "multiple_choice": s.accuracy is not None}
    row |= {"max_new_tokens": key["max_new_tokens"], "seconds": round(seconds, 2)}
    if s.option_probs is not None:
        from hypergen.eval.calibration import option_labels

        row["option_probs"] = [[round(p, PROB_DIGITS) for p in ps] for ps in s.option_probs]  # full floats tripled the file
        row["labels"] = option_labels(test)  # an index, or the list of them where several options are correct
        row["chosen"] = [i.options[max(range(len(p)), key=p.__getitem__)][:ANSWER_CHARS] for p, i in zip(s.option_probs, test)]
    else:
        row["answers"] = [a[:ANSWER_CHARS] for a in s.answers]
    row["key"] = key
    return row


def calibrated(row: dict, test: list) -> dict:
    """The row with `accuracy_bc`, its multiple-choice accuracy with the option prior divided out
    (calibration.batch_calibrated_accuracy), from its stored option probabilities and the options of the
    instances it scored: derived when a run summarises, never stored, so older rows get it too. A row whose
    probabilities do not fit those instances' options (none should: the key covers them) goes without it."""
    if "option_probs" not in row or row.get("long"):
        return row
    from hypergen.eval.calibration import batch_calibrated_accuracy

    try:
        return {**row, "accuracy_bc": batch_calibrated_accuracy(row["option_probs"], row["labels"], [i.options for i in test])}
    except HypergenError as e:
        print(f"No prior-removed accuracy for {row['task']} / {row['method']}: {e}", file=sys.stderr)
        return row


def examples(tasks: list[EvalTask], rows: list[dict], methods: list[str], instances: int, k: int = EXAMPLES) -> list[dict]:
    """Up to k seed-0 instances per family (taken in turn from its tasks), each with the given methods'
    answers: the greedy answer, or the chosen option on multiple-choice tasks."""
    by = {(r["task"], r["method"]): r for r in rows if r["seed"] == 0 and not r.get("long")}
    families: dict[str, list[EvalTask]] = {}
    for et in tasks:
        families.setdefault(family(et.task.name), []).append(et)
    out = []
    for fam, ets in families.items():
        tests = [_subset(et.test, instances, 0) for et in ets]
        picks = [(et, t[i], i) for i in range(max(len(t) for t in tests)) for et, t in zip(ets, tests) if i < len(t)][:k]
        for et, inst, i in picks:
            said = {}
            for m in methods:
                r = by.get((et.task.name, m))
                if r is not None:
                    said[m] = (r["chosen"] if "chosen" in r else r["answers"])[i]
            out.append({"family": fam, "task": et.task.name, "input": inst.input[:ANSWER_CHARS * 2], "reference": inst.targets[0][:ANSWER_CHARS], "answers": said})
    return out


def calibration(cfg: EvalConfig, tasks: list[EvalTask], rows: list[dict], out: Path, keys: RowKeys) -> dict:
    """ECE / Brier on multiple-choice tasks: ABMLL's Bayesian model average of sampled adapters against
    each deterministic generator's single adapter (seed 0 rows). The BMA's per-task probabilities are
    kept in out/calibration.jsonl with their key (instances, descriptions, base, zoo, ABMLL checkpoint),
    so a resumed run does not sample and score them again, and a changed setting does."""
    from hypergen import api
    from hypergen.eval.calibration import accuracy, bayesian_calibration, brier, ece, predictive_entropy

    result: dict[str, dict] = {}
    by_method: dict[str, tuple[list, list]] = {}
    for r in rows:
        if r["seed"] == 0 and "option_probs" in r and not Method.parse(r["method"]).control:
            p, y = by_method.setdefault(r["method"], ([], []))
            p += r["option_probs"]
            y += r["labels"]
    for m, (p, y) in by_method.items():
        result[m] = {"ece": ece(p, y), "brier": brier(p, y), "accuracy": accuracy(p, y), "entropy": predictive_entropy(p), "n": len(y)}
    mc = [et for et in tasks if et.task.is_multiple_choice]
    if not mc:
        return result
    key = f"abmll_bma{cfg.calibration_samples}"
    cache_path = Path(out) / "calibration.jsonl"
    cached = {}
    if cache_path.is_file():
        for line in cache_path.read_text().splitlines():
            c = json.loads(line)
            if "key" in c:  # entries of an older hypergen carry none: sampled again
                cached[digest(c["key"])] = c
    p, y, mi = [], [], []
    gen = enc = res = None
    for et in mc:
        test = _subset(et.test, cfg.instances, 0)
        ckey = {"samples": cfg.calibration_samples, **keys.row(et, "abmll", 0, et.description, test, 0)}
        c = cached.get(digest(ckey))
        if c is None:
            if gen is None:
                try:
                    gen = api.get_generator("abmll", cfg.zoo, cfg.encoder)
                except HypergenError as e:
                    return {**result, key: {"skipped": str(e)}}
                res, enc = api.resident(cfg.base, cfg.device), api.encoder(cfg.encoder)
            rep = bayesian_calibration(res, gen, enc.encode([et.description])[0], test, samples=cfg.calibration_samples, seed=0)
            c = {"task": et.task.name, "samples": cfg.calibration_samples, "instances": len(test), "probs": rep.probs, "labels": rep.labels, "mutual_information": rep.mutual_information, "key": ckey}
            with open(cache_path, "a") as f:
                f.write(json.dumps(c) + "\n")
        p += c["probs"]
        y += c["labels"]
        mi.append(c["mutual_information"])
    result[key] = {"ece": ece(p, y), "brier": brier(p, y), "accuracy": accuracy(p, y), "entropy": predictive_entropy(p), "mutual_information": sum(mi) / len(mi), "n": len(y)}
    return result

