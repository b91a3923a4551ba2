"""Scoring a model (base or with an adapter) on a task's instances.

Every task gets ROUGE-L and exact match on greedy answers (the SNI standard). Multiple-choice tasks
also get accuracy by log-likelihood over their options: a 135M base rarely answers in the task's label
words, so generated-text metrics alone would mistake format for skill.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from hypergen.base import ResidentModel
from hypergen.tasks import Instance, exact_match, rouge_l


@dataclass
class TaskScore:
    rougeL: float | None  # mean ROUGE-L F, 0..1; None when answers were not generated
    exact_match: float | None  # mean, 0..1
    accuracy: float | None  # log-likelihood accuracy over options, 0..1; None when not multiple choice
    n: int
    option_probs: list[list[float]] | None = field(default=None, repr=False)  # per instance, multiple choice only

    @property
    def main(self) -> float:
        """The headline number: accuracy for multiple choice, ROUGE-L otherwise."""
        return self.accuracy if self.accuracy is not None else self.rougeL

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("option_probs")
        return {**d, "main": self.main}


def option_probs(res: ResidentModel, instances: Sequence[Instance], *, description: str | None = None, adapter_names=None) -> list[list[float]]:
    """Softmax over each instance's options of their log-likelihoods (length-unnormalised)."""
    import torch

    scores = res.score([i.input for i in instances], [i.options for i in instances], description=description, adapter_names=adapter_names)
    return [torch.softmax(torch.tensor(s), 0).tolist() for s in scores]


def score_instances(
    res: ResidentModel,
    instances: Sequence[Instance],
    *,
    description: str | None = None,
    max_new_tokens: int = 16,
    adapter_names: Sequence[str | None] | None = None,
    generate: bool | None = None,
) -> TaskScore:
    """Score the currently active adapter (or per-row adapter_names) on instances.

    generate=None: generated-text metrics only for free-form tasks, log-likelihood accuracy only for
    multiple choice (generation is the slow part on a CPU); True/False force generation on/off.
    """
    mc = all(i.options for i in instances)
    rl = em = acc = probs = None
    if generate or (generate is None and not mc):
        answers = res.answer([i.input for i in instances], description=description, max_new_tokens=max_new_tokens, adapter_names=adapter_names)
        rl = sum(rouge_l(a, i.targets) for a, i in zip(answers, instances)) / len(instances)
        em = sum(exact_match(a, i.targets) for a, i in zip(answers, instances)) / len(instances)
    if mc:
        probs = option_probs(res, instances, description=description, adapter_names=adapter_names)
        acc = sum(i.options[max(range(len(p)), key=p.__getitem__)] in i.targets for p, i in zip(probs, instances)) / len(instances)
    return TaskScore(rl, em, acc, len(instances), probs)
