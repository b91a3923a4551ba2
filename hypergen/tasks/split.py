"""The BIG-bench split, committed as data/splits/bigbench.json so every run uses the same one.

Which tasks may train the zoo, which are held out to test generators on tasks they never saw, and
which instances of each task are train, val and test. Regenerate (deterministically, from the
extracted cache) with:

    python -m hypergen.tasks.split [--seed 0] [--out data/splits/bigbench.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from hypergen.errors import HypergenError
from hypergen.paths import shipped_data

from .core import Instance, Task, TaskSuite, unknown_name_message

DEFAULT_PATH = shipped_data("splits/bigbench.json")  # data/splits/bigbench.json in the repo
VERSION = 1
PARTS = ("train", "val", "test")
Part = Literal["train", "val", "test"]
_REGENERATE = "regenerate it with `python -m hypergen.tasks.split`"


@dataclass
class SplitCriteria:
    """Which tasks are eligible, how many are held out, and how instances are divided."""

    min_examples: int = 80
    """Fewer usable examples than this leaves too little to train an expert and still test it."""
    max_median_input_words: float = 80
    """Median whitespace words of Instance.input (options included): keeps prompts short."""
    max_median_input_chars: float = 600
    """Also in characters: base64 images and ASCII art are one long "word"."""
    max_median_target_words: float = 10
    """Short answers, so a small base model can be scored on them."""
    heldout_family_fraction: float = 0.2
    """Share of top-level families held out, whole."""
    min_heldout_tasks: int = 20
    """More families are held out until the held-out tasks reach this many."""
    test_size: int = 50
    small_task_size: int = 250
    """Tasks with fewer instances test on test_fraction of them instead of test_size."""
    test_fraction: float = 0.2
    val_size: int = 20
    max_train: int = 400

    def __post_init__(self) -> None:
        if not 0 < self.heldout_family_fraction < 1:
            raise HypergenError("heldout_family_fraction must be between 0 and 1, e.g. 0.2.")
        if self.min_examples < self.val_size + 2:
            raise HypergenError(
                f"min_examples ({self.min_examples}) must leave room for val ({self.val_size}), "
                "a test and a train instance: raise it or lower val_size."
            )


@dataclass
class Split:
    """Zoo and held-out task names, and per task the indices of its instances in each part."""

    version: int
    seed: int
    zoo: list[str]
    """Ordered round-robin over families: the first N tasks cover as many families as possible."""
    heldout: list[str]
    """Whole families (with their related families, see `family_groups`) that no zoo task shares."""
    instances: dict[str, dict[str, list[int]]]
    """task -> {"train", "val", "test"} -> indices into task.instances."""
    sizes: dict[str, int] = field(default_factory=dict)
    """task -> len(task.instances) when the split was made; a mismatch means the parser changed."""
    criteria: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)

    def heldout_families(self) -> list[str]:
        return sorted({n.split("/", 1)[0] for n in self.heldout} | set(self.counts.get("heldout_families", [])))

    def may_train(self, name: str) -> bool:
        """Whether task `name` may train anything: not held out, not of a held-out family, nor of a family
        related to one by name or by source data (near_family)."""
        return not near_family(name.split("/", 1)[0], self.heldout_families())

    def instances_of(self, task: Task, part: Part) -> list[Instance]:
        if part not in PARTS:
            raise HypergenError(f"Unknown part {part!r}: use one of {', '.join(PARTS)}.")
        if task.name not in self.instances:
            raise HypergenError(unknown_name_message("split task", task.name, list(self.instances)))
        expected = self.sizes.get(task.name)
        if expected is not None and expected != len(task.instances):
            raise HypergenError(
                f"Task {task.name!r} has {len(task.instances)} instances but the split was made when "
                f"it had {expected}, so its indices would point at other examples: {_REGENERATE}."
            )
        return [task.instances[i] for i in self.instances[task.name][part]]

    def save(self, path: str | Path = DEFAULT_PATH) -> None:
        """JSON with one line per task's indices, so the file stays readable and diffs stay small."""
        head = {k: v for k, v in asdict(self).items() if k not in ("instances", "sizes")}
        text = json.dumps(head, indent=2)[:-2]  # reopen the object to append the two big maps
        for key in ("sizes", "instances"):
            rows = [f"    {json.dumps(n)}: {json.dumps(v)}" for n, v in getattr(self, key).items()]
            text += f',\n  "{key}": {{\n' + ",\n".join(rows) + "\n  }"
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n}\n")


