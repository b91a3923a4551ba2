"""Write data/descriptions/openai_evals.json: training descriptions for the OpenAI evals tasks.

The tasks come from the `evals` wheel, read in place (hypergen.tasks.openai_evals; `hypergen data fetch
openai_evals` downloads it). A task trains a generator when it has at least TRAIN_MIN_EXAMPLES zero-shot
samples, short inputs and answers (the BIG-bench split's criteria), at least TARGET descriptions, and
nothing to do with a held-out BIG-bench family: not related by name (split.near_family), and no
SHINGLE-word run of a held-out task's inputs in its inputs. The file has the same layout as
bigbench.json (hypergen.tasks.descriptions reads both); "excluded" says why each other eval is out.
Only short strings are stored; the evals data stays in the cache. Deterministic.

    python data/make_openai_evals_descriptions.py [--wheel PATH] [--out data/descriptions/openai_evals.json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # make_descriptions, beside this file

from make_descriptions import TARGET, TRAIN_MIN_EXAMPLES, _and, _answers, answer_form, dedupe, dumps, first_sentence, input_kind, pick_examples  # noqa: E402

from hypergen.errors import HypergenError  # noqa: E402
from hypergen.tasks import load_split, load_suite  # noqa: E402
from hypergen.tasks.core import Task, clean_text, join_sentences, label_sentence, norm_text  # noqa: E402
from hypergen.tasks.descriptions import VERSION, load_eval_descriptions  # noqa: E402
from hypergen.tasks.openai_evals import VERSION as EVALS_VERSION, default_path, read_samples, shared_instruction  # noqa: E402
from hypergen.tasks.split import SplitCriteria, TaskStats, near_family  # noqa: E402

SHINGLE = 8
"""Words in a run shared with a held-out input that marks an eval as built from the same data."""


def title(task: Task) -> str:
    """The eval's own name, readable: "belarusian-syllable-count" -> "Belarusian syllable count"."""
    words = re.sub(r"[-_.]+", " ", task.categories[0] if task.categories else task.name).strip()
    return words[:1].upper() + words[1:]


def describe(task: Task, own: str, instruction: str) -> list[tuple[str, str]]:
    """(source, text) candidates, most informative first (data/README.md, "OpenAI evals")."""
    name = title(task)
    gist = join_sentences(first_sentence(own or instruction))
    pairs = pick_examples(task.name, {}, task, None, k=5)  # no BIG-bench fields: no context to strip
    last = re.split(r"(?<=[.!?])\s+", instruction.strip())[-1] if instruction else ""
    labels = label_sentence(task.instances)
    out = [("reader", task.description), ("own", own), ("instruction", instruction)]
    if instruction and first_sentence(instruction) != instruction:
        out.append(("instruction_first", first_sentence(instruction)))
    if last and last != first_sentence(instruction) and len(last.split()) >= 4:
        out.append(("instruction_last", last))
    if labels:
        out.append(("labels", join_sentences(gist, labels)))
    else:
        form = answer_form(task)
        out.append(("gist_format", join_sentences(gist, f"{form[:1].upper()}{form[1:]}.")))
    if pairs:
        out.append(("example", f"{name}, e.g. {pairs[0][0]} -> {pairs[0][1]}"))
    if len(pairs) >= 3:
        (i1, o1), (i2, o2) = pairs[1:3]
        out.append(("examples", f'{gist} For example, given "{i1}" the answer is "{o1}", and given "{i2}" it is "{o2}".'))
    if len(pairs) >= 5:
        out.append(("example_more", f'{name}. Like "{pairs[3][0]}" -> "{pairs[3][1]}", or "{pairs[4][0]}" -> "{pairs[4][1]}".'))
    out.append(("format", f"{name}: given {input_kind({}, task)}, {answer_form(task)}."))
    out.append(("title", f"{name}."))
    answers = _answers(task, pairs)
    if answers:
        out.append(("answers", f"{name}. Answers look like: {answers}."))
    if own and instruction:
        out.append(("title_instruction", f"{name}: {first_sentence(instruction)}"))
    return [(s, t) for s, t in out if t]


