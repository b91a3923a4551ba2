"""Write data/descriptions/bigbench.json and templated.json from the extracted BIG-bench cache.

bigbench.json: for every BIG-bench task a generator may train on, at least 8 descriptions, each
tagged with how it was made (data/README.md lists the sources), and under "heldout" the
descriptions the held-out evaluation gives its tasks; no training description repeats one of those.
templated.json: tasks whose inputs carry the instruction in a templated sentence (tense: "... Change
tense to SIMPLE PAST:"), the variants and their counts. A training task with such an instruction trains
as one task per wording instead (hypergen.tasks.templated): `tense/change_tense_to_simple_past`, whose
inputs lose the wording and whose descriptions carry it; bigbench.json's "variants" map names each one's
parent and wording.

Training tasks: the split's zoo, plus every task that misses the split's criteria only by having
fewer than 80 examples (TRAIN_MIN_EXAMPLES here), minus held-out tasks and any task of a held-out
family or a family related to one. Only short strings are stored; BIG-bench (Apache-2.0) stays in the
cache. Deterministic: the same cache and split give the same bytes.

    python data/make_descriptions.py [--root DIR] [--split data/splits/bigbench.json] [--out data/descriptions]
"""

from __future__ import annotations

import argparse
import difflib
import json
import random
import re
import statistics
import warnings
from collections import Counter
from pathlib import Path

from hypergen.tasks.bigbench import PREFIX_FIELDS, _as_instruction, parse_task, readable_subtask, task_name
from hypergen.tasks.core import Task, clean_text, join_sentences, label_sentence, norm_text, read_json, says
from hypergen.tasks.descriptions import DEFAULT_PATH, VERSION
from hypergen.tasks.split import Split, SplitCriteria, TaskStats, load_split, near_family
from hypergen.tasks.templated import MIN_EXAMPLES as VARIANT_MIN_EXAMPLES, variant_instances, variant_name

TRAIN_MIN_EXAMPLES = 30
"""A task this small cannot train and test an expert, but it still teaches a generator (SFT)."""
TARGET = 8
"""Descriptions wanted per training task; the summary lists tasks that have fewer."""
NEAR_DUPLICATE = 0.9
"""Two descriptions whose normalised texts are this similar (difflib ratio) count as one."""
EXAMPLE_INPUT_WORDS, EXAMPLE_TARGET_WORDS, PREFIX_WORDS = 12, 8, 8
META_KEYWORDS = {"zero-shot", "one-shot", "many-shot", "json", "example task", ""}
# Templated instructions: a sentence at the start or end of most inputs, in a few variants.
TEMPLATE_COVERAGE, TEMPLATE_MAX_VARIANTS, TEMPLATE_MAX_WORDS, TEMPLATE_MIN_INPUTS = 0.8, 20, 30, 10
# An instruction asks (ends in "?", opens with a question word), orders (opens with one of these
# verbs) or frames the input ("the following", "whether"); a shared scene-setting sentence does not.
IMPERATIVES = set(
    "answer calculate change check choose classify complete compute convert correct count decide define "
    "determine evaluate explain fill find give guess identify list name pick predict replace rewrite say "
    "select simplify solve sort state summarize tell translate use write".split()
)
QUESTION_WORDS = set(
    "what which who whom whose how is are does do did was were should can could would where when why".split()
)


def read_tasks(root: Path):
    """(name, task.json content, parent's content or None, parsed Task) for every leaf task, by name."""
    files = sorted(root.rglob("task.json"))
    parents = {f.parent.parent for f in files}
    parent_data: dict[Path, dict] = {}
    for file in sorted(files, key=task_name):
        if file.parent in parents:  # a parent task: its subtasks hold the examples
            continue
        name = task_name(file)
        data = read_json(file)
        parent = None
        if "/" in name:
            pfile = file.parent.parent / "task.json"
            parent = parent_data.setdefault(pfile, read_json(pfile))
        with warnings.catch_warnings():  # a skipped task is counted in the summary instead
            warnings.simplefilter("ignore")
            task = parse_task(_bare(data), name, parent and _bare(parent)) if isinstance(data, dict) else None
        yield name, data, parent, task


