"""Where generator SFT gets its tasks: (task, descriptions, train and validation instances), no expert needed.

Three sources (TrainConfig.tasks):
- "zoo":          the zoo experts' own tasks, with the descriptions the zoo stored (the bank's variants).
- "descriptions": every task of a descriptions file (data/descriptions/bigbench.json by default) read
                  from a task suite (BIG-bench by default): 799 tasks from 100 families, not only the zoo's
                  (53 of them one instruction wording of a parent task each, hypergen.tasks.templated).
- "suite":        every task of a task suite (e.g. your JSONL); each must have descriptions in the file.

Instances: a task in the split (the zoo-eligible ones) trains on the split's train part and validates on
its val part, so its test part stays unseen; any other task trains on everything but a fixed, seeded
validation slice. Tasks with fewer than `min_examples` usable instances are left out (and counted):
far below the split's 80, since a task with 30 examples still teaches a generator. A variant task (one
wording of an instruction the parent's inputs carry, hypergen.tasks.templated) is divided as its parent
is, so a zoo task's test part stays unseen, and needs only hypergen.tasks.templated.MIN_EXAMPLES.
Validation holds whole families apart (`split_families`): no validation task shares a family with a
training one, and held-out families (the evaluation's) are never read at all.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

from hypergen.errors import HypergenError
from hypergen.tasks.split import family_groups, near_family

VAL_SLICE = 20  # validation instances of a task outside the split (at most a fifth of the task)


@dataclass
class SftTask:
    """One training (or validation) task: its descriptions and its instances, not yet tokenised."""

    name: str
    descriptions: list[str]
    train: list = field(repr=False)  # list[Instance]
    val: list = field(repr=False)
    expert: int = -1  # its index in the generator's bank when it is a zoo expert (sg leaves it out of its own prior)

    @property
    def family(self) -> str:
        return self.name.split("/", 1)[0]


def divide(task, split, min_examples: int, max_train: int) -> tuple[list, list] | None:
    """(train, val) instances of `task`, or None when it has fewer than `min_examples`."""
    n = len(task.instances)
    if n < min_examples:
        return None
    if split is not None and task.name in split.instances:
        return split.instances_of(task, "train")[:max_train], split.instances_of(task, "val")
    perm = random.Random(f"sft:{task.name}").sample(range(n), n)  # fixed by the name, not by the run
    k = min(VAL_SLICE, n // 5)
    return [task.instances[i] for i in perm[k:][:max_train]], [task.instances[i] for i in perm[:k]]


def heldout_families(descriptions_path, split) -> set[str]:
    """Families the evaluation holds out: those of the split's held-out tasks and of the file's."""
    from hypergen.tasks.descriptions import load_eval_descriptions

    names = list(load_eval_descriptions(descriptions_path)) + (list(split.heldout) if split is not None else [])
    return {n.split("/", 1)[0] for n in names}


def described_tasks(suite, descriptions_path, split, *, names=None, min_examples: int = 30, max_train: int = 128) -> tuple[list[SftTask], int]:
    """Tasks of `suite` named in the descriptions file (names=None) or the given names, each with its
    descriptions. Returns (tasks, number left out for too few examples). A held-out family is refused."""
    from hypergen.tasks.descriptions import load_descriptions, load_variants
    from hypergen.tasks.templated import MIN_EXAMPLES as VARIANT_MIN_EXAMPLES, variant_instances

    desc = load_descriptions(descriptions_path, names)  # names given: each must have descriptions, none held out
    variants = load_variants(descriptions_path)
    held = heldout_families(descriptions_path, split)
    leaked = sorted(n for n in desc if near_family(n.split("/", 1)[0], held))  # variants by name or by source data too
    if leaked:
        raise HypergenError(f"{descriptions_path} describes tasks of held-out families ({', '.join(leaked[:3])}): "
                            "training on them would leak the evaluation; remake the file with `python data/make_descriptions.py`.")
    tasks, small, parents = [], 0, {}
    for name, ds in desc.items():
        if name in variants:  # the parent's instances holding this wording, the wording cut out (hypergen.tasks.templated)
            parent, wording = variants[name]
            if parent not in parents:  # read once for all its variants
                parents[parent] = divide(suite.get(parent), split, 0, 10**9)
            train, val = (variant_instances(part, wording)[0] for part in parents[parent])
            parts = (train[:max_train], val) if len(train) + len(val) >= min(min_examples, VARIANT_MIN_EXAMPLES) else None
        else:
            parts = divide(suite.get(name), split, min_examples, max_train)  # a name the suite lacks raises with close matches
        if parts is None:
            small += 1
            continue
        tasks.append(SftTask(name, [d.text for d in ds], *parts))
    return tasks, small


def split_families(tasks: list[SftTask], n_val: int, seed: int) -> tuple[list[SftTask], list[SftTask]]:
    """(train, val): `n_val` whole families for validation (each with the families related to it by
    name, split.family_groups: modified_arithmetic validates only if arithmetic does not train), chosen by
    `seed` alone among those small enough (<= 5% of the tasks) that validation never takes a large share of
    the training data."""
    if not tasks:
        raise HypergenError("No usable tasks for SFT: every task was left out (too few examples, or none given); "
                        "lower --min-examples or give a suite with more data.")
    if n_val == 0:
        return tasks, []
    by_family = defaultdict(list)
    for t in tasks:
        by_family[t.family].append(t)
    groups = family_groups(sorted(by_family))
    small = [g for g in groups if sum(len(by_family[f]) for f in g) <= max(1, len(tasks) // 20)]
    random.Random(f"val:{seed}").shuffle(small)
    val = {f for g in small[:n_val] for f in g}
    if len(small) < n_val or len(val) == len(by_family):
        raise HypergenError(f"--val-families {n_val} needs {n_val} small families and at least one more to train on; "
                            f"the tasks have {len(by_family)} families ({len(small)} small): lower --val-families.")
    return [t for t in tasks if t.family not in val], [t for t in tasks if t.family in val]
