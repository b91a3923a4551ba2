"""Statistics of an evaluation: means over tasks and over families, bootstrap CIs, differences to the
multi-task LoRA, the share of the base-to-oracle gap closed, control gaps, and the bar's checks.

Pure functions of the rows (dicts as in results.jsonl) and the summary; nothing here loads a model.
"""

from __future__ import annotations

import random

from hypergen.eval.methods import BASE_PROMPTED, FAIR, PROMPTED, Method

YARDSTICK = "multitask"  # every method's difference is paired against the multi-task LoRA (`*_vs_multitask`)


def family(task: str) -> str:
    """A task's family: its BIG-bench top-level task (hypergen.tasks.Task.family); in a suite without
    families, the task itself."""
    return task.split("/", 1)[0]


def bootstrap(values: list[float], n: int, seed: int = 0) -> tuple[float, float]:
    """95% percentile CI of the mean by resampling `values` n times (seeded)."""
    if not values:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(values) for _ in values) / len(values) for _ in range(n))
    return (means[int(0.025 * n)], means[int(0.975 * n) - 1])


METRICS = ("rougeL", "exact_match", "accuracy", "main", "nll", "accuracy_bc")
MIN_GAP = 0.01  # the oracle's least mean lead over the base (per task or family) for an "oracle gap closed" share
# the headline means: (name, metric, tasks) -- multiple choice and generation apart, since accuracy
# and ROUGE-L are not on one scale, and the content metric on every task
# (accuracy_bc: multiple-choice accuracy with each option's prior over the task's questions divided out,
# hypergen.eval.calibration.batch_calibrated_accuracy: what is left when a method's bias to one option is removed)
HEADLINE = (("main", "main", "all"), ("mc_accuracy", "accuracy", "mc"), ("mc_accuracy_bc", "accuracy_bc", "mc"), ("gen_rougeL", "rougeL", "gen"), ("nll", "nll", "all"))


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def family_means(task_values: dict[str, float]) -> dict[str, float]:
    """family -> the mean over its tasks: 11 subtasks of one family must not outweigh 16 other families."""
    by: dict[str, list[float]] = {}
    for t, v in task_values.items():
        by.setdefault(family(t), []).append(v)
    return {f: _mean(v) for f, v in by.items()}


