"""Super-NaturalInstructions task files (allenai/natural-instructions, tasks/taskNNN_*.json).

Each file holds "Definition" (a list of instruction strings), "Categories", "Positive Examples" (the
few-shot demonstrations, not used here) and "Instances" with "input" and "output" (a list of accepted
answers). We read them from wherever the user keeps a checkout; none is shipped with hypergen.
"""

from __future__ import annotations

import re
from pathlib import Path

from hypergen.errors import HypergenError

from .core import Instance, Task, TaskSuite, join_sentences, label_sentence, read_json, register_reader, warn_skipped

_TASK_FILE = re.compile(r"task\d+_.*\.json")


def sni_files(path: Path) -> list[Path]:
    """task*.json files in `path` or in its tasks/ folder (a repository checkout)."""
    for folder in (path, path / "tasks"):
        if folder.is_dir():
            files = sorted(f for f in folder.iterdir() if _TASK_FILE.fullmatch(f.name))
            if files:
                return files
    return []


def is_sni(path: Path) -> bool:
    """A JSON file with "Definition", or a folder (or checkout) of task*.json files."""
    if path.is_dir():
        return bool(sni_files(path))
    if path.suffix != ".json":
        return False
    data = read_json(path)
    return isinstance(data, dict) and "Definition" in data


def load_sni(path: str | Path) -> TaskSuite:
    """A lazy suite of SNI tasks from one file or a folder; names are the file stems."""
    path = Path(path)
    files = [path] if path.is_file() else sni_files(path)
    if not files:
        raise HypergenError(f"{path}: no SNI task files (taskNNN_*.json) in it or in its tasks/.")
    return TaskSuite(loaders={f.stem: (lambda f=f: load_sni_file(f)) for f in files})


def load_sni_file(file: Path) -> Task | None:
    data = read_json(file)
    if not isinstance(data, dict) or "Definition" not in data:
        raise HypergenError(f"{file}: no 'Definition' field, so not a Super-NaturalInstructions task.")
    return parse_task(data, file.stem)


def parse_task(data: dict, name: str) -> Task | None:
    definition = data.get("Definition")
    if isinstance(definition, str):
        definition = [definition]
    descriptions = [" ".join(str(d).split()) for d in definition or [] if str(d).strip()]
    if not descriptions:
        warn_skipped(name, "its Definition is empty")
        return None

    instances = []
    for item in data.get("Instances") or []:
        if not isinstance(item, dict) or not isinstance(item.get("input"), str):
            continue
        outputs = item.get("output")
        outputs = [outputs] if isinstance(outputs, str) else outputs or []
        targets = [str(o).strip() for o in outputs if str(o).strip()]
        if item["input"].strip() and targets:
            instances.append(Instance(item["input"].strip(), targets))
    if not instances:
        warn_skipped(name, "it has no instances with an input and an output")
        return None

    # SNI has no options field, but many tasks are classification: spelling out the labels helps
    # a description-conditioned generator as much as it does for BIG-bench.
    labels = label_sentence(instances)
    if labels:
        descriptions.append(join_sentences(descriptions[0], labels))
    categories = [str(c) for c in data.get("Categories") or []]
    return Task(name, descriptions, instances, categories=categories, source="sni")


register_reader("sni", is_sni, load_sni, describes="a Super-NaturalInstructions task*.json or a folder of them")