def _bare(data: dict) -> dict:
    """The task without BIG-bench's example prefixes: descriptions show "abandon -> abandoned", not the
    framed prompt "Today I abandon. Yesterday I" (which would also hide what kind of input it is); the
    "prefixes" source says the framing."""
    return {k: v for k, v in data.items() if k not in PREFIX_FIELDS}


def build(root: Path, split: Split) -> tuple[dict, dict]:
    """The two documents: descriptions (training + held-out) and the templated-instruction analysis."""
    criteria = SplitCriteria(**{**split.criteria, "min_examples": TRAIN_MIN_EXAMPLES})
    heldout_families = split.heldout_families()
    zoo, heldout_names = set(split.zoo), set(split.heldout)
    train: dict[str, list[tuple[str, str]]] = {}
    heldout: dict[str, list[dict]] = {}
    heldout_texts: set[str] = set()  # every reader variant of a held-out task: none may train
    seen_eval: dict[str, str] = {}
    templated = []
    variants: dict[str, dict] = {}  # variant task -> its parent and wording
    counts = Counter()
    for name, data, parent, task in read_tasks(root):
        counts["files"] += 1
        if task is None:
            counts["skipped_by_reader"] += 1
            continue
        family = name.split("/")[0]
        if name in heldout_names:
            # hypergen.eval.protocol.plan gives a held-out task its default description (and another
            # held-out task's default as the control)
            heldout[name] = [{"source": "eval", "text": task.description}]
            heldout_texts.update(norm_text(d) for d in task.descriptions)
            templated += [dict(t, side="heldout") for t in templated_instructions(name, data)]
            continue
        if near_family(family, heldout_families):
            counts["held_out_family"] += 1
            continue
        if name not in zoo and not TaskStats.of(task).eligible(criteria):
            counts["ineligible"] += 1
            continue
        if name in zoo and split.sizes.get(name) != len(task.instances):  # its example descriptions could quote test instances
            raise SystemExit(f"{name} has {len(task.instances)} instances but the split was made with {split.sizes.get(name)}: "
                             "regenerate the split (python -m hypergen.tasks.split) before the descriptions.")
        indices = split.instances[name]["train"] if name in zoo else None
        found = templated_instructions(name, data)
        templated += [dict(t, side="train") for t in found]
        split_up = variant_tasks(name, data, parent, task, indices, found)
        if split_up:  # the wordings train as tasks of their own; the parent, instruction in its inputs, does not
            for vname, (instruction, items) in split_up.items():
                variants[vname] = {"parent": name, "instruction": instruction}
                train[vname] = items
            counts["split_into_variants"] += 1
            continue
        train[name] = describe(name, data, parent, task, indices)
        if name in zoo:
            seen_eval[name] = task.descriptions[-1]
    if not train:
        raise SystemExit(f"No BIG-bench task under {root} is usable for training: check --root and --split.")
    missing = sorted(zoo - set(train) - {v["parent"] for v in variants.values()})
    if missing:
        raise SystemExit(f"zoo tasks not found in the cache: {missing[:5]}...: is the split from this cache?")

    for name, items in train.items():
        kept = [(s, t) for s, t in items if norm_text(t) not in heldout_texts]
        counts["dropped_as_heldout_text"] += len(items) - len(kept)
        train[name] = dedupe(kept)
        # `hypergen eval --split seen` describes a zoo task by this (protocol.plan); count, not drop
        seen = norm_text(first_sentence(seen_eval.get(name, "")))
        counts["seen_eval_in_training"] += any(norm_text(d["text"]) == seen for d in train[name])
    short = {n: len(v) for n, v in train.items() if len(v) < TARGET}
    per_task = [len(v) for v in train.values()]
    summary = {
        "files": counts["files"],
        "skipped_by_reader": counts["skipped_by_reader"],
        "training_tasks": len(train),
        "training_families": len({n.split("/")[0] for n in train}),
        "zoo_tasks": len(zoo),
        "training_only_tasks": sum(n not in zoo and n not in variants for n in train),
        "training_tasks_with_target": len(train) - len(short),
        "descriptions": sum(per_task),
        "descriptions_per_task": {"min": min(per_task), "median": statistics.median(per_task), "max": max(per_task)},
        "sources": dict(sorted(Counter(d["source"] for v in train.values() for d in v).items())),
        "dropped_as_heldout_text": counts["dropped_as_heldout_text"],
        "seen_eval_in_training": counts["seen_eval_in_training"],
        "heldout_tasks": len(heldout),
        "excluded_held_out_family": counts["held_out_family"],
        "excluded_ineligible": counts["ineligible"],
        "templated_tasks": len({t["task"] for t in templated}),
        "tasks_split_into_variants": counts["split_into_variants"],
        "variant_tasks": len(variants),
    }
    doc = {
        "version": VERSION,
        "train_min_examples": TRAIN_MIN_EXAMPLES,
        "target_per_task": TARGET,
        "heldout_families": heldout_families,
        "counts": summary,
        "short": {n: [d["text"] for d in train[n]] for n in sorted(short)},
        "tasks": train,
        "heldout": heldout,
        "variants": variants,
    }
    return doc, {"version": VERSION, "criteria": _template_criteria(), "tasks": templated}