def load_split(path: str | Path = DEFAULT_PATH) -> Split:
    path = Path(path)
    if not path.exists():
        raise HypergenError(f"No split file at {path}: {_REGENERATE}.")
    try:
        data = json.loads(path.read_text())
        split = Split(**data)
    except (json.JSONDecodeError, TypeError) as e:
        raise HypergenError(f"{path} is not a split file ({e}): {_REGENERATE}.") from e
    if split.version != VERSION:
        raise HypergenError(f"{path} is split version {split.version}, not {VERSION}: {_REGENERATE}.")
    return split


@dataclass
class TaskStats:
    """What eligibility looks at, measured once per task."""

    name: str
    family: str
    size: int
    median_input_words: float
    median_input_chars: float
    median_target_words: float

    @classmethod
    def of(cls, task: Task) -> TaskStats:
        inputs = [inst.input for inst in task.instances]
        return cls(
            name=task.name,
            family=task.family,
            size=len(task.instances),
            median_input_words=statistics.median(len(s.split()) for s in inputs),
            median_input_chars=statistics.median(len(s) for s in inputs),
            median_target_words=statistics.median(len(i.targets[0].split()) for i in task.instances),
        )

    def eligible(self, c: SplitCriteria) -> bool:
        return (
            self.size >= c.min_examples
            and self.median_input_words <= c.max_median_input_words
            and self.median_input_chars <= c.max_median_input_chars
            and self.median_target_words <= c.max_median_target_words
        )


def make_split(suite: TaskSuite, seed: int = 0, criteria: SplitCriteria | None = None) -> Split:
    """Pick eligible tasks, hold out whole families, and divide each task's instances.

    Reads each task once, in name order; everything random is seeded by `seed` (and the task name),
    so the same suite and seed always give the same file.
    """
    c = criteria or SplitCriteria()
    stats = [TaskStats.of(task) for task in suite]  # lazy suites load one task at a time here
    pool = sorted((s for s in stats if s.eligible(c)), key=lambda s: s.name)
    if not pool:
        raise HypergenError("No task meets the split criteria: loosen them or check the data.")
    by_family: dict[str, list[str]] = defaultdict(list)
    for s in pool:
        by_family[s.family].append(s.name)

    families = sorted(by_family)
    groups = family_groups(families)
    random.Random(seed).shuffle(groups)
    want = max(1, round(c.heldout_family_fraction * len(families)))
    heldout_families: list[str] = []
    for group in groups[:-1]:  # at least one group stays in the zoo
        enough = sum(len(by_family[f]) for f in heldout_families) >= c.min_heldout_tasks
        if len(heldout_families) >= want and enough:
            break
        heldout_families += group
    zoo_families = [f for group in groups for f in group if f not in heldout_families]
    excluded = sorted(f for f in zoo_families if near_family(f, heldout_families))  # SAME_SOURCE partners
    zoo_families = [f for f in zoo_families if f not in excluded]

    sizes = {s.name: s.size for s in pool if s.family not in excluded}  # an excluded task is in no part
    heldout = sorted(n for f in heldout_families for n in by_family[f])
    zoo = _round_robin({f: _shuffled(by_family[f], f"{seed}:{f}") for f in zoo_families})
    instances = {name: divide_instances(sizes[name], f"{seed}:{name}", c) for name in sorted(sizes)}
    counts = {
        "tasks": len(suite),
        "tasks_loaded": len(stats),  # the rest were skipped with a warning
        "eligible": len(pool),
        "families": len(families),
        "zoo": len(zoo),
        "zoo_families": len(zoo_families),
        "heldout": len(heldout),
        "heldout_families": sorted(heldout_families),
        "excluded_families": excluded,  # built from a held-out family's data (SAME_SOURCE): in neither part
        "families_in_first_60_zoo": len({n.split("/")[0] for n in zoo[:60]}),
    }
    sizes = dict(sorted(sizes.items()))
    return Split(VERSION, seed, zoo, heldout, instances, sizes, asdict(c), counts)


