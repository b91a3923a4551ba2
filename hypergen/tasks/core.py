"""Tasks and task suites: what every source (BIG-bench, Super-NaturalInstructions, our JSONL) becomes.

A `Task` is a name, a few ways to describe it in words, and its instances. A `TaskSuite` is an ordered
collection of tasks. Big sources are loaded lazily: BIG-bench is 1.7 GB of JSON, so a suite holds one
loader per task and reads a task's file only when it is asked for.
"""

from __future__ import annotations

import difflib
import json
import random
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hypergen.errors import HypergenError

Source = str  # the name of the reader that made the task: "bigbench", "sni", "jsonl", ...


@dataclass
class Instance:
    """One example of a task."""

    input: str
    """What the model sees. For multiple choice the options are already appended (when the source asks
    for it) in the order of `options`, as "\\nOptions: A | B | C"."""
    targets: list[str]
    """Accepted answers; targets[0] is the canonical one, used as the training label."""
    options: list[str] | None = None
    """Multiple-choice candidates in a seeded shuffled order (see `shuffle_options`); None for free
    generation."""


@dataclass
class Task:
    """A named task: its descriptions and instances."""

    name: str
    """bigbench: "arithmetic/2_digit_multiplication" or "sports_understanding"; SNI: the file stem;
    jsonl: the name given in the file."""
    descriptions: list[str]
    """Every way we have of describing the task in words; [0] is the default. Never empty."""
    instances: list[Instance]
    categories: list[str] = field(default_factory=list)
    """BIG-bench keywords or SNI Categories."""
    source: Source = "jsonl"
    """The reader that made it (see `register_reader`)."""

    def __post_init__(self) -> None:
        if not self.descriptions or not all(d.strip() for d in self.descriptions):
            raise HypergenError(
                f"Task {self.name!r} has an empty description: give it at least one sentence that "
                "says what the task asks for."
            )

    @property
    def description(self) -> str:
        return self.descriptions[0]

    @property
    def is_multiple_choice(self) -> bool:
        """True when every instance has options, so it can be scored by option log-likelihood."""
        return bool(self.instances) and all(inst.options for inst in self.instances)

    @property
    def family(self) -> str:
        """The top-level task ("arithmetic" for "arithmetic/2_digit_multiplication"). Held-out splits
        hold out whole families so that sibling subtasks cannot leak into training."""
        return self.name.split("/", 1)[0]


# A loader returns the task, or None when the file turns out to hold nothing usable (it warns why).
TaskLoader = Callable[[], "Task | None"]


class TaskSuite:
    """An ordered collection of tasks, some possibly loaded on demand.

    Lazy entries are read from disk on every access and not cached, so memory stays bounded when a
    caller walks 1000 BIG-bench tasks: keep the `Task` you got if you need it twice. `len()` and
    `names()` count entries; an entry whose file holds no usable examples is skipped (with a warning)
    when iterating and raises in `get`.
    """

    def __init__(self, tasks: Iterable[Task] = (), *, loaders: dict[str, TaskLoader] | None = None):
        self._entries: dict[str, Task | TaskLoader] = {}
        for task in tasks:
            if task.name in self._entries:
                raise HypergenError(
                    f"Two tasks are named {task.name!r}: task names must be unique within a suite."
                )
            self._entries[task.name] = task
        for name, loader in (loaders or {}).items():
            self._entries[name] = loader

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Task]:
        for name in self._entries:
            task = self._load(name)
            if task is not None:
                yield task

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"TaskSuite({len(self)} tasks)"

    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, name: str) -> Task:
        self._check_known(name)
        task = self._load(name)
        if task is None:
            raise HypergenError(
                f"Task {name!r} was skipped (see the warning above): give it a description and "
                "examples with an input and a target."
            )
        return task

    def select(self, names: Iterable[str]) -> TaskSuite:
        """A suite of the given tasks, in the given order (still lazy where this one is)."""
        picked = TaskSuite()
        for name in names:
            self._check_known(name)
            picked._entries[name] = self._entries[name]
        return picked

    def _load(self, name: str) -> Task | None:
        entry = self._entries[name]
        return entry if isinstance(entry, Task) else entry()

    def _check_known(self, name: str) -> None:
        if name not in self._entries:
            raise HypergenError(unknown_name_message("task", name, self.names()))


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    """The "Unknown task 'x'. Did you mean ...?" message: close spellings, then names containing it."""
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    # Short names ("multiplication") rarely spell-match long ones, so also offer names containing them.
    needle = name.lower()
    close += [k for k in known if needle and needle in k.lower() and k not in close][: 5 - len(close)]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"Unknown {kind} {name!r}.{hint} There are {len(known)} {kind}s."


def shuffle_options(options: list[str], key: str) -> list[str]:
    """Options in an order fixed by their content and `key` (the instance input), not the file's.

    BIG-bench often lists the right option last; shown that way, an expert learns the position instead
    of the task. Seeding by content keeps the order stable however the file is reordered or filtered.
    """
    shuffled = sorted(options)
    seed = "\x1f".join([key, *shuffled])  # str seeds are hashed with SHA-512: stable across runs
    random.Random(seed).shuffle(shuffled)
    return shuffled


