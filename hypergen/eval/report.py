"""Markdown report and PNG plot of an evaluation summary."""

from __future__ import annotations

from pathlib import Path


def _fmt(x, nd=3) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _ci(c) -> str:
    return "-" if not c else f"[{c[0]:+.3f}, {c[1]:+.3f}]"


def report_markdown(summary: dict, cfg) -> str:
    lines = [
        f"# Evaluation: {summary['split']} tasks of {summary['suite']}",
        "",
        f"{summary['tasks']} tasks, {summary['seeds']} seed(s), up to {summary['instances']} test instances per task. "
        "ROUGE-L and exact match of greedy answers on every task; accuracy by option log-likelihood on multiple-choice "
        "tasks; `main` = accuracy for multiple choice, ROUGE-L otherwise. Macro means over tasks (each task averaged over "
        "seeds); CIs are 95% bootstrap over tasks; differences to the multi-task LoRA are paired by task.",
        "",
        f"Machine: {summary.get('machine', '-')}; scoring time summed over runs: {summary.get('scoring_minutes', '-')} min "
        "(the ABMLL calibration samples and model loading come on top).",
        "",
        f"Command: `hypergen eval --suite {cfg.suite} --split {cfg.split} --instances {cfg.instances} --seeds {cfg.seeds}"
        + (f" --limit {cfg.limit}" if getattr(cfg, "limit", None) else "") + ("" if getattr(cfg, "controls", True) else " --no-controls")
        + f" --out {cfg.out}`",
        "",
        "| method | tasks | ROUGE-L | ROUGE-L 95% CI | ROUGE-L - multitask [95% CI] | EM | accuracy (MC) | main | main - multitask [95% CI] | oracle gap closed (main) |",
        "|---|---:|---:|---|---|---:|---:|---:|---|---:|",
    ]
    for m, e in summary["methods"].items():
        if "@" in m:
            continue
        diff = f"{e['main_vs_multitask']:+.3f} {_ci(e.get('main_vs_multitask_ci95'))}" if "main_vs_multitask" in e else "-"
        rdiff = f"{e['rougeL_vs_multitask']:+.3f} {_ci(e.get('rougeL_vs_multitask_ci95'))}" if "rougeL_vs_multitask" in e else "-"
        lines.append(
            f"| {m} | {e['tasks']} | {_fmt(e.get('rougeL'))} | {_ci(e.get('ci95'))} | {rdiff} | {_fmt(e.get('exact_match'))} | "
            f"{_fmt(e.get('accuracy'))} | {_fmt(e.get('main'))} | {diff} | {_fmt(e.get('main_oracle_gap_closed'), 2)} |"
        )
    o = summary["methods"].get("oracle")
    if o and o["tasks"] < summary["tasks"]:
        lines += ["", f"The oracle (an expert trained on the task itself) exists for {o['tasks']} of the {summary['tasks']} tasks; "
                  "`oracle gap closed` is measured on those tasks only."]
    if summary.get("controls"):
        lines += ["", "## Controls (aligned description minus control)", "", "| method | main: minus gibberish | main: minus another task's | ROUGE-L: minus gibberish | ROUGE-L: minus another task's |", "|---|---:|---:|---:|---:|"]
        for m, c in summary["controls"].items():
            lines.append(f"| {m} | {_fmt(c.get('aligned_minus_gibberish'))} | {_fmt(c.get('aligned_minus_other'))} | {_fmt(c.get('rougeL_aligned_minus_gibberish'))} | {_fmt(c.get('rougeL_aligned_minus_other'))} |")
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
        lines += ["", f"## The bar (issue 6), for the best generative family by the main metric: {b['best_family']}", "",
                  f"Best selectable method by the main metric: **{b['best_method']}**. Methods that use the description "
                  + (f"(aligned minus gibberish >= 0.03 ROUGE-L): {', '.join(b.get('uses_description', [])) or 'none'}; the best of them, "
                     f"the default generator: **{b['default']}**." if b.get("default") else
                     "are not known from this run: it scored no controls, so it picks no default generator."), "",
                  "| check | value | target | met |", "|---|---:|---:|---|"]
        for c in b["checks"]:
            met = "-" if c["met"] is None else ("yes" if c["met"] else f"no (short by {c['target'] - c['value']:.3f})")
            lines.append(f"| {c['check']} | {_fmt(c['value'])} | >= {c['target']:.2f} | {met} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = [(m, e) for m, e in summary["methods"].items() if "@" not in m and e.get("main") is not None]
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(ms)), 3.2), dpi=120)
    xs = range(len(ms))
    vals = [e["main"] for _, e in ms]
    err = [[v - e["main_ci95"][0] for v, (_, e) in zip(vals, ms)], [e["main_ci95"][1] - v for v, (_, e) in zip(vals, ms)]] if all("main_ci95" in e for _, e in ms) else None
    ax.bar(xs, vals, yerr=err, capsize=3, color=["#999" if m in ("base", "base_desc", "oracle") else "#3b7dd8" for m, _ in ms])
    ax.set_xticks(list(xs), [m for m, _ in ms], rotation=30, ha="right")
    ax.set_ylabel("main metric (macro)")
    ax.set_title(f"{summary['split']} tasks ({summary['tasks']})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(summary: dict, cfg, out: Path) -> None:
    out = Path(out)
    (out / "report.md").write_text(report_markdown(summary, cfg))
    plot(summary, out / "methods.png")
