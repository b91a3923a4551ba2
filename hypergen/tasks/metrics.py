"""Generation metrics as Super-NaturalInstructions reports them: exact match and ROUGE-L.

Plain Python, no dependencies. Every score is a float in [0, 1] (SNI's script prints percentages:
multiply by 100 to compare). Each metric takes the best score over the accepted references.

ROUGE-L tokenizes like rouge_score's default tokenizer: lowercase, every run of characters other
than a-z and 0-9 is a separator. There is no stemmer (SNI's script uses Porter stemming, so "runs"
vs "run" scores lower here than there), and text in non-Latin scripts has no tokens, so it scores 0:
use exact match for such tasks.

`normalize_answer` also drops the articles a/an/the, as SQuAD does; SNI's own script keeps them, so
our exact match is slightly more lenient than the published SNI numbers.
"""

from __future__ import annotations

import re
import string

_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, collapse whitespace (SQuAD style)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(prediction: str, references: str | list[str]) -> float:
    """1.0 if the normalized prediction equals any normalized reference, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(ref) for ref in _as_list(references)))


def rouge_l(prediction: str, references: str | list[str]) -> float:
    """ROUGE-L F-measure (longest common subsequence of tokens), best over references."""
    pred = _tokens(prediction)
    return max((_rouge_l_f(pred, _tokens(ref)) for ref in _as_list(references)), default=0.0)


def macro_average(per_task: dict[str, float]) -> float:
    """Mean over tasks, each task counting once however many instances it has."""
    if not per_task:
        raise ValueError("macro_average of no tasks")
    return sum(per_task.values()) / len(per_task)


def _as_list(references: str | list[str]) -> list[str]:
    return [references] if isinstance(references, str) else list(references)


def _tokens(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def _rouge_l_f(pred: list[str], ref: list[str]) -> float:
    if not pred or not ref:
        return 0.0
    lcs = _lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def _lcs_length(a: list[str], b: list[str]) -> int:
    # One row of the dynamic-programming table at a time: O(len(b)) memory.
    prev = [0] * (len(b) + 1)
    for x in a:
        row = [0]
        for j, y in enumerate(b):
            row.append(prev[j] + 1 if x == y else max(prev[j + 1], row[j]))
        prev = row
    return prev[-1]