def append_options(text: str, options: list[str]) -> str:
    return f"{text}\nOptions: {' | '.join(options)}"


# Label sets up to this size are spelled out in a description ("Answer with one of: ...").
MAX_LABELS = 10


def label_sentence(instances) -> str:
    """ "Answer with one of: a, b, c." when the task has a small closed label set, else ""."""
    labels = set()
    for inst in instances:
        labels.update(inst.options or inst.targets[:1])
        if len(labels) > MAX_LABELS:
            return ""
    # A label set is only a label set if labels repeat; 3 free answers over 3 examples are not one.
    if not labels or len(labels) * 2 > len(instances):
        return ""
    return f"Answer with one of: {', '.join(sorted(labels))}."


def join_sentences(*parts: str) -> str:
    """Parts joined as sentences; a part already contained in another is dropped, not repeated."""
    kept: list[str] = []
    for part in parts:
        # A prefix that ends in ":" led into the input; as a sentence it ends in a full stop.
        part = clean_text(part).rstrip(":").rstrip()
        if not part or any(says(k, part) for k in kept):
            continue
        kept = [k for k in kept if not says(part, k)]  # the new part says it all
        kept.append(part if part[-1] in ".?!" else part + ".")
    return " ".join(kept)


def clean_text(text) -> str:
    """Whitespace collapsed to single spaces."""
    return " ".join(str(text or "").split())


def norm_text(text: str) -> str:
    """Lowercase words only, so punctuation and case do not make two sentences differ."""
    return " ".join(re.findall(r"\w+", text.lower()))


def says(text: str, part: str) -> bool:
    """Whether `text` already contains `part`, punctuation, case and spacing aside."""
    if len(part.split()) < 5:
        # Short parts must match whole words: "paraphrase" is not said by "paraphrases".
        return f" {norm_text(part)} " in f" {norm_text(text)} "
    # Long ones are compared on letters and digits alone, so "i.e." matches "ie.".
    return _squash(part) in _squash(text)


def _squash(text: str) -> str:
    return re.sub(r"[\W_]", "", text.lower())


def read_json(path: Path):
    """json.load that names the file and line on a syntax error: what a user needs to fix it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise HypergenError(
            f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}. Fix that line "
            "or remove the file."
        ) from e
    except UnicodeDecodeError as e:
        raise HypergenError(f"{path}: not UTF-8 text ({e.reason}). Save it as UTF-8.") from e


def warn_skipped(name: str, why: str) -> None:
    warnings.warn(f"Skipping task {name!r}: {why}.", stacklevel=3)


@dataclass(frozen=True)
class Reader:
    """A task format `load_suite` knows: how to recognise a path in it, and how to load one."""

    name: str
    """Also the `Task.source` of the tasks it makes."""
    detect: Callable[[Path], bool]
    """Whether an existing file or folder is in this format."""
    load: Callable[[Path], TaskSuite]
    describes: str
    """The format in a few words, for the message when no reader takes a path: "a BIG-bench task.json
    or a tree of */task.json"."""
    default: Callable[[], Path] | None = None
    """Where the format's data lives when the path given is the reader's name ("bigbench")."""


_READERS: dict[str, Reader] = {}


def register_reader(
    name: str,
    detect: Callable[[Path], bool],
    load: Callable[[Path], TaskSuite],
    *,
    describes: str,
    default: Callable[[], Path] | None = None,
) -> None:
    """One call adds a task format to `load_suite`. Readers are asked in the order they registered
    (hypergen.tasks registers BIG-bench, JSONL, SNI); the first whose `detect` says yes loads the path."""
    if name in _READERS:
        raise HypergenError(f"A task reader named {name!r} is already registered ({_READERS[name].load.__module__}).")
    _READERS[name] = Reader(name, detect, load, describes, default)


def readers() -> list[Reader]:
    """The registered readers, in the order `load_suite` asks them."""
    return list(_READERS.values())


def load_suite(path: str | Path) -> TaskSuite:
    """Load tasks from wherever they are; the format is detected by the registered readers.

    - a reader's name ("bigbench") loads its data from its usual place (`hypergen data fetch bigbench`).
    - a file or folder is given to the first reader that recognises it: built in are BIG-bench (a
      task.json or any folder holding */task.json), our .jsonl files (or a folder of them) and
      Super-NaturalInstructions (task*.json with "Definition", or a checkout's tasks/ folder).
    """
    by_name = _READERS.get(str(path))
    if by_name is not None and by_name.default is not None:
        return by_name.load(by_name.default())
    p = Path(path).expanduser()
    formats = "; ".join(r.describes for r in _READERS.values())
    if not p.exists():
        names = "".join(f"; {r.name!r} (its data in the usual place)" for r in _READERS.values() if r.default is not None)
        raise HypergenError(f"{p} does not exist. Give one of: {formats}{names}.")
    for reader in _READERS.values():
        if reader.detect(p):
            return reader.load(p)
    if p.is_file():
        raise HypergenError(f"{p}: not a task file hypergen knows. Expected one of: {formats}.")
    raise HypergenError(f"{p}: found no task files in it. Expected one of: {formats}.")
