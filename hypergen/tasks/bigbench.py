"""BIG-bench JSON tasks (Apache-2.0): fetch the sdist once, extract its task.json files, parse them.

We never install the `bigbench` package (it pins old TensorFlow and friends) and never copy its data
into the repo. The sdist holds bigbench/benchmark_tasks/<task>/task.json and, for tasks split into
subtasks, <task>/<subtask>/task.json; a parent file then has no examples of its own. Programmatic
tasks (task.py) are ignored.

Each example is shown as BIG-bench's json_task.py shows it, zero-shot (see `Framing`), inside our chat
template: the framed input is the user turn and the target the assistant's answer.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from hypergen import paths
from hypergen.errors import HypergenError

from .core import (
    Instance,
    Task,
    TaskSuite,
    append_options,
    clean_text,
    join_sentences,
    label_sentence,
    norm_text,
    read_json,
    register_reader,
    says,
    shuffle_options,
    warn_skipped,
)

SDIST = "bigbench-1.0.0.tar.gz"
SDIST_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"  # as PyPI lists it
# A subtask description shorter than this gets its parent task's description in front.
SHORT_DESCRIPTION_WORDS = 20
_MARKER = ".extracted"  # written last, so a half-finished extraction never looks complete
_TASKS_DIR = "bigbench/benchmark_tasks/"
READER_VERSION = 2
"""The prompts this reader builds, recorded by a zoo so it says which prompts its experts saw.
1 (before 2026-11-30): bare inputs. 2: BIG-bench's example and choice prefixes where a task defines them."""


def bigbench_root() -> Path:
    """The extracted task tree: data_dir()/bigbench/<task>[/<subtask>]/task.json."""
    root = paths.data_dir() / "bigbench"
    if not (root / _MARKER).exists():
        raise HypergenError(
            f"BIG-bench tasks are not extracted at {root}: run `hypergen data fetch bigbench`."
        )
    return root


def fetch_bigbench(force: bool = False) -> Path:
    """Download the BIG-bench sdist if missing and extract only its task.json files; returns the root.

    Idempotent: a finished extraction is left alone unless `force` (which re-extracts; delete the
    sdist from paths.downloads_dir() to download it again).
    """
    root = paths.data_dir() / "bigbench"
    if (root / _MARKER).exists() and not force:
        return root
    sdist = paths.downloads_dir() / SDIST
    if not sdist.exists():
        _download_sdist(sdist.parent)
    partial = root.with_name("bigbench.partial")
    shutil.rmtree(partial, ignore_errors=True)
    count = _extract_task_files(sdist, partial)
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    (root / _MARKER).write_text(f"{count} task.json files from {SDIST}\n")
    return root


def _download_sdist(dest: Path) -> None:
    """pip download the sdist; if pip refuses, read it straight from the package index.

    pip >= 25 prepares an sdist's metadata even with --no-deps and then rejects bigbench for its
    direct-URL dependency (bleurt @ file://...), so the index fallback is the usual path there.
    """
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "bigbench==1.0.0", "-d", str(dest)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode == 0 and (dest / SDIST).exists():
        return
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple")
    try:
        download_from_index(f"{index.rstrip('/')}/bigbench/", dest)
    except (OSError, ValueError) as e:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise HypergenError(
            f"Could not download {SDIST}: pip said\n{tail}\nand the index {index} gave: {e}\n"
            f"Check the network, or fetch the file by hand into {dest} and run this again."
        ) from None


def download_from_index(page_url: str, dest: Path, sha256: str = SDIST_SHA256) -> Path:
    """Fetch SDIST from bigbench's PEP 503 simple-index page, checking its sha256; returns the file."""
    from tqdm import tqdm  # lazy: keeps `import hypergen` light

    with urllib.request.urlopen(page_url, timeout=60) as r:
        page = r.read().decode("utf-8", "replace")
    hrefs = [h for h in re.findall(r'href="([^"]+)"', page) if h.split("#")[0].endswith("/" + SDIST) or h.split("#")[0] == SDIST]
    if not hrefs:
        raise ValueError(f"{page_url} does not list {SDIST}")
    url = urllib.parse.urljoin(page_url, html.unescape(hrefs[0]).split("#")[0])
    partial = dest / (SDIST + ".partial")
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=60) as r, open(partial, "wb") as out:
        size = int(r.headers.get("Content-Length") or 0) or None
        with tqdm(total=size, unit="B", unit_scale=True, desc=f"downloading {SDIST}") as bar:
            while chunk := r.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    if digest.hexdigest() != sha256:
        partial.unlink()
        raise ValueError(f"{url} has sha256 {digest.hexdigest()}, expected {sha256}")
    return partial.rename(dest / SDIST)


