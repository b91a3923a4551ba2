"""OpenAI Evals task data (the `evals` wheel on PyPI, MIT), read in place from the wheel.

The wheel (`pip download --no-deps evals==3.0.1.post1`, 46 MB) holds the registry: YAML files that
name each eval, its one-line description and its samples file (evals/registry/data/*.jsonl, real data,
not Git LFS pointers as in the repository). A sample is {"input": [chat messages] or a string,
"ideal": answer or list of accepted answers}. Only the exact-answer evals are read (classes Match,
Includes and FuzzyMatch: their `ideal` is the answer), and only zero-shot samples: system messages and
one user message, no assistant turn and no demonstration (a system message named `example_user`).

Most of these evals carry their instruction in a system message shared by every sample ("You will be
prompted with a single word. Does this word exist in the Afrikaans language? Answer with exactly one
letter: Y or N."): that is the task's description, and the
user message alone is the input, as a hypergen user writes the task in the description and gives plain
inputs. Where the system message differs from sample to sample it is part of the input.

Task names: `oai_<registry file>` for a file with one eval, `oai_<registry file>/<eval>` for a file with
several, so the family (the part before the slash) is the registry file its author wrote: related evals
(`ukraine-gec-*`) share one. Nothing from the wheel is copied into the repository.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

from hypergen import paths
from hypergen.errors import HypergenError

from .core import Instance, Task, TaskSuite, clean_text, join_sentences, register_reader, warn_skipped

VERSION = "3.0.1.post1"
WHEEL = f"evals-{VERSION}-py3-none-any.whl"
REGISTRY = "evals/registry/"
EXACT = {"evals.elsuite.basic.match:Match", "evals.elsuite.basic.includes:Includes", "evals.elsuite.basic.fuzzy_match:FuzzyMatch"}
MAX_READ = 1000
"""Samples read per eval, from the start of its file (diabetes has 287,681): plenty for training."""
SHARED = 0.8
"""A system message on at least this share of the samples is the task's instruction."""


def default_path() -> Path:
    return paths.downloads_dir() / WHEEL


def fetch_openai_evals() -> Path:
    """pip download the wheel into the cache (no install: it pulls many packages); returns its path."""
    wheel = default_path()
    if wheel.exists():
        return wheel
    wheel.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", f"evals=={VERSION}", "-d", str(wheel.parent)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not wheel.exists():
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise HypergenError(f"Could not download {WHEEL}: pip said\n{tail}\nFetch it by hand into {wheel.parent} and run this again.")
    return wheel


def is_openai_evals(path: Path) -> bool:
    """The evals wheel (a zip holding evals/registry/)."""
    if not (path.is_file() and path.name.startswith("evals-") and path.suffix == ".whl"):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.startswith(REGISTRY + "evals/") for n in z.namelist())
    except zipfile.BadZipFile:
        return False


def registry(path: Path) -> dict[str, dict]:
    """Task name -> {"eval", "file", "description", "samples"} for every exact-answer eval in the wheel."""
    import yaml

    out = {}
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        for member in sorted(n for n in names if n.startswith(REGISTRY + "evals/") and n.endswith(".yaml")):
            try:
                doc = yaml.safe_load(z.read(member))
            except yaml.YAMLError:
                continue  # a few files are not valid YAML; evals itself skips them too
            if not isinstance(doc, dict):
                continue
            found = []
            for name, entry in doc.items():
                impl = doc.get(entry.get("id")) if isinstance(entry, dict) and isinstance(entry.get("id"), str) else None
                args = (impl or {}).get("args") or {}
                samples = f"{REGISTRY}data/{args.get('samples_jsonl')}"
                if impl and impl.get("class") in EXACT and samples in names:
                    found.append((str(name), clean_text(entry.get("description")), samples))
            stem = "oai_" + re.sub(r"[^a-z0-9]+", "_", Path(member).stem.lower()).strip("_")
            for name, description, samples in found:
                sub = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
                task = stem if len(found) == 1 else f"{stem}/{sub}"
                out[task] = {"eval": name, "file": Path(member).name, "description": description, "samples": samples}
    return out


def load_openai_evals(path: str | Path) -> TaskSuite:
    """A lazy suite of the wheel's exact-answer evals."""
    path = Path(path)
    if not path.is_file():
        raise HypergenError(f"No OpenAI evals wheel at {path}: run `hypergen data fetch openai_evals` (pip downloads it, 46 MB).")
    entries = registry(path)
    if not entries:
        raise HypergenError(f"{path}: no exact-answer evals in its registry.")
    return TaskSuite(loaders={name: (lambda name=name, e=e: load_eval(path, name, e)) for name, e in entries.items()})


def _messages(sample) -> tuple[str, str] | None:
    """(system text, user text) of a zero-shot sample, else None."""
    msgs = [{"role": "user", "content": sample}] if isinstance(sample, str) else sample
    if not isinstance(msgs, list) or not all(isinstance(m, dict) for m in msgs):
        return None
    if any(str(m.get("name") or "").startswith("example_") for m in msgs):
        return None  # few-shot demonstrations written as named system messages
    roles = [m.get("role") for m in msgs]
    if roles.count("user") != 1 or roles[-1] != "user" or any(r not in ("system", "user") for r in roles):
        return None
    system = "\n".join(str(m.get("content") or "").strip() for m in msgs if m.get("role") == "system")
    return system.strip(), str(msgs[-1].get("content") or "").strip()


def read_samples(path: Path, member: str, limit: int = MAX_READ) -> list[tuple[str, str, list[str]]]:
    """(system, user, accepted answers) of the first `limit` usable zero-shot samples of one file."""
    out = []
    with zipfile.ZipFile(path) as z, z.open(member) as f:
        for line in f:
            if len(out) >= limit:
                break
            try:
                sample = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if not isinstance(sample, dict):
                continue
            msgs = _messages(sample.get("input"))
            ideal = sample.get("ideal")
            ideal = [ideal] if isinstance(ideal, (str, int, float)) else ideal if isinstance(ideal, list) else []
            targets = [clean_text(t) for t in ideal if clean_text(t)]
            if msgs is not None and msgs[1] and targets:
                out.append((msgs[0], msgs[1], targets))
    return out


def shared_instruction(samples: list[tuple[str, str, list[str]]]) -> str:
    """The system message of at least SHARED of the samples (the task's instruction), else ""."""
    system, count = Counter(s for s, _, _ in samples).most_common(1)[0]
    return system if system and count >= SHARED * len(samples) else ""


def load_eval(path: Path, name: str, entry: dict) -> Task | None:
    samples = read_samples(path, entry["samples"])
    if not samples:
        warn_skipped(name, "no zero-shot samples with an input and an ideal answer")
        return None
    system = shared_instruction(samples)
    if system:  # the task's instruction: out of the inputs, into the description
        instances = [Instance(u, t) for s, u, t in samples if s == system]
    else:
        instances = [Instance(f"{s}\n\n{u}" if s else u, t) for s, u, t in samples]
    instances = list({(i.input, i.targets[0]): i for i in instances}.values())  # exact duplicates once
    descriptions = list(dict.fromkeys(d for d in (join_sentences(entry["description"], system), clean_text(system), entry["description"]) if d))
    if not descriptions:
        warn_skipped(name, "neither a description nor a shared system message says what it asks")
        return None
    return Task(name, descriptions, instances, categories=[entry["eval"]], source="openai_evals")


register_reader("openai_evals", is_openai_evals, load_openai_evals, describes="the OpenAI evals wheel (evals-*.whl)", default=default_path)
