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



def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: the positions whose next token is labelled, i.e. the logits a loss needs."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE
    return keep


def answer_nll(logits: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits (n, V), computed at the `keep` positions, against their next tokens."""
    target = labels[:, 1:][keep[:, :-1]]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target)


def answer_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """`model(**batch).loss` (mean over answer tokens), with the vocabulary projection run only where
    a label exists (transformers' boolean `logits_to_keep`).

    The answer is a few tokens of a ~128-token example and SmolLM2's lm_head (576 x 49152) is a large
    part of the compute: one LoRA step takes 4.9 s with every logit and 3.2 s with the labelled ones
    on this 2-core CPU (bench/train_step.py, docs/benchmarks.md), same loss and gradient (tested).
    `model` is a causal LM or a peft model around one.
    """
    keep = answer_positions(batch["labels"])
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep)
    return answer_nll(out.logits, batch["labels"], keep)