# --- descriptions of one task ---------------------------------------------------------------------


def describe(
    name: str, data: dict, parent: dict | None, task: Task, indices: list[int] | None
) -> list[tuple[str, str]]:
    """(source, text) candidates, most informative first; `dedupe` drops repeats."""
    own = clean_text(data.get("description"))
    parent_desc = clean_text((parent or {}).get("description"))
    instruction = _as_instruction(str(data.get("task_prefix") or ""), own)
    sub = readable_subtask(name)
    title = readable_title(name)
    gist = _gist(own, parent_desc, sub)
    keywords = [k for k in (str(k).strip() for k in data.get("keywords") or []) if k.lower() not in META_KEYWORDS]
    examples = pick_examples(name, data, task, indices, k=40)
    out = [("reader", task.description), ("own", own)]
    if sub:
        # what sets this subtask apart comes first, the parent's shared sentence not at all; a bare
        # code ("c001") says nothing, so it is left out
        named = "" if says(own, sub) or re.fullmatch(r"[a-z]*\d+", sub) else f"{sub[0].upper()}{sub[1:]}."
        out.append(("subtask_first", join_sentences(named, own, instruction)))
        out.append(("parent", join_sentences(parent_desc, f"Subtask: {sub}.")))
    if instruction:
        out.append(("instruction", instruction))
    if keywords:
        out.append(("keywords", f"A task about {_and(keywords[:4])}: {gist}"))
    prefixes = prefix_sentence(data)
    if prefixes:
        out.append(("prefixes", f"{gist} {prefixes}"))
    if examples:
        out.append(("example", f"{title}, e.g. {examples[0][0]} -> {examples[0][1]}"))
    if len(examples) >= 3:
        (i1, o1), (i2, o2) = examples[1:3]
        pair = f'given "{i1}" the answer is "{o1}", and given "{i2}" it is "{o2}"'
        out.append(("examples", f"{gist} For example, {pair}."))
    out.append(("format", f"{title}: given {input_kind(data, task)}, {answer_form(task)}."))
    out.append(("title", f"{title}."))
    if keywords:
        out.append(("title_keywords", f"{title} ({', '.join(keywords[:3])})."))
    answers = _answers(task, examples)
    if answers:
        # led by the title: behind a long gist the answers would be a near-duplicate of `keywords`
        out.append(("answers", f"{title}. Answers look like: {answers}."))
    return out


