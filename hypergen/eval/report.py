"""Markdown report and PNG plot of an evaluation summary."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

from hypergen.eval.methods import BASE, ORACLE, Method, all_methods, default_methods


def _fmt(x, nd=3) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _ci(c) -> str:
    return "-" if not c else f"[{c[0]:+.3f}, {c[1]:+.3f}]"


def _ci_plain(c) -> str:
    return "" if not c else f" [{c[0]:.3f}, {c[1]:.3f}]"


def _cell(text: str) -> str:
    """Text for a markdown table cell: one line, no column breaks."""
    return " ".join(str(text).split()).replace("|", "\\|") or "(empty)"


# spelled out first by command(), or not part of what a run scores
_NOT_REPEATED = ("suite", "split", "instances", "seeds", "methods", "out", "device", "batch_rows")


def command(cfg) -> str:
    """The command that reproduces the run: suite, split, instances and seeds, then every option whose value
    differs from its default (the methods spelled out unless all: the defaults depend on what is trained here)."""
    methods = tuple(getattr(cfg, "methods", ()) or default_methods())
    parts = [f"hypergen eval --suite {shlex.quote(str(cfg.suite))} --split {cfg.split} --instances {cfg.instances} --seeds {cfg.seeds}"]
    parts += [f"--methods {shlex.quote(m)}" for m in methods] if methods != all_methods() else []
    for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(cfg) else ():
        value = getattr(cfg, f.name)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if f.name in _NOT_REPEATED or value == default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else f"--no-{flag[2:]}")
        else:
            parts += [f"{flag} {shlex.quote(str(v))}" for v in (value if isinstance(value, (tuple, list)) else [value])]
    return " ".join([*parts, f"--out {shlex.quote(str(cfg.out))}"])


def headline(summary: dict) -> list[str]:
    """Family- and task-weighted means, multiple choice and generation apart, and the content metric."""
    s = summary
    lines = [
        "## Headline: each family counts once",
        "",
        f"{s['tasks']} tasks in {s['families']} families: {s['mc_tasks']} multiple-choice tasks in {s['mc_families']} families, "
        f"{s['gen_tasks']} generation tasks in {s['gen_families']} families (a family is a BIG-bench top-level task, the name "
        "before \"/\"; in a suite without families, the task itself). **family** = the mean over families of each family's "
        "mean over its tasks, with a 95% bootstrap CI over families; **tasks** = the mean over tasks. MC = accuracy by option "
        "log-likelihood on the multiple-choice tasks; **MC, prior removed** = that accuracy with each option's mean probability over "
        "the task's questions divided out (Batch Calibration, Zhou et al. 2024; on tasks whose questions share one set of options, "
        "elsewhere the plain accuracy): a method that answers \"No\" to every question scores by how its confidence moves between "
        "questions, not by its bias; generation = ROUGE-L of the greedy answer on the others. "
        "**NLL** = the teacher-forced negative log-likelihood per token of the reference answer (its first target, and the "
        "end-of-turn token) after the prompt, with the method's adapter and prompt, in nats: **lower is better**; no answer "
        "format hides it. **Oracle gap closed** = (method - base) / (oracle - base), on the tasks with an oracle expert; "
        "in NLL it is the share of the base-to-oracle fall in nats.",
        "",
        "| method | main: family [95% CI] | main: tasks | MC accuracy: family [95% CI] | MC: tasks | MC, prior removed: family [95% CI] | MC, prior removed: tasks "
        "| generation ROUGE-L: family [95% CI] | generation: tasks | NLL: family [95% CI] (lower is better) | NLL: tasks | oracle gap closed (main): family | tasks | oracle gap closed (NLL): family |",
        "|---|---|---:|---|---:|---|---:|---|---:|---|---:|---:|---:|---:|",
    ]
    for m, e in s["methods"].items():
        if Method.parse(m).control:
            continue
        cells = []
        for name in ("main", "mc_accuracy", "mc_accuracy_bc", "gen_rougeL", "nll"):
            cells += [_fmt(e.get(f"{name}_family")) + _ci_plain(e.get(f"{name}_family_ci95")), _fmt(e.get(name))]
        cells += [_fmt(e.get(k), 2) for k in ("main_family_oracle_gap_closed", "main_oracle_gap_closed", "nll_family_oracle_gap_closed")]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def long_budget(summary: dict) -> list[str]:
    ms = {m: e for m, e in summary["methods"].items() if "rougeL_long" in e}
    if not ms:
        return []
    n = summary.get("long_budget")
    lines = ["", f"## ROUGE-L at a {n}-token budget (seed 0, generation tasks)", "",
             f"The generation tasks' instances answered with up to {n} new tokens, whatever the reference's length, against the "
             "default budget (the task's longest reference + 4 tokens): what the short budget cuts off. The difference is paired by task, on seed 0.", "",
             f"| method | ROUGE-L @{n}: tasks | ROUGE-L @{n}: family | @{n} minus the short budget (tasks) |", "|---|---:|---:|---:|"]
    for m, e in ms.items():
        d = e.get("rougeL_long_minus_short")
        lines.append(f"| {m} | {_fmt(e['rougeL_long'])} | {_fmt(e.get('rougeL_long_family'))} | {'-' if d is None else f'{d:+.3f}'} |")
    return lines


def example_answers(examples: list[dict] | None) -> list[str]:
    if not examples:
        return []
    methods = list(dict.fromkeys(m for x in examples for m in x["answers"]))
    lines = ["", "## Example answers (seed 0)", "",
             "The first instances of each family (in turn from its tasks): the greedy answer, or on multiple-choice tasks the "
             "option of highest log-likelihood. Every answer is in results.jsonl (`answers` / `chosen`)."]
    family = None
    for x in examples:
        if x["family"] != family:
            family = x["family"]
            lines += ["", f"### {family}", "", "| task | input | reference | " + " | ".join(methods) + " |", "|---" * (3 + len(methods)) + "|"]
        lines.append(f"| {_cell(x['task'])} | {_cell(x['input'])} | {_cell(x['reference'])} | " + " | ".join(_cell(x["answers"].get(m, "-")) for m in methods) + " |")
    return lines


def report_markdown(summary: dict, cfg, examples: list[dict] | None = None) -> str:
    lines = [
        f"# Evaluation: {summary['split']} tasks of {summary['suite']}",
        "",
        f"{summary['tasks']} tasks, {summary['seeds']} seed(s), up to {summary['instances']} test instances per task. "
        "ROUGE-L and exact match of greedy answers on every task; accuracy by option log-likelihood on multiple-choice "
        "tasks; `main` = accuracy for multiple choice, ROUGE-L otherwise. Macro means over tasks (each task averaged over "
        "seeds); CIs are 95% bootstrap over tasks; differences to the multi-task LoRA are paired by task."
        + (f" A multiple-choice question with more than {cfg.max_options} options is scored among its correct option(s) and seeded "
           "distractors, that many in all (--max-options)." if getattr(cfg, "max_options", 0) else ""),
        "",
        f"Machine: {summary.get('machine', '-')}; scoring time summed over runs: {summary.get('scoring_minutes', '-')} min "
        "(the ABMLL calibration samples and model loading come on top).",
        "",
        f"Command: `{command(cfg)}`",
    ]
    rec = summary.get("recorded_oracle") or {}
    if rec.get("rows"):
        lines += ["", f"The oracle's {rec['rows']} rows of {rec['tasks']} tasks are an earlier run's, taken from results.jsonl (--recorded-oracle): "
                  "their experts are not here, so the experts' files were not hashed again; every other setting of those rows matches this run."]
    if rec.get("no_long"):
        lines += ["", f"The oracle has no ROUGE-L at the {summary.get('long_budget')}-token budget on {len(rec['no_long'])} tasks: no earlier run recorded "
                  "those rows and their experts are not here (`hypergen zoo build --oracle` builds them)."]
    stale = summary.get("stale") or {}
    if stale.get("rows"):
        held = "held" if stale.get("pruned") else "also holds"
        gone = "removed from it (--prune)" if stale.get("pruned") else "not used here (--prune removes them)"
        lines += ["", f"results.jsonl {held} {stale['rows']} rows of these tasks, methods and seeds made with other settings "
                  f"(changed: {', '.join(stale['changed'])}); they are {gone}."]
    if "families" in summary:
        lines += [""] + headline(summary)
    lines += [
        "",
        "## Every metric, over tasks",
        "",
        "| method | tasks | ROUGE-L | ROUGE-L 95% CI | ROUGE-L - multitask [95% CI] | EM | accuracy (MC) | main | main - multitask [95% CI] | oracle gap closed (main) | NLL (lower is better) |",
        "|---|---:|---:|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for m, e in summary["methods"].items():
        if Method.parse(m).control:
            continue
        diff = f"{e['main_vs_multitask']:+.3f} {_ci(e.get('main_vs_multitask_ci95'))}" if "main_vs_multitask" in e else "-"
        rdiff = f"{e['rougeL_vs_multitask']:+.3f} {_ci(e.get('rougeL_vs_multitask_ci95'))}" if "rougeL_vs_multitask" in e else "-"
        lines.append(
            f"| {m} | {e['tasks']} | {_fmt(e.get('rougeL'))} | {_ci(e.get('ci95'))} | {rdiff} | {_fmt(e.get('exact_match'))} | "
            f"{_fmt(e.get('accuracy'))} | {_fmt(e.get('main'))} | {diff} | {_fmt(e.get('main_oracle_gap_closed'), 2)} | {_fmt(e.get('nll'))} |"
        )
    lines += long_budget(summary)
    o = summary["methods"].get("oracle")
    if o and o["tasks"] < summary["tasks"]:
        lines += ["", f"The oracle (an expert trained on the task itself) exists for {o['tasks']} of the {summary['tasks']} tasks; "
                  "`oracle gap closed` is measured on those tasks only."]
    if summary.get("controls"):
        lines += ["", "## Controls (aligned description minus control)", "",
                  "The same questions with the method's own description and with the control's; **family** = each family counts once, with "
                  "a paired 95% bootstrap CI over families; NLL: negative = the own description's adapter makes the reference answer likelier.", "",
                  "| method | main: minus gibberish, family [95% CI] | main: minus another task's, family [95% CI] | main: tasks (gibberish / other) "
                  "| NLL: family (gibberish / other) | ROUGE-L: tasks (gibberish / other) | MC, prior removed: family (gibberish / other) |", "|---|---|---|---:|---:|---:|---:|"]
        for m, c in summary["controls"].items():
            cells = [_fmt(c.get(f"aligned_minus_{k}_family")) + _ci_plain(c.get(f"aligned_minus_{k}_family_ci95")) for k in ("gibberish", "other")]
            cells += [" / ".join(_fmt(c.get(f"{p}aligned_minus_{k}{f}")) for k in ("gibberish", "other"))
                      for p, f in (("", ""), ("nll_", "_family"), ("rougeL_", ""), ("accuracy_bc_", "_family"))]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    if summary.get("calibration"):
        lines += ["", "## Calibration on multiple-choice tasks (seed 0)", "",
                  "abmll_bmaS = the average of S sampled ABMLL adapters' option probabilities (Bayesian model average); "
                  "mutual information = the part of its predictive entropy from disagreement between samples.", "",
                  "| method | ECE | Brier | accuracy | entropy (nats) | mutual information | instances |", "|---|---:|---:|---:|---:|---:|---:|"]
        for m, c in summary["calibration"].items():
            if "skipped" in c:
                lines.append(f"| {m} | skipped: {c['skipped']} | | | | | |")
            else:
                lines.append(f"| {m} | {_fmt(c['ece'])} | {_fmt(c['brier'])} | {_fmt(c.get('accuracy'))} | {_fmt(c.get('entropy'))} | {_fmt(c.get('mutual_information'), 4)} | {c['n']} |")
    b = summary.get("bar")
    if b:
        # only the held-out split picks the shipped default; another split's rule says what it would pick
        pick = "the default generator and mode" if summary["split"] == "heldout" else "this split's pick (the shipped default is picked on the held-out split)"
        judged = pick if b["best_family"] == b.get("default") else "the best learned family and mode by the main metric"
        if not b.get("default"):
            picked = "are not known from this run: it scored no controls, so it picks no default generator."
        elif b.get("uses_description"):
            picked = (f"(own minus gibberish description >= 0.03 main, family-weighted): {', '.join(b['uses_description'])}; the best of them, "
                      f"{pick}: **{b['default']}**.")
        else:
            picked = ("(own minus gibberish description >= 0.03 main, family-weighted): none, so the main scores differ by noise and the content "
                      f"metric picks {pick}: the lowest family-weighted NLL among the families that take the description, **{b['default']}**.")
        lines += ["", f"## The bar (issue 17), family-weighted, for {judged}: {b['best_family']}", "",
                  f"Best selectable method by the main metric: **{b['best_method']}**. Generators (alone or +desc) that use the description " + picked, "",
                  "| check | value | target | met |", "|---|---:|---:|---|"]
        for c in b["checks"]:
            met = "-" if c["met"] is None else ("yes" if c["met"] else f"no (short by {c['target'] - c['value']:.3f})")
            lines.append(f"| {c['check']} | {_fmt(c['value'])} | >= {c['target']:.2f} | {met} |")
    lines += example_answers(examples)
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = [(m, e) for m, e in summary["methods"].items() if not Method.parse(m).control and e.get("main") is not None]
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(ms)), 3.2), dpi=120)
    xs = range(len(ms))
    vals = [e["main"] for _, e in ms]
    err = [[v - e["main_ci95"][0] for v, (_, e) in zip(vals, ms)], [e["main_ci95"][1] - v for v, (_, e) in zip(vals, ms)]] if all("main_ci95" in e for _, e in ms) else None
    ax.bar(xs, vals, yerr=err, capsize=3, color=["#999" if Method.parse(m).name in (BASE, ORACLE) else "#3b7dd8" for m, _ in ms])
    ax.set_xticks(list(xs), [m for m, _ in ms], rotation=30, ha="right")
    ax.set_ylabel("main metric (macro)")
    ax.set_title(f"{summary['split']} tasks ({summary['tasks']})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(summary: dict, cfg, out: Path, examples: list[dict] | None = None) -> None:
    out = Path(out)
    (out / "report.md").write_text(report_markdown(summary, cfg, examples))
    plot(summary, out / "methods.png")