# Families built from the same source data under unrelated names, which family_groups cannot see: when one
# is held out the other trains nowhere (in neither part of the split). Found by comparing instances
# (2026-12-01): 143 of metaphor_boolean's 680 sentences are metaphor_understanding's, 40 of them paired the
# same way; 61% of fact_checker/fever's claims are vitaminc_fact_verification's, word for word.
SAME_SOURCE = (frozenset({"metaphor_boolean", "metaphor_understanding"}), frozenset({"fact_checker", "vitaminc_fact_verification"}))


def near_family(family: str, families: Iterable[str]) -> bool:
    """Whether `family` is one of `families`, a variant of one by name (family_groups' rule) or built from
    the same data (SAME_SOURCE): what may not train while `families` are held out."""
    return any(family == f or _related(family, f) or frozenset({family, f}) in SAME_SOURCE for f in families)


def family_groups(families: list[str]) -> list[list[str]]:
    """Families that are variants of one another, which must fall on the same side of the split.

    Related means one name inside the other, word for word (arithmetic and modified_arithmetic,
    entailed_polarity and entailed_polarity_hindi), or the same first two words
    (international_phonetic_alphabet_nli and _transliterate). Holding out one while training on the
    other would test a near copy of a zoo task.
    """
    group = {f: {f} for f in families}
    for a, b in itertools.combinations(families, 2):
        if _related(a, b) and group[a] is not group[b]:
            merged = group[a] | group[b]
            for f in merged:
                group[f] = merged
    return sorted({id(g): sorted(g) for g in group.values()}.values())


def _related(a: str, b: str) -> bool:
    wa, wb = a.split("_"), b.split("_")
    if len(wa) > 1 and len(wb) > 1 and wa[:2] == wb[:2]:
        return True
    short, long = sorted((wa, wb), key=len)
    return any(long[i : i + len(short)] == short for i in range(len(long) - len(short) + 1))


def _shuffled(items: list[str], key: str) -> list[str]:
    items = sorted(items)
    random.Random(key).shuffle(items)
    return items


def _round_robin(groups: dict[str, list[str]]) -> list[str]:
    """One task of each family, then a second of each, ...: a zoo of the first N is as diverse as N
    allows (multiemo alone has 80 eligible subtasks)."""
    order = []
    for depth in range(max(len(g) for g in groups.values())):
        order += [g[depth] for g in groups.values() if depth < len(g)]
    return order


def divide_instances(size: int, key: str, c: SplitCriteria) -> dict[str, list[int]]:
    perm = random.Random(key).sample(range(size), size)
    n_test = c.test_size if size >= c.small_task_size else math.ceil(c.test_fraction * size)
    val_end = n_test + c.val_size
    return {
        "train": sorted(perm[val_end : val_end + c.max_train]),
        "val": sorted(perm[n_test:val_end]),
        "test": sorted(perm[:n_test]),
    }


def main(argv: list[str] | None = None) -> None:
    from .bigbench import fetch_bigbench, load_bigbench

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH)
    args = parser.parse_args(argv)
    split = make_split(load_bigbench(fetch_bigbench()), seed=args.seed)
    split.save(args.out)
    print(f"wrote {args.out}: " + json.dumps(split.counts))


if __name__ == "__main__":
    main()