def dedupe(items: list[tuple[str, str]]) -> list[dict]:
    """First of each group of near-identical texts (normalised, then difflib ratio), in order."""
    kept: list[tuple[str, dict]] = []
    for source, text in items:
        text = clean_text(text)
        key = norm_text(text)
        if not key:
            continue
        if any(key == k or difflib.SequenceMatcher(None, key, k).ratio() >= NEAR_DUPLICATE for k, _ in kept):
            continue
        kept.append((key, {"source": source, "text": text}))
    return [d for _, d in kept]


def readable_title(name: str) -> str:
    """ "arithmetic/2_digit_multiplication" -> "Arithmetic: 2 digit multiplication"."""
    family = " ".join(w for w in name.split("/")[0].split("_") if w and w != "json")
    sub = readable_subtask(name)
    family = family[:1].upper() + family[1:]
    return f"{family}: {sub}" if sub else family


def _gist(own: str, parent: str, sub: str) -> str:
    """One or two sentences that say what the task is: a short subtask description gets its
    parent's first sentence in front, and its readable name when neither says it."""
    if not sub or len(own.split()) >= 20:
        return join_sentences(first_sentence(own))
    text = join_sentences(first_sentence(parent), own)
    return text if says(text, sub) else join_sentences(text, f"{sub[0].upper()}{sub[1:]}")


def first_sentence(text: str) -> str:
    """As hypergen.eval.protocol's: the first sentence when it is more than a few characters."""
    parts = re.split(r"(?<=[.!?])\s+", text.strip())
    return parts[0] if parts and len(parts[0]) > 10 else text.strip()


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _words(text: str, n: int) -> str:
    words = clean_text(text).split()
    return " ".join(words[:n]) + (" ..." if len(words) > n else "")


def prefix_sentence(data: dict) -> str:
    """ "Inputs start with 'Q:'; the answer follows 'A:'." from the task's own prefixes, else ""."""
    p_in = _words(str(data.get("example_input_prefix") or ""), PREFIX_WORDS)
    p_out = _words(str(data.get("example_output_prefix") or ""), PREFIX_WORDS)
    parts = ([f"inputs start with '{p_in}'"] if p_in else []) + ([f"the answer follows '{p_out}'"] if p_out else [])
    text = "; ".join(parts)
    return f"{text[0].upper()}{text[1:]}." if text else ""


def pick_examples(name: str, data: dict, task: Task, indices: list[int] | None, k: int = 12) -> list[tuple[str, str]]:
    """Up to k (input, answer) pairs from the training instances, short ones first, in a seeded order.

    Zoo tasks draw from their split's train part, so no test instance shows up in a description.
    Inputs lose the context BIG-bench prepends and the options we append; long texts are cut.
    """
    prefix = str(data.get("task_prefix") or "")
    context = "" if _as_instruction(prefix, clean_text(data.get("description"))) or not prefix.strip() else prefix
    pool = [task.instances[i] for i in (indices if indices is not None else range(len(task.instances)))]
    pool = random.Random(f"describe:{name}").sample(pool, min(len(pool), 200))
    pairs = []
    for inst in pool:
        text = inst.input
        if inst.options and "\nOptions: " in text:
            text = text.rsplit("\nOptions: ", 1)[0]
        text = text[len(context.strip()):] if context.strip() and text.startswith(context.strip()) else text
        text, target = clean_text(text), clean_text(inst.targets[0])
        if text and target:
            pairs.append((text, target))
    short = [p for p in pairs if len(p[0].split()) <= EXAMPLE_INPUT_WORDS and len(p[1].split()) <= EXAMPLE_TARGET_WORDS]
    chosen = short[:k] + [p for p in pairs if p not in short][: k - len(short[:k])]
    return [(_words(i, EXAMPLE_INPUT_WORDS), _words(o, EXAMPLE_TARGET_WORDS)) for i, o in chosen]