def summarize(rows: list[dict], cfg, calib: dict | None = None) -> dict:
    """Per-method means over tasks (each task's mean over seeds) with CIs over tasks, and over families
    (each family's mean over its tasks) with CIs over families, multiple choice and generation apart;
    differences to the multi-task LoRA (paired bootstrap over tasks), oracle-gap closed, control gaps,
    and the long-budget ROUGE-L when it was scored. cfg: the EvalConfig (split, suite, seeds, instances, bootstrap)."""
    long = [r for r in rows if r.get("long")]
    rows = [r for r in rows if not r.get("long")]
    parts = {"all": {r["task"] for r in rows}, "mc": {r["task"] for r in rows if r.get("multiple_choice")}}
    parts["gen"] = parts["all"] - parts["mc"]
    per: dict[str, dict[str, dict[str, list[float]]]] = {}  # method -> task -> metric -> values over seeds
    for r in rows:
        for metric in METRICS:
            if r.get(metric) is not None:
                per.setdefault(r["method"], {}).setdefault(r["task"], {}).setdefault(metric, []).append(r[metric])
    seed0: dict[str, dict[str, dict[str, float]]] = {}  # method -> metric -> task -> seed 0's value (what controls pair)
    for r in rows:
        if r["seed"] == 0:
            for metric in METRICS:
                if r.get(metric) is not None:
                    seed0.setdefault(r["method"], {}).setdefault(metric, {})[r["task"]] = r[metric]

    def task_means(method: str, metric: str) -> dict[str, float]:
        return {t: sum(v[metric]) / len(v[metric]) for t, v in per.get(method, {}).items() if metric in v}

    def seed0_scores(method: str, metric: str) -> dict[str, float]:  # the instances the controls are scored on
        return seed0.get(method, {}).get(metric, {})

    methods = {}
    for m in sorted(per, key=lambda k: Method.parse(k).sort_key()):
        entry = {"tasks": len(per[m])}
        for metric in METRICS:
            tm = task_means(m, metric)
            if tm:
                vals = list(tm.values())
                entry[metric] = sum(vals) / len(vals)
                if metric in ("rougeL", "main"):
                    entry["ci95" if metric == "rougeL" else "main_ci95"] = list(bootstrap(vals, cfg.bootstrap))
        for name, metric, part in HEADLINE:
            tm = {t: v for t, v in task_means(m, metric).items() if t in parts[part]}
            if tm:
                entry[name] = _mean(tm.values())  # task-weighted
                fm = list(family_means(tm).values())
                entry[f"{name}_family"] = _mean(fm)
                entry[f"{name}_family_ci95"] = list(bootstrap(fm, cfg.bootstrap))
        methods[m] = entry
    short = {(r["task"], r["method"]): r["rougeL"] for r in rows if r["seed"] == 0 and r.get("rougeL") is not None}
    for m, entry in methods.items():
        tm = {r["task"]: r["rougeL"] for r in long if r["method"] == m}
        if tm:
            entry["rougeL_long"] = _mean(tm.values())
            entry["rougeL_long_family"] = _mean(family_means(tm).values())
            common = [t for t in tm if (t, m) in short]
            if common:  # paired with the short budget's seed-0 answers to the same instances
                entry["rougeL_long_minus_short"] = _mean(tm[t] - short[(t, m)] for t in common)
    ref = YARDSTICK
    for m, entry in methods.items():
        for metric in ("rougeL", "main"):
            a, b = task_means(m, metric), task_means(ref, metric)
            common = sorted(set(a) & set(b))
            if m != ref and common:
                diffs = [a[t] - b[t] for t in common]
                entry[f"{metric}_vs_multitask"] = sum(diffs) / len(diffs)
                entry[f"{metric}_vs_multitask_ci95"] = list(bootstrap(diffs, cfg.bootstrap))
    if "oracle" in methods and "base" in methods:
        for m, entry in methods.items():
            for metric in ("rougeL", "main", "nll"):  # NLL falls from base to oracle: the ratio reads the same way
                o, b, x = task_means("oracle", metric), task_means("base", metric), task_means(m, metric)
                common = sorted(set(o) & set(b) & set(x))
                want = -1 if metric == "nll" else 1  # the oracle must beat the base, by MIN_GAP a task or family
                if common:
                    gap = sum(o[t] - b[t] for t in common)
                    if want * gap >= MIN_GAP * len(common):  # else the share is meaningless (or flips sign)
                        entry[f"{metric}_oracle_gap_closed"] = sum(x[t] - b[t] for t in common) / gap
                    if metric != "rougeL":  # the same share with each family counting once
                        fo = family_means({t: o[t] - b[t] for t in common})
                        fx = family_means({t: x[t] - b[t] for t in common})
                        if want * sum(fo.values()) >= MIN_GAP * len(fo):
                            entry[f"{metric}_family_oracle_gap_closed"] = sum(fx.values()) / sum(fo.values())
    controls = {}
    for m in methods:
        if Method.parse(m).control:
            continue
        for c in Method.parse(m).controls():
            kind, c = c.control, str(c)
            if c in methods:
                # the same questions under each description: controls are scored on seed 0 only
                paired = {metric: {t: a[t] - b[t] for t in sorted(set(a) & set(b))}
                          for metric in ("main", "nll", "rougeL", "accuracy_bc") for a, b in [(seed0_scores(m, metric), seed0_scores(c, metric))]}
                diffs, fam = paired["main"], family_means(paired["main"])
                controls.setdefault(m, {})[f"aligned_minus_{kind}"] = _mean(diffs.values())
                controls[m][f"aligned_minus_{kind}_family"] = _mean(fam.values())
                if fam:  # resampled over families
                    controls[m][f"aligned_minus_{kind}_family_ci95"] = list(bootstrap(list(fam.values()), cfg.bootstrap))
                if paired["nll"]:  # in content: negative = the own description's adapter gives the reference more likelihood
                    controls[m][f"nll_aligned_minus_{kind}_family"] = _mean(family_means(paired["nll"]).values())
                if paired["rougeL"]:
                    controls[m][f"rougeL_aligned_minus_{kind}"] = _mean(paired["rougeL"].values())
                if paired["accuracy_bc"]:  # multiple choice with the option bias removed
                    controls[m][f"accuracy_bc_aligned_minus_{kind}_family"] = _mean(family_means(paired["accuracy_bc"]).values())
    count = {f"{part}_{what}": len(names if what == "tasks" else {family(t) for t in names}) for part, names in parts.items() for what in ("tasks", "families")}
    summary = {"split": cfg.split, "suite": cfg.suite, "tasks": count.pop("all_tasks"), "families": count.pop("all_families"), **count,
               "seeds": cfg.seeds, "instances": cfg.instances, "rows": len(rows) + len(long), "long_budget": getattr(cfg, "long_budget", None),
               "methods": methods, "controls": controls, "calibration": calib or {}}
    summary["bar"] = bar(summary)
    return summary


