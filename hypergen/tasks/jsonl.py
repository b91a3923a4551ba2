"""hypergen's own task format: JSON Lines, one instance per line, any number of tasks per file.

    {"task": "antonyms", "input": "hot", "output": "cold", "description": "Give the antonym."}
    {"task": "sentiment", "input": "Loved it.", "output": "Good", "options": ["Good", "Bad"]}

"output" is a string or a list of accepted answers (the first is the label). "options" makes the
instance multiple choice: they are shuffled with a fixed seed and appended to the input, as for
BIG-bench. "description" may appear on any line; each distinct one becomes a variant, first seen
first. data/README.md documents the format.
"""

from __future__ import annotations

import json
from pathlib import Path

from hypergen.errors import HypergenError

from .core import Instance, Task, TaskSuite, append_options, register_reader, shuffle_options, warn_skipped


def is_jsonl(path: Path) -> bool:
    """A .jsonl file, or a folder holding some."""
    return next(path.glob("*.jsonl"), None) is not None if path.is_dir() else path.suffix == ".jsonl"


def load_jsonl(path: str | Path) -> TaskSuite:
    """Tasks from one .jsonl file or every .jsonl file in a folder (a task may span files)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.glob("*.jsonl"))
    if not files:
        raise HypergenError(f"{path}: no .jsonl files in it.")
    descriptions: dict[str, list[str]] = {}
    instances: dict[str, list[Instance]] = {}
    for file in files:
        for lineno, record in _records(file):
            name = record["task"]
            descriptions.setdefault(name, [])
            instances.setdefault(name, []).append(_instance(record, file, lineno))
            text = " ".join(record.get("description", "").split())
            if text and text not in descriptions[name]:
                descriptions[name].append(text)

    tasks = []
    for name, items in instances.items():
        if not descriptions[name]:
            warn_skipped(name, f'no line of it in {path} has a "description"')
            continue
        tasks.append(Task(name, descriptions[name], items, source="jsonl"))
    return TaskSuite(tasks)


def _records(file: Path):
    """(line number, validated dict) for each non-blank line."""
    try:
        yield from _lines(file)
    except UnicodeDecodeError as e:
        raise HypergenError(f"{file}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8.") from e


def _lines(file: Path):
    with open(file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{file}, line {lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise HypergenError(f"{where}: invalid JSON ({e.msg}, column {e.colno}).") from e
            if not isinstance(record, dict):
                raise HypergenError(f"{where}: expected an object with task, input and output.")
            for key in ("task", "input", "output"):
                if key not in record:
                    raise HypergenError(
                        f'{where}: missing "{key}" (each line needs task, input and output).'
                    )
            if not isinstance(record["task"], str) or not record["task"].strip():
                raise HypergenError(f'{where}: "task" must be a non-empty string.')
            if not isinstance(record["input"], str):
                raise HypergenError(f'{where}: "input" must be a string.')
            if not isinstance(record.get("description", ""), str):
                raise HypergenError(f'{where}: "description" must be a string.')
            yield lineno, record


def _instance(record: dict, file: Path, lineno: int) -> Instance:
    where = f"{file}, line {lineno}"
    output = record["output"]
    targets = [output] if isinstance(output, str) else output
    valid = isinstance(targets, list) and all(isinstance(t, str) and t.strip() for t in targets)
    if not (valid and targets):
        raise HypergenError(f'{where}: "output" must be a non-empty string or a list of them.')
    targets = [t.strip() for t in targets]
    text = record["input"].strip()
    options = record.get("options")
    if options is None:
        if not text:  # else it fails much later, in scoring, naming no file
            raise HypergenError(f'{where}: "input" is empty; free-text tasks need an input (multiple choice may leave it empty).')
        return Instance(text, targets)
    valid = isinstance(options, list) and all(isinstance(o, str) and o.strip() for o in options)
    if not (valid and len(options) >= 2):
        raise HypergenError(f'{where}: "options" must be a list of at least two strings.')
    options = [o.strip() for o in options]
    missing = [t for t in targets if t not in options]
    if missing:
        raise HypergenError(f'{where}: output {missing[0]!r} is not one of the options {options}.')
    options = shuffle_options(options, key=text)
    return Instance(append_options(text, options), targets, options)


register_reader("jsonl", is_jsonl, load_jsonl, describes="a .jsonl file in hypergen's format (data/README.md) or a folder of them")