def input_kind(data: dict, task: Task) -> str:
    """What one input is, in a few words ("a question", "a list"), for the imperative template."""
    named = clean_text(data.get("example_input_prefix")).rstrip(":").strip().lower()
    if re.fullmatch(r"[a-z]+( [a-z]+)?", named) and named not in {"input", "q", "example"}:
        return f"a {named}"
    inputs = [clean_text(i.input.rsplit("\nOptions: ", 1)[0] if i.options else i.input) for i in task.instances]
    if _share(inputs, lambda s: s.startswith("[")) >= 0.8:
        return "a list"
    if _share(inputs, lambda s: s.endswith("?")) >= 0.5:
        return "a question"
    words = statistics.median(len(s.split()) for s in inputs)
    return "a word or short phrase" if words <= 3 else "a sentence" if words <= 30 else "a passage"


def answer_form(task: Task) -> str:
    """How the answer looks, in words: the label set, the options, a number, a word, ..."""
    labels = label_sentence(task.instances)
    if labels:
        return labels[0].lower() + labels[1:].rstrip(".")
    if task.is_multiple_choice:
        return "choose the right answer among the options listed after it"
    targets = [i.targets[0] for i in task.instances]
    if _share(targets, lambda s: re.fullmatch(r"-?[\d.,/]+", s.strip()) is not None) >= 0.8:
        return "answer with a number"
    if _share(targets, lambda s: s.strip().startswith("[")) >= 0.8:
        return "answer with a list"
    words = statistics.median(len(t.split()) for t in targets)
    return "answer with one word" if words <= 1 else "answer in a few words" if words <= 5 else "answer in a sentence"


def _answers(task: Task, pairs: list[tuple[str, str]]) -> str:
    """Three distinct short answers, quoted, unless the format sentence already lists the label set."""
    if label_sentence(task.instances):
        return ""
    seen = list(dict.fromkeys(o for _, o in pairs if len(o.split()) <= EXAMPLE_TARGET_WORDS))
    return ", ".join(f'"{t}"' for t in seen[:3]) if len(seen) >= 3 else ""


def _share(items: list[str], test) -> float:
    return sum(bool(test(s)) for s in items) / max(1, len(items))


# --- templated instructions -----------------------------------------------------------------------


def _template_criteria() -> dict:
    return {
        "coverage": TEMPLATE_COVERAGE,
        "max_variants": TEMPLATE_MAX_VARIANTS,
        "max_words": TEMPLATE_MAX_WORDS,
        "min_inputs": TEMPLATE_MIN_INPUTS,
    }


def templated_instructions(name: str, data: dict) -> list[dict]:
    """A leading or trailing sentence that most raw inputs share, in a few variants, each seen twice
    or more ("Change tense to SIMPLE PAST:"): the instruction sits in the input, not the description.

    Reads the task.json inputs as written (no context, no options) and splits them into lines and
    sentences; an input of one sentence has no separate instruction.
    """
    examples = [e for e in data.get("examples") or [] if isinstance(e, dict) and isinstance(e.get("input"), str)]
    inputs = [e["input"] for e in examples if e["input"].strip()]
    if len(inputs) < TEMPLATE_MIN_INPUTS:
        return []
    found = []
    for position, pick in (("leading", 0), ("trailing", -1)):
        ends = Counter()
        for text in inputs:
            parts = _segments(text)
            if len(parts) >= 2:
                ends[parts[pick]] += 1
        variants = [(t, c) for t, c in sorted(ends.items(), key=lambda tc: (-tc[1], tc[0])) if c >= 2]
        variants = [(t, c) for t, c in variants if len(t.split()) <= TEMPLATE_MAX_WORDS and not _is_label(t)]
        covered = sum(c for _, c in variants)
        instructions = sum(c for t, c in variants if _is_instruction(t))
        if (
            variants
            and len(variants) <= TEMPLATE_MAX_VARIANTS
            and covered >= TEMPLATE_COVERAGE * len(inputs)
            and instructions * 2 >= covered  # mostly instructions, not a story's shared opening
        ):
            found.append({
                "task": name,
                "position": position,
                "inputs": len(inputs),
                "covered": covered,
                "variants": [{"text": t, "count": c} for t, c in variants],
            })  # fmt: skip
    return found