def _extract_task_files(sdist: Path, dest: Path) -> int:
    from tqdm import tqdm  # lazy: keeps `import hypergen` light

    count = 0
    try:
        with open(sdist, "rb") as raw, tarfile.open(fileobj=raw, mode="r:gz") as tar:
            bar = tqdm(total=sdist.stat().st_size, unit="B", unit_scale=True,
                       desc="extracting BIG-bench task.json")  # fmt: skip
            for member in tar:
                bar.update(raw.tell() - bar.n)
                _, sep, rel = member.name.partition(_TASKS_DIR)
                if not (sep and member.isfile() and rel.endswith("task.json")):
                    continue
                if ".." in Path(rel).parts:  # never write outside dest, whatever the archive says
                    continue
                out = dest / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                count += 1
            bar.close()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise HypergenError(
            f"{sdist} is unreadable ({e}). Delete it and run `hypergen data fetch bigbench` again."
        ) from e
    if count == 0:
        raise HypergenError(f"{sdist} holds no {_TASKS_DIR}*/task.json: is it the BIG-bench sdist?")
    return count


def is_bigbench(path: Path) -> bool:
    """A task.json-like file (a JSON object with "examples"), or a folder with a task.json anywhere below."""
    if path.is_dir():
        return next(path.rglob("task.json"), None) is not None
    if path.suffix != ".json":
        return False
    data = read_json(path)
    return isinstance(data, dict) and "examples" in data and "Definition" not in data  # with "Definition" it is SNI


def load_bigbench(path: Path) -> TaskSuite:
    """A lazy suite of every leaf task.json under `path` (a tree, or one task.json file)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.rglob("task.json"))
    parents = {f.parent.parent for f in files}
    loaders = {}
    for file in files:
        if path.is_dir() and file.parent in parents:  # a parent task: its subtasks hold the examples
            continue
        name = task_name(file)
        loaders[name] = lambda file=file, name=name: load_task_file(file, name)  # bound per file
    return TaskSuite(loaders=dict(sorted(loaders.items())))


def task_name(file: Path) -> str:
    """ "sports_understanding", or "arithmetic/2_digit_multiplication" for a subtask (its folder's
    parent holds a task.json too)."""
    task_dir = file.parent
    if (task_dir.parent / "task.json").exists():
        return f"{task_dir.parent.name}/{task_dir.name}"
    return task_dir.name


def load_task_file(file: Path, name: str | None = None) -> Task | None:
    name = name or task_name(file)
    data = read_json(file)
    if not isinstance(data, dict):
        raise HypergenError(f"{file}: expected a JSON object with 'examples' (a BIG-bench task).")
    parent_file = file.parent.parent / "task.json"
    parent = read_json(parent_file) if "/" in name and parent_file.exists() else None
    return parse_task(data, name, parent)


def parse_task(data: dict, name: str, parent: dict | None = None) -> Task | None:
    """A Task from one task.json's content; None (with a warning) when nothing in it is usable."""
    description = clean_text(data.get("description"))
    if not description:
        warn_skipped(name, "its description is empty")
        return None
    prefix = str(data.get("task_prefix") or "")
    instruction = _as_instruction(prefix, description)
    # A prefix that is not an instruction is context the examples need (a table, a glossary, a few
    # translated sentences): BIG-bench prepends it to every input, and so do we.
    context = "" if instruction or not prefix.strip() else prefix
    framing = Framing.of(data, parent)

    instances = []
    seen = set()
    for example in data.get("examples") or []:
        inst = _parse_example(example, context, framing)
        if inst is None or (inst.input, *inst.targets) in seen:  # BIG-bench drops duplicates too
            continue
        seen.add((inst.input, *inst.targets))
        instances.append(inst)
    if not instances:
        warn_skipped(name, "it has no examples with an input and a target")
        return None

    parent_description = clean_text((parent or {}).get("description"))
    variants = description_variants(name, description, parent_description, instruction, instances)
    keywords = [str(k) for k in data.get("keywords") or []]
    return Task(name, variants, instances, categories=keywords, source="bigbench")


PREFIX_FIELDS = ("example_input_prefix", "example_output_prefix", "choice_prefix")
"""What version 2 reads beyond version 1: a task.json without them gives version 1's inputs."""


@dataclass(frozen=True)
class Framing:
    """How BIG-bench frames one example zero-shot, from the fields the task defines (a subtask falls back
    on its parent task.json): input_prefix + input + choice_prefix + choice_prefix.join(options) +
    output_prefix, so the answer continues the output prefix ("Today I walk. Yesterday I" -> "walked").

    A field the task leaves out stays empty rather than taking BIG-bench's default ("\\nQ: ", "\\nA: "):
    those only mark whose turn it is, which the chat template already does. The few-shot separator
    never applies (we are zero-shot), and task_prefix is handled by parse_task (instruction or context).
    """

    input_prefix: str = ""
    output_prefix: str = ""
    choice_prefix: str = ""
    """Blank (multiemo's "") means our "\\nOptions: A | B | C": BIG-bench would run the options together."""
    append_choices: bool = True

    @classmethod
    def of(cls, data: dict, parent: dict | None = None) -> Framing:
        fields = (*PREFIX_FIELDS, "append_choices_to_input")
        defined = {k: v for k, v in (parent or {}).items() if k in fields}
        defined.update({k: v for k, v in data.items() if k in fields})
        return cls(
            input_prefix=str(defined.get("example_input_prefix") or ""),
            output_prefix=str(defined.get("example_output_prefix") or ""),
            choice_prefix=str(defined.get("choice_prefix") or ""),
            # BIG-bench's default is True; the string "false" (4 tasks) is truthy, in version 1 and in
            # BIG-bench's `if append_choices_to_input:` alike (identify_odd_metaphor asks "Which of the following ...").
            append_choices=bool(defined.get("append_choices_to_input", True)),
        )

    def present(self, context: str, text: str, options: list[str] | None = None) -> str:
        """The input as the model sees it; without prefixes exactly version 1's (context + text, options)."""
        shown = (context + self.input_prefix + text).strip()
        if options and self.append_choices:
            if self.choice_prefix.strip():
                shown += self.choice_prefix + self.choice_prefix.join(options)
            else:
                shown = append_options(shown, options)
        return (shown + self.output_prefix).strip()


