"""Instructions moved out of the inputs: one task per templated instruction variant (issue 17.4).

Some BIG-bench tasks carry their instruction inside every input, in a few fixed wordings: tense's
inputs end in "Change tense to SIMPLE PAST:" (12 variants), ascii_word_recognition's start with "What
word is displayed in the ASCII art below?". A generator trained on such inputs learns nothing from the
description: the input already says what to do. A user writes the task in the description and gives a
plain input, so generator training sees these tasks that way too: `data/make_descriptions.py` finds the
wordings (data/descriptions/templated.json) and describes one task per wording with the wording in its
descriptions; `hypergen.tasks.sft_data` builds each such task from its parent's instances, keeping those
that hold the wording exactly once and cutting it out of the input.

A variant task is named `<parent>/<slug of the wording>` (`tense/change_tense_to_simple_past`), so its
family is its parent's.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import replace

from hypergen.tasks.core import Instance

SLUG_WORDS = 8
"""Words of the wording kept in a variant task's name."""
MIN_EXAMPLES = 10
"""A wording seen in fewer inputs makes no task of its own; one this size still trains a generator (tense
has ~24 a wording)."""


def variant_name(parent: str, instruction: str) -> str:
    """`tense` + "Change tense to SIMPLE PAST:" -> `tense/change_tense_to_simple_past`: the first words,
    accents dropped ("morphème" -> "morpheme"); a wording with no Latin letters is named by its hash."""
    folded = unicodedata.normalize("NFKD", instruction).encode("ascii", "ignore").decode().lower()
    words = re.findall(r"[a-z0-9]+", folded)[:SLUG_WORDS]
    return f"{parent}/{'_'.join(words) if words else 'wording_' + hashlib.sha1(instruction.encode()).hexdigest()[:8]}"


def strip_instruction(text: str, instruction: str) -> str | None:
    """`text` without `instruction` (matched word for word, any whitespace between the words), or None
    when it holds the instruction other than exactly once or holds nothing else. Only the spaces and one
    line break on each side of the instruction go: an ASCII art's indentation after it stays."""
    words = instruction.split()
    found = list(re.finditer(r"\s+".join(re.escape(w) for w in words), text)) if words else []
    if len(found) != 1:
        return None
    before, after = text[: found[0].start()], text[found[0].end() :]
    lead = re.match(r"[ \t]*\n?", after).group()
    trail = re.search(r"\n?[ \t]*$", before).group()
    before, after = before[: len(before) - len(trail)], after[len(lead) :]
    joint = "" if not before or not after else "\n" if "\n" in lead + trail else " "
    out = before + joint + after
    return out if out.strip() else None


def variant_instances(instances: list[Instance], instruction: str) -> tuple[list[Instance], list[int]]:
    """The instances that hold `instruction`, with it cut out of their input, and their positions in
    `instances` (so a split's train/val indices map onto the variant)."""
    kept, where = [], []
    for i, inst in enumerate(instances):
        text = strip_instruction(inst.input, instruction)
        if text is not None:
            kept.append(replace(inst, input=text))
            where.append(i)
    return kept, where
