"""docs/zoo.md from a zoo's records: every expert's base vs expert score and a summary line."""

from __future__ import annotations

import statistics
from pathlib import Path

from hypergen.zoo.store import ExpertRecord, Zoo


def why_not(r: ExpertRecord) -> str:
    """A first guess at why an expert does not beat the base, from its own record."""
    base, exp, n = r.base_score["main"], r.expert_score["main"], r.base_score.get("n", 0)
    if base >= 0.99:
        return "base already at ceiling"
    if r.metric == "accuracy" and n and abs(exp - base) <= 2 * (max(base * (1 - base), 0.05) / n) ** 0.5:
        return f"within noise (+-2 s.e. on {n} test instances)"
    if r.metric == "rougeL" and exp < 0.05:
        return f"expert never produced the target words (task too hard for this base in {r.steps} steps?)"
    if r.config.get("select", "last") == "last":
        return "expert worse than base; built before validation early stopping (select=last), so it likely overfit its train set"
    return "expert worse than base even at its best validation checkpoint: the train/test distributions may differ"


def _shown(path: Path) -> str:
    """A path as a reader can retype it: under the home folder as ~/..."""
    home = Path.home()
    return f"~/{path.relative_to(home)}" if path.is_relative_to(home) else str(path)


def _split(zoo: Zoo) -> str:
    """Where the test instances come from, as the build recorded it."""
    if zoo.meta.get("split"):
        return f"the split is {zoo.meta['split']}"
    if zoo.meta.get("suite") in (None, "bigbench"):  # zoos built before the suite was recorded are BIG-bench ones
        return "the split is data/splits/bigbench.json"
    return f"a seeded division of {zoo.meta['suite']}"


TITLE = "The expert zoo"
COMMAND = "hypergen zoo build --limit 60 --steps 100"  # what builds the default zoo (api.zoo_report's default)


def zoo_report(zoo: Zoo, title: str = TITLE, command: str = "", out: str | Path = "docs/zoo.md") -> str:
    recs = sorted(zoo.records(), key=lambda r: r.name)  # by name: a zoo built in resumed pieces gives the same page
    families = {r.family for r in recs}
    better = [r for r in recs if r.gain > 0]
    gains = [r.gain for r in recs]
    lines = [
        f"# {title}",
        "",
        f"Zoo: `{_shown(zoo.root)}`. Base model: {zoo.meta.get('base_model', '?')}. LoRA: {zoo.meta.get('lora', {})}.",
        f"Scores on each task's own test instances (up to {max((r.base_score.get('n', 0) for r in recs), default=0)}; {_split(zoo)}): "
        "accuracy by log-likelihood over the options for multiple-choice tasks, ROUGE-L of the greedy answer otherwise.",
    ]
    if command:
        named = ("" if title == TITLE else f' --title "{title}"') + ("" if command == COMMAND else f' --command "{command}"')
        lines += ["", f"Rebuild: `{command}`; this page: `hypergen zoo report --zoo {_shown(zoo.root)} --out {out}{named}`."]
    if recs:
        lines += [
            "",
            f"**Summary: {len(recs)} experts from {len(families)} {'BIG-bench ' if zoo.meta.get('suite') == 'bigbench' else ''}families; {len(better)} of {len(recs)} "
            f"({100 * len(better) / len(recs):.0f}%) beat the base on their own task; median gain {statistics.median(gains):+.3f}, "
            f"mean {statistics.mean(gains):+.3f}; median training time {statistics.median(r.seconds for r in recs):.0f} s per expert.**",
        ]
    lines += [
        "",
        "Steps: steps trained, and in brackets the checkpoint kept when validation early stopping chose an earlier one.",
        "",
        "| expert | metric | base | expert | gain | steps | train s | description |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in recs:
        d = r.description.replace("|", "/").replace("\n", " ")
        kept = r.config.get("selected_step", r.steps)
        steps = f"{r.steps} ({kept})" if kept != r.steps else f"{r.steps}"
        lines.append(
            f"| {r.name} | {r.metric} | {r.base_score['main']:.3f} | {r.expert_score['main']:.3f} | {r.gain:+.3f} | {steps} | {r.seconds:.0f} | {d[:90]}{'...' if len(d) > 90 else ''} |"
        )
    losers = [r for r in recs if r.gain <= 0]
    if losers:
        lines += ["", "## Experts that do not beat the base", ""]
        lines += [f"- `{r.name}`: {r.base_score['main']:.3f} -> {r.expert_score['main']:.3f}: {why_not(r)}." for r in losers]
    mt = zoo.root / "multitask" / "expert.json"
    if mt.is_file():
        import json

        rec = json.loads(mt.read_text())
        lines += ["", f"Multi-task LoRA baseline: trained {rec['steps']} steps on {rec['n_train']} examples from {len(rec['config'].get('tasks', []))} zoo tasks ({rec['seconds']:.0f} s)."]
    return "\n".join(lines) + "\n"


def write_report(zoo: Zoo, out: str | Path, command: str = "", title: str = TITLE) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(zoo_report(zoo, title, command, out))
    return out