def _is_label(text: str) -> bool:
    """ "Sentence 1:", "Passage A:", "The answer is:": a field name, not an instruction."""
    return text.endswith(":") and len(text.split()) <= 3


def _is_instruction(text: str) -> bool:
    words = norm_text(text).split()
    return bool(words) and (
        text.endswith("?")
        or words[0] in IMPERATIVES | QUESTION_WORDS
        or bool({"following", "whether"} & set(words))
    )


def _segments(text: str) -> list[str]:
    """Lines, then sentences (ending in . ! ? or :), whitespace collapsed."""
    parts = []
    for line in text.splitlines():
        parts += [clean_text(p) for p in re.split(r"(?<=[.!?:])\s+", line.strip()) if p.strip()]
    return parts


def variant_tasks(
    name: str, data: dict, parent: dict | None, task: Task, indices: list[int] | None, found: list[dict]
) -> dict[str, tuple[str, list]]:
    """Variant task -> (its wording, its description candidates) for the first templated position found,
    one task per wording seen in at least VARIANT_MIN_EXAMPLES inputs; {} when none qualifies.

    A variant is described like a task of its own (its examples are its inputs with the wording cut out,
    from the split's train part for a zoo task), each description led by the wording as a sentence, and
    the wording alone is one more description: what a user would type."""
    out = {}
    for v in (found[0]["variants"] if found else []):
        kept, where = variant_instances(task.instances, v["text"])
        if len(kept) < VARIANT_MIN_EXAMPLES:
            continue
        vname = variant_name(name, v["text"])
        vtask = Task(vname, task.descriptions, kept, task.categories, task.source)
        own = set(indices) if indices is not None else None
        vindices = [j for j, i in enumerate(where) if i in own] if own is not None else None
        items = describe(name, data, parent, vtask, vindices)  # the parent's title and subtask; the variant's examples
        lead = join_sentences(v["text"])
        extra = []
        pairs = pick_examples(name, data, vtask, vindices, k=40)
        if len(pairs) >= 4:  # the wording with one more example than describe shows: "title" is often a near-copy of the wording
            extra.append(("wording_example", f'{lead} For instance, "{pairs[3][0]}" -> "{pairs[3][1]}".'))
        out[vname] = (v["text"], [("wording", lead)] + extra + [(source, join_sentences(lead, text)) for source, text in items])
    return out


# --- writing --------------------------------------------------------------------------------------


def dumps(doc: dict, big: tuple[str, ...]) -> str:
    """JSON with one line per entry of the big maps (a task's descriptions), so diffs stay readable."""
    head = {k: v for k, v in doc.items() if k not in big}
    text = json.dumps(head, indent=2, ensure_ascii=False)[:-2]
    for key in big:
        rows = [f"    {_json(n)}: {_json(v)}" for n, v in doc[key].items()]
        text += f',\n  "{key}": {{\n' + ",\n".join(rows) + "\n  }"
    return text + "\n}\n"


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False)


def write(root: Path, split: Split, out: Path) -> dict:
    doc, templated = build(root, split)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bigbench.json").write_text(dumps(doc, ("short", "tasks", "heldout", "variants")), encoding="utf-8")
    lines = [_json(t) for t in templated["tasks"]]
    head = json.dumps({k: v for k, v in templated.items() if k != "tasks"}, indent=2)[:-2]
    body = ',\n  "tasks": [\n    ' + ",\n    ".join(lines) + "\n  ]\n}\n"
    (out / "templated.json").write_text(head + body, encoding="utf-8")
    return doc["counts"]


def main(argv: list[str] | None = None) -> None:
    from hypergen.tasks.bigbench import bigbench_root

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=None, help="extracted BIG-bench tree (default: the cache)")
    parser.add_argument("--split", type=Path, default=None, help="split file (default: data/splits/bigbench.json)")
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH.parent)
    args = parser.parse_args(argv)
    split = load_split(args.split) if args.split else load_split()
    counts = write(args.root or bigbench_root(), split, args.out)
    print(json.dumps(counts, indent=2))


if __name__ == "__main__":
    main()
