"""The methods an evaluation compares, and what makes each one's adapter.

A method is a reference (the plain base; the oracle, an expert trained on the task itself) or a family
from the generator registry, optionally with the description in the prompt as well, optionally as a
control (the family given a gibberish or another task's description instead of the task's own). Its
string form is the row's "method" in results.jsonl:

    base   base_desc   oracle   oracle+desc   sg   sg+desc   sg@gibberish   sg@other

The registry is the list: a newly registered family is a method here with no edit to the eval.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hypergen.errors import HypergenError

BASE, ORACLE = "base", "oracle"  # the references: no adapter, and the task's own expert
FAIR = "mtlora"  # the fair multi-task LoRA: one adapter trained on the generators' own rows (issue 17.5)
PROMPTED = "+desc"  # METHOD+desc = METHOD's adapter with the description in the prompt as well
BASE_PROMPTED = "base_desc"  # the base with the description in its prompt (spelled so since issue 6)
CONTROLS = ("gibberish", "other")
GIBBERISH = "qxv blorp zint wembly frask dool"


def _families() -> dict:
    from hypergen.generators import registered

    return registered()


def all_methods() -> tuple[str, ...]:
    """Every method an evaluation can name, in report order: references around the registered families."""
    return (BASE, BASE_PROMPTED, *_families(), ORACLE)


def untrained(name: str) -> bool:
    """A trainable family with no checkpoint to load (api.checkpoint_path's lookup): it cannot run yet."""
    from hypergen import api

    family = _families().get(name)
    return family is not None and family.trainable and api.checkpoint_path(name) is None


def default_methods() -> tuple[str, ...]:
    """What an evaluation runs when no --methods are given: every method that can run here, i.e.
    all_methods() less the trainable families nobody has trained (mtlora ships no checkpoint), and, when
    the default mode puts the description in the prompt too (api.DEFAULT_PROMPT_DESCRIPTION), the default
    generator and the fair multi-task LoRA in that mode: what issue 17's bar compares."""
    from hypergen import api

    runnable = [m for m in all_methods() if not untrained(m)]
    prompted = [m + PROMPTED for m in (api.DEFAULT_GENERATOR, FAIR) if api.DEFAULT_PROMPT_DESCRIPTION and m in runnable]
    return (*runnable[:-1], *prompted, ORACLE)  # the oracle, never trained here, last as in all_methods


@dataclass(frozen=True)
class Method:
    """name: "base", "oracle" or a registered generator family. prompt_description: the task's description
    goes in the prompt too. control: the generator is given a gibberish or another task's description."""

    name: str
    prompt_description: bool = False
    control: Literal["gibberish", "other"] | None = None

    @classmethod
    def parse(cls, key: str) -> Method:
        """The string form back into a Method (structure only; `check` asks the registry)."""
        name, _, control = key.partition("@")
        prompted = name == BASE_PROMPTED or name.endswith(PROMPTED)
        name = BASE if name == BASE_PROMPTED else name.removesuffix(PROMPTED)
        if not name or (control and control not in CONTROLS):
            raise HypergenError(f"Unknown method {key!r}: write NAME, NAME+desc or NAME@CONTROL (controls: {', '.join(CONTROLS)}).")
        m = cls(name, prompted, control or None)
        if str(m) != key:  # "base+desc" is spelled base_desc
            raise HypergenError(f"Unknown method {key!r}: write {m}.")
        return m

    def __str__(self) -> str:
        s = BASE_PROMPTED if self.name == BASE and self.prompt_description else self.name + (PROMPTED if self.prompt_description else "")
        return s + (f"@{self.control}" if self.control else "")

    @property
    def family(self):
        """The generator family that makes the adapter (a registry class); None for the references."""
        if self.name in (BASE, ORACLE):
            return None
        from hypergen.generators import get_family

        return get_family(self.name)

    def check(self) -> Method:
        """Refuse names neither a reference nor registered, and controls of methods that take no description."""
        if self.name not in (BASE, ORACLE, *_families()):
            raise HypergenError(f"Unknown method {str(self)!r}; available: {', '.join(all_methods())}, and GENERATOR{PROMPTED} (its adapter with the description in the prompt).")
        if self.control and not (self.family and self.family.uses_description):
            raise HypergenError(f"Method {str(self)!r}: {self.name} is given no description, so it has no {self.control} control.")
        return self

    @property
    def controlled(self) -> bool:
        """The eval adds this method's control rows: a learned family (trainable) whose adapter depends on the
        description it is given (with +desc the prompt keeps the task's own description and only the
        adapter's is swapped: what the adapter adds beyond the prompt). The retrieval baselines (nearest,
        mix, lego) depend on it by construction; their controls can be named (nearest@other) but are not
        added, which keeps the default run within an hour here."""
        return self.control is None and self.family is not None and self.family.trainable and self.family.uses_description

    def controls(self) -> list[Method]:
        return [Method(self.name, self.prompt_description, c) for c in CONTROLS]

    def given(self, description: str, other: str) -> str | None:
        """What the generator is given: the task's description, or the control's (None: no generator)."""
        if self.family is None:
            return None
        return {None: description, "gibberish": GIBBERISH, "other": other}[self.control]

    def sort_key(self) -> tuple:
        """Report order: controls last; references and families in all_methods() order, each +desc after its method."""
        names = (BASE, *_families(), ORACLE)
        return (self.control is not None, names.index(self.name) if self.name in names else len(names), self.prompt_description, str(self))


def adapter(m: Method, description: str | None, seed: int, task: str, zoo: str | None, encoder: str, oracles: dict):
    """LoraWeights of method `m` for `task` (None: the plain base, or a task without an oracle expert)."""
    if m.name == BASE:
        return None
    if m.name == ORACLE:
        z = oracles.get(task)
        return z.weights(task) if z is not None else None
    from hypergen import api

    return api.generate(description, m.name, seed=seed, activate=False, zoo_path=zoo, encoder_name=encoder).weights


def sources(m: Method, task: str, zoo: str | None, encoder: str, oracles: dict) -> dict:
    """What the method's adapter is made from, by content (part of each row's key)."""
    if m.name == BASE:
        return {}
    if m.name == ORACLE:
        return {"oracle": files_hash(oracles[task].folder(task))}
    from hypergen import api
    from hypergen.generators.checkpoint import TRAINING_FILE

    src = {"zoo": files_hash(api.zoo(zoo).root), "encoder": encoder}
    if m.family.trainable:  # the checkpoint api.generate loads, by content ("missing" when there is none)
        folder = api.checkpoint_path(m.name)
        # its training-only tensors (git-ignored: a clone has none) do not change what it generates
        src["generator"] = files_hash(folder, skip=(TRAINING_FILE,)) if folder is not None else "missing"
    return src


def files_hash(path: str | Path, skip: tuple[str, ...] = ()) -> str:
    """Content hash of a file or of every file under a folder (dotfiles such as the zoo's .lock aside, and
    files named in `skip`): what a zoo, a generator checkpoint or an expert holds, wherever it was copied.
    Hashed once per process while no file's size or mtime changes (the shipped zoo and generators take ~0.1 s)."""
    root = Path(path)
    if not root.exists():
        return "missing"
    files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file() and f.name not in skip
                                                 and not any(part.startswith(".") for part in f.relative_to(root).parts))
    stamp = tuple((f.relative_to(root).as_posix() if f != root else f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _content_hash(str(root), stamp)


@functools.lru_cache(maxsize=256)
def _content_hash(root: str, stamp: tuple) -> str:
    h = hashlib.sha256()
    base = Path(root)
    for rel, _, _ in stamp:
        h.update(rel.encode() + b"\0")
        h.update((base if base.is_file() else base / rel).read_bytes())
    return h.hexdigest()[:16]