def _parse_example(example, context: str, framing: Framing) -> Instance | None:
    if not isinstance(example, dict) or not isinstance(example.get("input"), str):
        return None
    # The input may be empty when the options alone are the question (cause_and_effect: "which
    # sentence makes more sense"). Whether an example is usable, and its options' order, depend on the
    # unframed text, so prefixes never change which instances a task has.
    text = (context + example["input"]).strip()
    target = example.get("target")  # a string, a list of accepted strings, or absent
    if not isinstance(target, list):
        target = [] if target is None else [target]
    explicit = [str(t).strip() for t in target if str(t).strip()]

    scores = example.get("target_scores")
    if not isinstance(scores, dict) or len(scores) < 2:
        return Instance(framing.present(context, example["input"]), explicit) if text and explicit else None
    try:
        scores = {str(k).strip(): float(v) for k, v in scores.items()}
    except (TypeError, ValueError):
        return None
    best = max(scores.values())
    if best <= min(scores.values()) or "" in scores:  # no right answer, or an empty option
        return None
    if not (text or framing.append_choices):  # nothing to show: neither a question nor options
        return None
    options = shuffle_options(list(scores), key=text)
    # An explicit target is BIG-bench's canonical answer (arithmetic has both); else the best options.
    targets = [t for t in explicit if t in scores] or [o for o in options if scores[o] == best]
    return Instance(framing.present(context, example["input"], options), targets, options)


def description_variants(
    name: str,
    description: str,
    parent_description: str = "",
    instruction: str = "",
    instances: list[Instance] = (),
) -> list[str]:
    """Every way of describing the task we can build from its own fields, default first.

    Many subtasks share a description that says little ("Multilingual, Multilevel, Multidomain" for
    all 110 multiemo subtasks), so the default combines the parent task's description (when the
    subtask's own is short), the subtask's, its instruction, the subtask name made readable, and its
    label set. The raw description and simpler combinations follow, as paraphrases.
    """
    labels = label_sentence(instances)
    short = len(description.split()) < SHORT_DESCRIPTION_WORDS
    combined = join_sentences(parent_description if short else "", description, instruction)
    subtask = readable_subtask(name)
    if subtask and not says(combined, subtask):
        combined = join_sentences(combined, f"Subtask: {subtask}.")
    variants = [
        join_sentences(combined, labels),
        description,
        join_sentences(description, labels),
        join_sentences(instruction, labels),
    ]
    unique, seen = [], set()
    for v in variants:
        key = norm_text(v)
        if key and key not in seen:
            seen.add(key)
            unique.append(v)
    return unique


def readable_subtask(name: str) -> str:
    """ "2_digit_multiplication" -> "2 digit multiplication"; numbering and file-format words go."""
    if "/" not in name:
        return ""
    words = name.split("/", 1)[1].replace("/", "_").replace("-", "_").split("_")  # a variant task has 3 parts
    words = [w for w in words if w and w != "json" and not re.fullmatch(r"(sub)?task\d+", w)]
    return " ".join(words)


# Common English function words: a prefix without any is not an English instruction.
_ENGLISH = set(
    "the an of to is are and or in for whether each given following which what if this that your "
    "you with from by whose how does do be".split()
)


def _as_instruction(prefix: str, description: str) -> str:
    """The task_prefix when it reads as an instruction to the solver, else ""."""
    text = clean_text(prefix)
    if len(text.split()) < 3:  # " paraphrase: " is a cue for the answer, not an instruction
        return ""
    if says(text, description) or says(description, text):
        return text  # natural_instructions prefixes repeat the description, give or take "i.e."
    words = text.split()
    lines = [line for line in prefix.splitlines() if line.strip()]
    english = sum(w.lower().strip(".,:;?!'\"()") in _ENGLISH for w in words)
    looks_like_context = (
        len(lines) > 2  # tables, glossaries, few-shot blocks
        or re.search(r"(^|\n)\s*[QA]:", prefix)
        or len(words) > 80
    )
    return text if english >= 2 and not looks_like_context else ""


register_reader(
    "bigbench", is_bigbench, load_bigbench, describes="a BIG-bench task.json or a tree of */task.json", default=bigbench_root
)
