"""Descriptions for generator training: data/descriptions/bigbench.json, read once, checked.

`python data/make_descriptions.py` writes the file from the BIG-bench cache: at least 8 descriptions
for each task a generator may train on (each tagged with how it was made), and apart from them the
descriptions the held-out evaluation uses, which no training description repeats. See data/README.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hypergen.errors import HypergenError
from hypergen.paths import shipped_data

DEFAULT_PATH = shipped_data("descriptions/bigbench.json")  # data/descriptions/bigbench.json in the repo
VERSION = 1
MIN_DESCRIPTIONS = 4
"""Fewer than this and a description would act as a task id: refuse the task."""
_REMAKE = "rerun python data/make_descriptions.py"


@dataclass(frozen=True)
class Description:
    text: str
    source: str
    """How it was made: "own", "keywords", "example", ... (data/README.md lists them); "eval" for
    a held-out task's evaluation description."""


def load_descriptions(
    path: str | Path = DEFAULT_PATH,
    tasks: Iterable[str] | None = None,
    minimum: int = MIN_DESCRIPTIONS,
) -> dict[str, list[Description]]:
    """Training task -> its descriptions (all tasks in the file, or those asked for, in that order).

    Raises when a task asked for has none, or fewer than `minimum`; a held-out task is refused, since
    its descriptions are for evaluation only.
    """
    path, data = _read(path)
    known = _parse(path, data["tasks"])
    if tasks is None:
        names = list(known)
    else:
        names = list(tasks)
        heldout = set(data["heldout"])
        for name in names:
            if name in heldout:
                raise HypergenError(
                    f"Task {name!r} is held out: its descriptions are for evaluation only; train on "
                    "the other tasks in the file."
                )
            if name not in known:
                raise HypergenError(f"descriptions missing for task {name!r} in {path}: {_REMAKE}.")
    for name in names:
        if len(known[name]) < minimum:
            raise HypergenError(
                f"Task {name!r} has {len(known[name])} descriptions in {path}, fewer than {minimum}: "
                f"leave it out of training, or {_REMAKE} after adding a source."
            )
    return {name: known[name] for name in names}


def load_variants(path: str | Path = DEFAULT_PATH) -> dict[str, tuple[str, str]]:
    """Variant task -> (parent task, the instruction wording cut out of the parent's inputs): the tasks
    `data/make_descriptions.py` made from a templated instruction (hypergen.tasks.templated). A file
    written before variants existed has none."""
    path, data = _read(path)
    try:
        return {name: (str(v["parent"]), str(v["instruction"])) for name, v in (data.get("variants") or {}).items()}
    except (TypeError, KeyError, AttributeError) as e:
        raise HypergenError(f"{path}: malformed 'variants' map ({e!r}): {_REMAKE}.") from e


def load_eval_descriptions(path: str | Path = DEFAULT_PATH) -> dict[str, list[Description]]:
    """Held-out task -> the descriptions the evaluation gives it (never used in training)."""
    path, data = _read(path)
    return _parse(path, data["heldout"])


def _read(path: str | Path) -> tuple[Path, dict]:
    path = Path(path)
    if not path.is_file():
        raise HypergenError(f"No descriptions file at {path}: {_REMAKE}.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HypergenError(f"{path} is not valid JSON ({e}): {_REMAKE}.") from e
    if not isinstance(data, dict) or not all(isinstance(data.get(k), dict) for k in ("tasks", "heldout")):
        raise HypergenError(f"{path} is not a descriptions file (no 'tasks' and 'heldout' maps): {_REMAKE}.")
    if data.get("version") != VERSION:
        raise HypergenError(f"{path} is descriptions version {data.get('version')}, not {VERSION}: {_REMAKE}.")
    return path, data


def _parse(path: Path, entries: dict) -> dict[str, list[Description]]:
    out = {}
    for name, items in entries.items():
        try:
            out[name] = [Description(str(d["text"]), str(d["source"])) for d in items]
        except (TypeError, KeyError) as e:
            raise HypergenError(f"{path}: task {name!r} has a malformed entry ({e!r}): {_REMAKE}.") from e
        if any(not d.text.strip() for d in out[name]):
            raise HypergenError(f"{path}: task {name!r} has an empty description: {_REMAKE}.")
    return out