def shingles(text: str) -> set[str]:
    words = norm_text(text).split()
    return {" ".join(words[i : i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)}


def heldout_shingles(split) -> dict[str, str]:
    """Every SHINGLE-word run of the held-out BIG-bench tasks' inputs -> its task."""
    bigbench = load_suite("bigbench")
    out = {}
    for name in split.heldout:
        for inst in bigbench.get(name).instances:
            out.update(dict.fromkeys(shingles(inst.input), name))
    return out


def build(wheel: Path, split) -> dict:
    from hypergen.tasks.openai_evals import registry

    crit = SplitCriteria(min_examples=TRAIN_MIN_EXAMPLES)  # the split's limits, a generator's minimum size
    entries = registry(wheel)
    suite = load_suite(wheel)
    held = {n.split("/", 1)[0] for n in split.heldout}
    held_runs = heldout_shingles(split)
    held_texts = {norm_text(d.text) for ds in load_eval_descriptions().values() for d in ds}  # never a training description
    tasks, short, excluded = {}, {}, {}
    for name in suite.names():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a skipped eval is listed under "excluded"
                task = suite.get(name)
        except HypergenError:
            excluded[name] = "no zero-shot samples, or nothing says what it asks"
            continue
        stats, why = TaskStats.of(task), ""
        if near_family(task.family, held) or near_family(task.family.removeprefix("oai_"), held):
            why = "related by name to a held-out BIG-bench family"
        elif stats.size < crit.min_examples:
            why = f"{stats.size} usable samples (< {crit.min_examples})"
        elif stats.median_input_words > crit.max_median_input_words or stats.median_input_chars > crit.max_median_input_chars:
            why = "long inputs (the split's median limits)"
        elif stats.median_target_words > crit.max_median_target_words:
            why = "long answers (the split's median limit)"
        else:
            hits = {held_runs[s] for i in task.instances for s in shingles(i.input) if s in held_runs}
            if hits:
                why = f"shares {SHINGLE}-word runs with held-out {_and(sorted(hits))}"
        if why:
            excluded[name] = why
            continue
        own = entries[name]["description"]
        instruction = clean_text(shared_instruction(read_samples(wheel, entries[name]["samples"])))
        ds = [d for d in dedupe(describe(task, own, instruction)) if norm_text(d["text"]) not in held_texts]
        (tasks if len(ds) >= TARGET else short)[name] = ds
    counts = {
        "evals": len(suite),
        "training_tasks": len(tasks),
        "training_families": len({n.split("/", 1)[0] for n in tasks}),
        "short": len(short),
        "excluded": len(excluded),
        "descriptions": sum(len(v) for v in tasks.values()),
    }
    return {
        "version": VERSION,
        "source": f"evals=={EVALS_VERSION} (PyPI wheel), hypergen.tasks.openai_evals",
        "criteria": {"min_examples": crit.min_examples, "descriptions": TARGET, "shingle_words": SHINGLE,
                     "max_median_input_words": crit.max_median_input_words, "max_median_input_chars": crit.max_median_input_chars,
                     "max_median_target_words": crit.max_median_target_words},
        "counts": counts,
        "excluded": dict(sorted(excluded.items())),
        "short": short,
        "tasks": tasks,
        "heldout": {},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, default=None, help="the evals wheel (default: the cache's)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "descriptions" / "openai_evals.json")
    args = parser.parse_args(argv)
    doc = build(args.wheel or default_path(), load_split())
    args.out.write_text(dumps(doc, ("excluded", "short", "tasks", "heldout")), encoding="utf-8")
    print(json.dumps(doc["counts"], indent=2))


if __name__ == "__main__":
    main()
