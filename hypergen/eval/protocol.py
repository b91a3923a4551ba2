"""The held-out evaluation: do generated adapters beat the baselines on tasks no expert saw?

For every task of the chosen split and every method, the same test instances are scored (ROUGE-L and
exact match of the greedy answer; accuracy by option log-likelihood for multiple choice), over K
seeds (the seed draws the instance subset when --instances is below the test size, and seeds the
sampling generators). Every method is deterministic at one sample, so when a task has no more test
instances than --instances all seeds score the same instances with the same adapter: that run is made
once and recorded for each seed (`repeat_of_seed`). Rows are appended to results.jsonl as they finish, so an interrupted run
resumes where it stopped. Then: macro means with bootstrap CIs, paired-bootstrap CIs of each method's
difference to the multi-task LoRA, the share of the base-to-oracle gap closed, the aligned-minus-control
gap (gibberish / another task's description), and calibration on held-out multiple-choice tasks.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from hypergen import paths
from hypergen.base import machine
from hypergen.errors import HypergenError

REFERENCE = ("base", "base_desc", "oracle")
GENERATORS = ("multitask", "nearest", "mix", "lego", "icm", "sg", "abmll")
ALL_METHODS = ("base", "base_desc", *GENERATORS, "oracle")
GIBBERISH = "qxv blorp zint wembly frask dool"
ANSWER_SLACK = 4  # tokens allowed past the task's longest reference answer
PROB_DIGITS = 6  # option probabilities kept in results.jsonl (for calibration); ECE/Brier move < 1e-5
CONTROLLED = ("nearest", "mix", "lego", "icm", "sg", "abmll")  # methods whose output depends on the description
PROMPTED = "+desc"  # suffix: METHOD+desc = METHOD's adapter with the description in the prompt as well


def parse_method(key: str) -> tuple[str, bool]:
    """A method key -> (the method that makes the adapter, whether the description goes in the prompt).

    `base_desc` is the base with the description; `sg+desc` is sg's adapter with it (`hypergen answer
    --description`); `sg@gibberish` is a control row of sg.
    """
    name = key.split("@")[0]
    if name == "base_desc":
        return "base", True
    if name.endswith(PROMPTED):
        return name[: -len(PROMPTED)], True
    return name, False


@dataclass
class EvalConfig:
    """One evaluation run.

    suite: "bigbench" (with the committed split) or a path load_suite reads (then every task counts as
    unseen). split: heldout | seen | all. methods: keys of ALL_METHODS, or a generator's or the
    oracle's key + "+desc" (its adapter with the description in the prompt too). instances: test instances per
    task (a seeded subset when fewer than the task has). seeds: K. controls: also score each
    description-dependent generator with a gibberish and another task's description (seed 0 only).
    zoo / oracle_zoo: expert zoos (the oracle zoo holds experts trained on held-out tasks only, for the
    upper reference; never shown to a generator). tasks / limit: restrict the task list.
    max_new_tokens: greedy answers stop at the task's longest reference answer + ANSWER_SLACK tokens,
    at most this many (a reference of one word needs no 16-token answer; this cut the eval's decoding
    ~2x on the CPU and treats every method alike; the base, which rambles, gains most).
    """

    suite: str = "bigbench"
    split: Literal["heldout", "seen", "all"] = "heldout"
    methods: tuple[str, ...] = ALL_METHODS
    instances: int = 50
    seeds: int = 3
    controls: bool = True
    out: str = "docs/results"
    zoo: str | None = None
    oracle_zoo: str | None = field(default_factory=lambda: str(paths.home() / "zoo" / "oracle"))
    tasks: tuple[str, ...] | None = None
    limit: int | None = None
    base: str | None = None
    device: str = "auto"
    encoder: str = "minilm"
    max_new_tokens: int = 16
    calibration_samples: int = 4
    bootstrap: int = 2000

    def __post_init__(self):
        self.methods = tuple(self.methods)
        unknown = [m for m in self.methods if m not in ALL_METHODS and not (m.endswith(PROMPTED) and parse_method(m)[0] in (*GENERATORS, "oracle"))]
        if unknown:
            raise HypergenError(f"Unknown method(s) {unknown}; available: {', '.join(ALL_METHODS)}, and GENERATOR{PROMPTED} (its adapter with the description in the prompt).")
        if self.split not in ("heldout", "seen", "all"):
            raise HypergenError(f"--split must be heldout, seen or all; got {self.split!r}.")
        if self.instances < 1 or self.seeds < 1:
            raise HypergenError("--instances and --seeds must be >= 1.")


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
        names = [n for n in split.heldout if n in suite.names()]
    else:
        zoo_names = set(api.zoo(cfg.zoo).names())
        names = [n for n in split.zoo if n in zoo_names]
    if cfg.tasks:
        names = [suite.get(n).name for n in cfg.tasks]
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
        # seen tasks are described differently from what the generators trained on
        desc = _first_sentence(task.descriptions[-1]) if cfg.split == "seen" else task.description
        out.append(EvalTask(task, desc, test, ""))
    for i, et in enumerate(out):
        et.other_description = out[(i + 1) % len(out)].task.description if len(out) > 1 else GIBBERISH
    return out


def answer_budget(tokenizer, test: list, cap: int) -> int:
    """New tokens for a task's greedy answers: its longest reference + ANSWER_SLACK, at most cap."""
    longest = max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for i in test for t in i.targets)
    return max(1, min(cap, longest + ANSWER_SLACK))


def _subset(test: list, n: int, seed: int) -> list:
    if n >= len(test):
        return list(test)
    return random.Random(seed).sample(test, n)


def _adapter(method: str, description: str, seed: int, et: EvalTask, cfg: EvalConfig, oracles: dict):
    """LoraWeights for a method (None for the plain base)."""
    from hypergen import api

    if method == "base":
        return None
    if method == "oracle":
        z = oracles.get(et.task.name)
        return z.weights(et.task.name) if z is not None else None
    res = api.generate(description, method, seed=seed, activate=False, zoo_path=cfg.zoo, encoder_name=cfg.encoder)
    return res.weights


def run(cfg: EvalConfig, progress: bool = True) -> dict:
    """Run (or resume) the evaluation; returns the summary and writes results + report into cfg.out."""
    from tqdm.auto import tqdm

    from hypergen import api
    from hypergen.eval.scoring import score_instances
    from hypergen.zoo.store import Zoo

    tasks = plan(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "results.jsonl"
    done: dict[tuple, dict] = {}
    if rows_path.is_file():
        for line in rows_path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[(r["task"], r["method"], r["seed"])] = r
    # oracle experts: the zoo's own for seen tasks; the separate oracle zoo for held-out ones
    oracles = {}
    if any(parse_method(m)[0] == "oracle" for m in cfg.methods):
        zoos = [api.zoo(cfg.zoo)]
        if cfg.oracle_zoo and (Path(cfg.oracle_zoo) / "manifest.json").is_file():
            zoos.append(Zoo(cfg.oracle_zoo))
        for et in tasks:
            for z in zoos:
                if z.has(et.task.name):
                    oracles[et.task.name] = z
    res = api.resident(cfg.base, cfg.device)
    jobs = []
    for et in tasks:
        for seed in range(cfg.seeds):
            for m in cfg.methods:
                if parse_method(m)[0] == "oracle" and et.task.name not in oracles:
                    continue
                jobs.append((et, m, seed, et.description))
            if cfg.controls and seed == 0:
                for m in cfg.methods:
                    if m in CONTROLLED:
                        jobs.append((et, f"{m}@gibberish", 0, GIBBERISH))
                        jobs.append((et, f"{m}@other", 0, et.other_description))
    todo = [j for j in jobs if (j[0].task.name, j[1], j[2]) not in done]
    budget = {et.task.name: answer_budget(res.tokenizer, et.test, cfg.max_new_tokens) for et in tasks}
    bar = tqdm(todo, desc="eval", unit="run", disable=not progress)
    with open(rows_path, "a") as f:
        for et, m, seed, desc in bar:
            bar.set_postfix_str(f"{et.task.name[:30]} {m}")
            method, prompted = parse_method(m)
            test = _subset(et.test, cfg.instances, seed)
            first = done.get((et.task.name, m, 0))
            if seed > 0 and first is not None and cfg.instances >= len(et.test):
                row = {**first, "seed": seed, "seconds": 0.0, "repeat_of_seed": 0}
                done[(et.task.name, m, seed)] = row
                f.write(json.dumps(row) + "\n")
                f.flush()
                continue
            t = time.perf_counter()
            w = _adapter(method, desc, seed, et, cfg, oracles)
            if w is None:
                res.deactivate()
            else:
                res.activate(w, name="evaluated")
            prompt_desc = et.description if prompted else None
            s = score_instances(res, test, description=prompt_desc, max_new_tokens=budget[et.task.name], generate=True)
            row = {"task": et.task.name, "method": m, "seed": seed, **s.to_dict(), "multiple_choice": s.accuracy is not None, "max_new_tokens": budget[et.task.name], "seconds": round(time.perf_counter() - t, 2)}
            if s.accuracy is not None:
                row["option_probs"] = [[round(p, PROB_DIGITS) for p in ps] for ps in s.option_probs]  # full floats tripled the file
                row["labels"] = [next(k for k, o in enumerate(i.options) if o in i.targets) for i in test]
            done[(et.task.name, m, seed)] = row
            f.write(json.dumps(row) + "\n")
            f.flush()
    res.deactivate()
    rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
    names = {et.task.name for et in tasks}
    rows = [r for r in rows if r["task"] in names]
    calib = calibration(cfg, tasks, rows, out) if "abmll" in cfg.methods and cfg.split != "seen" else {}
    summary = summarize(rows, cfg, calib)
    summary["scoring_minutes"] = round(sum(r["seconds"] for r in rows) / 60, 1)  # repeats count 0
    summary["machine"] = machine()
    (out / "results.json").write_text(json.dumps({"config": asdict(cfg), "summary": summary, "rows": [{k: v for k, v in r.items() if k not in ("option_probs", "labels")} for r in rows]}, indent=2))
    from hypergen.eval.report import write_report

    write_report(summary, cfg, out)
    return summary


def calibration(cfg: EvalConfig, tasks: list[EvalTask], rows: list[dict], out: Path | None = None) -> dict:
    """ECE / Brier on multiple-choice tasks: ABMLL's Bayesian model average of sampled adapters against
    each deterministic generator's single adapter (seed 0 rows). The BMA's per-task probabilities are
    kept in out/calibration.jsonl, so a resumed run does not sample and score them again."""
    from hypergen import api
    from hypergen.eval.calibration import accuracy, bayesian_calibration, brier, ece, predictive_entropy

    result: dict[str, dict] = {}
    by_method: dict[str, tuple[list, list]] = {}
    for r in rows:
        if r["seed"] == 0 and "option_probs" in r and "@" not in r["method"]:
            p, y = by_method.setdefault(r["method"], ([], []))
            p += r["option_probs"]
            y += r["labels"]
    for m, (p, y) in by_method.items():
        result[m] = {"ece": ece(p, y), "brier": brier(p, y), "accuracy": accuracy(p, y), "entropy": predictive_entropy(p), "n": len(y)}
    mc = [et for et in tasks if et.task.is_multiple_choice]
    if not mc:
        return result
    key = f"abmll_bma{cfg.calibration_samples}"
    cache_path = Path(out) / "calibration.jsonl" if out is not None else None
    cached = {}
    if cache_path is not None and cache_path.is_file():
        for line in cache_path.read_text().splitlines():
            c = json.loads(line)
            cached[(c["task"], c["samples"], c["instances"])] = c
    p, y, mi = [], [], []
    gen = enc = res = None
    for et in mc:
        test = _subset(et.test, cfg.instances, 0)
        c = cached.get((et.task.name, cfg.calibration_samples, len(test)))
        if c is None:
            if gen is None:
                try:
                    gen = api.get_generator("abmll", cfg.zoo, cfg.encoder)
                except HypergenError as e:
                    return {**result, key: {"skipped": str(e)}}
                res, enc = api.resident(cfg.base, cfg.device), api.encoder(cfg.encoder)
            rep = bayesian_calibration(res, gen, enc.encode([et.description])[0], test, samples=cfg.calibration_samples, seed=0)
            c = {"task": et.task.name, "samples": cfg.calibration_samples, "instances": len(test), "probs": rep.probs, "labels": rep.labels, "mutual_information": rep.mutual_information}
            if cache_path is not None:
                with open(cache_path, "a") as f:
                    f.write(json.dumps(c) + "\n")
        p += c["probs"]
        y += c["labels"]
        mi.append(c["mutual_information"])
    result[key] = {"ece": ece(p, y), "brier": brier(p, y), "accuracy": accuracy(p, y), "entropy": predictive_entropy(p), "mutual_information": sum(mi) / len(mi), "n": len(y)}
    return result


def _bootstrap(values: list[float], n: int, seed: int = 0) -> tuple[float, float]:
    if not values:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(values) for _ in values) / len(values) for _ in range(n))
    return (means[int(0.025 * n)], means[int(0.975 * n) - 1])


def summarize(rows: list[dict], cfg: EvalConfig, calib: dict | None = None) -> dict:
    """Per-method macro means over tasks (each task's mean over seeds) with CIs, differences to the
    multi-task LoRA (paired bootstrap over tasks), oracle-gap closed and control gaps."""
    per: dict[str, dict[str, dict[str, list[float]]]] = {}  # method -> task -> metric -> values over seeds
    for r in rows:
        for metric in ("rougeL", "exact_match", "accuracy", "main"):
            if r.get(metric) is not None:
                per.setdefault(r["method"], {}).setdefault(r["task"], {}).setdefault(metric, []).append(r[metric])

    def task_means(method: str, metric: str) -> dict[str, float]:
        return {t: sum(v[metric]) / len(v[metric]) for t, v in per.get(method, {}).items() if metric in v}

    methods = {}
    def order(k: str):  # references and generators in ALL_METHODS order, each +desc variant after its method, controls last
        name = k.split("@")[0].removesuffix(PROMPTED)
        return (k.count("@"), ALL_METHODS.index(name) if name in ALL_METHODS else 99, PROMPTED in k, k)

    for m in sorted(per, key=order):
        entry = {"tasks": len(per[m])}
        for metric in ("rougeL", "exact_match", "accuracy", "main"):
            tm = task_means(m, metric)
            if tm:
                vals = list(tm.values())
                entry[metric] = sum(vals) / len(vals)
                if metric in ("rougeL", "main"):
                    entry["ci95" if metric == "rougeL" else "main_ci95"] = list(_bootstrap(vals, cfg.bootstrap))
        methods[m] = entry
    ref = "multitask"
    for m, entry in methods.items():
        for metric in ("rougeL", "main"):
            a, b = task_means(m, metric), task_means(ref, metric)
            common = sorted(set(a) & set(b))
            if m != ref and common:
                diffs = [a[t] - b[t] for t in common]
                entry[f"{metric}_vs_multitask"] = sum(diffs) / len(diffs)
                entry[f"{metric}_vs_multitask_ci95"] = list(_bootstrap(diffs, cfg.bootstrap))
    if "oracle" in methods and "base" in methods:
        for m, entry in methods.items():
            for metric in ("rougeL", "main"):
                o, b, x = task_means("oracle", metric), task_means("base", metric), task_means(m, metric)
                common = sorted(set(o) & set(b) & set(x))
                if common:
                    gap = sum(o[t] - b[t] for t in common)
                    if abs(gap) > 1e-9:
                        entry[f"{metric}_oracle_gap_closed"] = sum(x[t] - b[t] for t in common) / gap
    controls = {}
    for m in methods:
        if "@" in m:
            continue
        for kind in ("gibberish", "other"):
            c = f"{m}@{kind}"
            if c in methods:
                a, b = task_means(m, "main"), task_means(c, "main")
                common = sorted(set(a) & set(b))
                controls.setdefault(m, {})[f"aligned_minus_{kind}"] = sum(a[t] - b[t] for t in common) / len(common)
                a, b = task_means(m, "rougeL"), task_means(c, "rougeL")
                common = sorted(set(a) & set(b))
                if common:
                    controls[m][f"rougeL_aligned_minus_{kind}"] = sum(a[t] - b[t] for t in common) / len(common)
    summary = {"split": cfg.split, "suite": cfg.suite, "tasks": len({r["task"] for r in rows}), "seeds": cfg.seeds, "instances": cfg.instances, "methods": methods, "controls": controls, "calibration": calib or {}}
    summary["bar"] = bar(summary)
    return summary


FAMILIES = ("icm", "sg", "abmll")  # the generative families; multitask, nearest, mix and lego are baselines


def bar(summary: dict) -> dict:
    """The issue's targets for the best generative family (by the main metric): >= 2 ROUGE-L points
    above the multi-task LoRA, at least the nearest expert, >= half the base-to-oracle gap closed, and
    its gibberish control >= 3 points lower; on seen tasks, >= 95% of the oracle's main score. Also names the best selectable method overall and the
    default: the best among those whose output depends on the description."""
    ms = summary["methods"]
    fams = [m for m in FAMILIES if ms.get(m, {}).get("main") is not None]
    anyone = [m for m in GENERATORS if ms.get(m, {}).get("main") is not None]
    if not fams:
        return {}
    best = max(fams, key=lambda m: ms[m]["main"])
    e, c = ms[best], summary["controls"].get(best, {})
    checks = []

    def check(name, value, target):
        checks.append({"check": name, "value": value, "target": target, "met": None if value is None else value >= target})

    check("ROUGE-L minus multitask", e.get("rougeL_vs_multitask"), 0.02)
    check("main minus multitask", e.get("main_vs_multitask"), 0.02)
    near = ms.get("nearest", {})
    check("main minus nearest", e["main"] - near["main"] if near.get("main") is not None else None, 0.0)
    check("ROUGE-L minus nearest", e["rougeL"] - near["rougeL"] if near.get("rougeL") is not None and e.get("rougeL") is not None else None, 0.0)
    check("oracle gap closed (main)", e.get("main_oracle_gap_closed"), 0.5)
    check("main minus gibberish control", c.get("aligned_minus_gibberish"), 0.03)
    check("ROUGE-L minus gibberish control", c.get("rougeL_aligned_minus_gibberish"), 0.03)
    o = ms.get("oracle", {})
    if summary["split"] == "seen" and o.get("main"):  # seen tasks: the zoo's own expert is the oracle
        check("share of the oracle's main score (seen tasks)", e["main"] / o["main"], 0.95)
    # the default generator: the best by the main metric among the methods that use the description
    # (their answers with it beat those with a gibberish description by >= 3 ROUGE-L points);
    # a description-blind adapter, however good on average, is not what "describe your task" promises
    uses = [m for m in anyone if summary["controls"].get(m, {}).get("rougeL_aligned_minus_gibberish", -1) >= 0.03]
    top = max(anyone, key=lambda m: ms[m]["main"])
    default = max(uses, key=lambda m: ms[m]["main"]) if uses else top
    if not summary["controls"]:  # without controls nothing shows which methods use the description
        default = None
    return {"best_family": best, "best_method": top, "default": default, "uses_description": uses, "checks": checks}