def bar(summary: dict) -> dict:
    """Issue 17's targets, family-weighted, for the default generator and mode when it is a learned family
    (trainable, description-dependent; else for the best learned family and mode by the family-weighted
    main score): its own description >= 0.03 above another task's and above gibberish, >= 0.03 above the
    description in the prompt (base_desc), >= 0.02 above the fair multi-task LoRA (mtlora, in the same
    mode), >= half the base-to-oracle gap closed; on seen tasks, >= 95% of the oracle's main score.
    The default: the best (family-weighted main) among the generators and their +desc modes whose adapter
    depends on the description in answers (its own description beats gibberish by >= 0.03 main,
    family-weighted, in that mode). When none does, the main scores of the modes differ by noise (binary
    multiple choice near chance dominates them), so the content metric decides: the lowest family-weighted
    reference NLL among the modes of families that take the description at all. Also names the best
    selectable method overall by main."""
    from hypergen.generators import registered

    ms, controls = summary["methods"], summary["controls"]

    def score(m: str) -> float | None:
        e = ms.get(m, {})
        return e.get("main_family", e.get("main"))

    def nll(m: str) -> float:
        e = ms.get(m, {})
        v = e.get("nll_family", e.get("nll"))
        return float("inf") if v is None else v

    modes = [m for name in registered() for m in (name, name + PROMPTED) if score(m) is not None]
    family = {m: registered()[Method.parse(m).name] for m in modes}
    # the learned families that map a description to an adapter (mtlora learns one LoRA for all: a baseline)
    fams = [m for m in modes if family[m].trainable and family[m].uses_description]
    if not fams:
        return {}
    uses = [m for m in modes if controls.get(m, {}).get("aligned_minus_gibberish_family", controls.get(m, {}).get("aligned_minus_gibberish", -1)) >= 0.03]
    top = max(modes, key=score)
    # never a description-blind family (mtlora, multitask): not what "describe your task" promises
    takers = [m for m in modes if family[m].uses_description]
    default = max(uses, key=score) if uses else min(takers or modes, key=lambda m: (nll(m), -score(m)))
    if not controls:  # without controls nothing shows which methods use the description
        default = None
    best = default if default in fams else max(fams, key=score)
    e, c, prompted = ms[best], controls.get(best, {}), Method.parse(best).prompt_description
    checks = []

    def check(name, value, target):
        checks.append({"check": name, "value": value, "target": target, "met": None if value is None else value >= target})

    def minus(other: str) -> float | None:
        return score(best) - score(other) if score(other) is not None else None

    check("main minus other task's description", c.get("aligned_minus_other_family"), 0.03)
    check("main minus gibberish description", c.get("aligned_minus_gibberish_family"), 0.03)
    check("main minus base_desc", minus(BASE_PROMPTED), 0.03)
    fair = FAIR + (PROMPTED if prompted else "")
    check(f"main minus fair multi-task LoRA ({fair})", minus(fair), 0.02)
    check("oracle gap closed (main)", e.get("main_family_oracle_gap_closed"), 0.5)
    o = ms.get("oracle", {})
    if summary["split"] == "seen" and o.get("main"):  # seen tasks: the zoo's own expert is the oracle
        check("share of the oracle's main score (seen tasks)", e["main"] / o["main"], 0.95)
    return {"best_family": best, "best_method": top, "default": default, "uses_description": uses, "by": "main" if uses else "nll", "checks": checks}
