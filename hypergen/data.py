"""Supervised examples for the base model: chat prompt + answer, loss on the answer tokens only.

pad == eos in SmolLM2, so labels cannot be derived from the padding: they are built explicitly,
-100 on the prompt and on padding, the answer tokens and the closing end-of-turn token learned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hypergen.tasks.prompt import format_prompt

IGNORE = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool


def encode_example(tokenizer, text: str, target: str, *, description: str | None = None, max_tokens: int = 128) -> Encoded | None:
    """Token ids and labels for one (input, target) pair.

    Over the budget, the input is cut from its start (BIG-bench inputs usually end with the question),
    and the example is flagged truncated; if even the answer alone does not fit, None (skip it).
    """
    prompt = format_prompt(tokenizer, text, description)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    truncated = False
    if len(p_ids) + len(a_ids) > max_tokens:
        empty = tokenizer(format_prompt(tokenizer, "", description), add_special_tokens=False)["input_ids"]
        room = max_tokens - len(a_ids) - len(empty)
        if room < 8:
            return None
        t_ids = tokenizer(text, add_special_tokens=False)["input_ids"][-room:]
        p_ids = tokenizer(format_prompt(tokenizer, tokenizer.decode(t_ids), description), add_special_tokens=False)["input_ids"]
        p_ids = p_ids[-(max_tokens - len(a_ids)) :]
        truncated = True
    return Encoded(p_ids + a_ids, [IGNORE] * len(p_ids) + a_ids, truncated)


def collate(batch: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded (B, T) input_ids, attention_mask, labels."""
    T = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), T), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), T), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), T), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
