"""Scoring a model (base or with an adapter) on a task's instances.

Every task gets ROUGE-L and exact match on greedy answers (the SNI standard). Multiple-choice tasks
also get accuracy by log-likelihood over their options: a 135M base rarely answers in the task's label
words, so generated-text metrics alone would mistake format for skill. On request, the content metric
`nll`: the teacher-forced negative log-likelihood per token of the reference answer, which no answer
format can hide (an adapter that only teaches the format moves it little).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from hypergen.base import ResidentModel
from hypergen.lora import LoraWeights
from hypergen.tasks import Instance, exact_match, rouge_l


@dataclass
class TaskScore:
    rougeL: float | None  # mean ROUGE-L F, 0..1; None when answers were not generated
    exact_match: float | None  # mean, 0..1
    accuracy: float | None  # log-likelihood accuracy over options, 0..1; None when not multiple choice
    n: int
    nll: float | None = None  # nats per reference-answer token (lower is better); None when not asked for
    option_probs: list[list[float]] | None = field(default=None, repr=False)  # per instance, multiple choice only
    answers: list[str] | None = field(default=None, repr=False)  # the greedy answers, when generated

    @property
    def main(self) -> float:
        """The headline number: accuracy for multiple choice, ROUGE-L otherwise."""
        return self.accuracy if self.accuracy is not None else self.rougeL

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("option_probs")
        d.pop("answers")
        return {**d, "main": self.main}


def option_probs(res: ResidentModel, instances: Sequence[Instance], *, description: str | None = None, adapter_names=None) -> list[list[float]]:
    """Softmax over each instance's options of their log-likelihoods (length-unnormalised)."""
    return _softmax(res.score([i.input for i in instances], [i.options for i in instances], description=description, adapter_names=adapter_names))


def _softmax(scores: list[list[float]]) -> list[list[float]]:
    import torch

    return [torch.softmax(torch.tensor(s), 0).tolist() for s in scores]


def reference_nll(res: ResidentModel, instances: Sequence[Instance], *, description: str | None = None, adapter_names=None, option_scores: list[list[float]] | None = None) -> float:
    """Teacher-forced NLL per token of each instance's reference answer (targets[0]) and the end-of-turn
    token after its prompt, averaged over all those tokens: the loss experts train and validate on
    (hypergen.data.answer_loss), through res.score so per-row adapters and the shared prompt prefill
    come with it. option_scores: log-likelihoods already scored for the options (reused where the
    reference is one of them)."""
    logp = [None] * len(instances)
    if option_scores is not None:
        for k, (i, s) in enumerate(zip(instances, option_scores)):
            if i.targets[0] in i.options:
                logp[k] = s[i.options.index(i.targets[0])]
    rest = [k for k, v in enumerate(logp) if v is None]
    if rest:
        rows = [adapter_names[k] for k in rest] if adapter_names is not None else None
        scored = res.score([instances[k].input for k in rest], [[instances[k].targets[0]] for k in rest], description=description, adapter_names=rows)
        for k, s in zip(rest, scored):
            logp[k] = s[0]
    return _nll(res.tokenizer, instances, logp)


def _nll(tok, instances: Sequence[Instance], logp: list[float]) -> float:
    """Nats per token of the references, whose log-likelihoods (answer + end of turn) are logp."""
    tokens = sum(len(tok(i.targets[0], add_special_tokens=False)["input_ids"]) + 1 for i in instances)  # + end of turn
    return -sum(logp) / tokens


def score_instances(
    res: ResidentModel,
    instances: Sequence[Instance],
    *,
    description: str | None = None,
    max_new_tokens: int = 16,
    adapter_names: Sequence[str | None] | None = None,
    generate: bool | None = None,
    options: bool = True,
    nll: bool = False,
) -> TaskScore:
    """Score the currently active adapter (or per-row adapter_names) on instances.

    generate=None: generated-text metrics only for free-form tasks, log-likelihood accuracy only for
    multiple choice (generation is the slow part on a CPU); True/False force generation on/off.
    options=False skips the option scoring of multiple-choice tasks; nll=True adds the content metric.
    """
    mc = options and all(i.options for i in instances)
    answers = scores = None
    if generate or (generate is None and not mc):
        answers = res.answer([i.input for i in instances], description=description, max_new_tokens=max_new_tokens, adapter_names=adapter_names)
    if mc:
        scores = res.score([i.input for i in instances], [i.options for i in instances], description=description, adapter_names=adapter_names)
    content = reference_nll(res, instances, description=description, adapter_names=adapter_names, option_scores=scores) if nll else None
    return _task_score(instances, answers, scores, content)


def _task_score(instances: Sequence[Instance], answers: list[str] | None, scores: list[list[float]] | None, nll: float | None) -> TaskScore:
    """The metrics of greedy answers (or None) and option log-likelihoods (or None: not multiple choice)."""
    n = len(instances)
    rl = em = acc = probs = None
    if answers is not None:
        rl = sum(rouge_l(a, i.targets) for a, i in zip(answers, instances)) / n
        em = sum(exact_match(a, i.targets) for a, i in zip(answers, instances)) / n
    if scores is not None:
        probs = _softmax(scores)
        acc = sum(i.options[max(range(len(p)), key=p.__getitem__)] in i.targets for p, i in zip(probs, instances)) / n
    return TaskScore(rl, em, acc, n, nll=nll, option_probs=probs, answers=answers)


@dataclass
class Run:
    """One adapter and prompt on a list of instances: what score_instances scores after an activation."""

    instances: Sequence[Instance]
    adapter: LoraWeights | None = None  # None: the plain base
    description: str | None = None  # put in the prompt (None: none)


def score_runs(
    res: ResidentModel,
    runs: Sequence[Run],
    *,
    max_new_tokens: int = 16,
    generate: bool | None = None,
    options: bool = True,
    nll: bool = False,
    rows: int = 32,
) -> list[TaskScore]:
    """score_instances of many runs at once, one TaskScore per run (the same within float error): every
    run's instances go through per-row adapters (hypergen.rowlora), `rows` at a time, and one prefill of
    each prompt serves its greedy answer, its options and its reference answer
    (ResidentModel.answer_and_score). generate / options / nll as in score_instances."""
    plan = []  # per run: (multiple choice, generate)
    for r in runs:
        mc = options and all(i.options for i in r.instances)
        plan.append((mc, bool(generate or (generate is None and not mc))))
    got: dict[tuple[int, int], tuple] = {}  # (run, instance) -> (answer, candidate log-likelihoods)
    for gen in (True, False):  # greedy answers take a decoding budget; the others none
        flat = [(k, j) for k, (r, (_, g)) in enumerate(zip(runs, plan)) if g == gen for j in range(len(r.instances))]
        if not flat:
            continue
        cands = []
        for k, j in flat:
            i, mc = runs[k].instances[j], plan[k][0]
            # a reference outside the options is scored after them
            cands.append((list(i.options) if mc else []) + ([i.targets[0]] if nll and not (mc and i.targets[0] in i.options) else []))
        answers, scores = res.answer_and_score(
            [runs[k].instances[j].input for k, j in flat], cands, descriptions=[runs[k].description for k, _ in flat],
            max_new_tokens=max_new_tokens if gen else 0, adapters=[runs[k].adapter for k, _ in flat], batch_size=rows,
        )
        for n, kj in enumerate(flat):
            got[kj] = (answers[n] if answers is not None else None, scores[n])
    out = []
    for k, (r, (mc, gen)) in enumerate(zip(runs, plan)):
        insts = r.instances
        said = [got[k, j] for j in range(len(insts))]
        scores = [s[: len(i.options)] for (_, s), i in zip(said, insts)] if mc else None
        content = None
        if nll:
            logp = [s[i.options.index(i.targets[0])] if mc and i.targets[0] in i.options else s[-1] for (_, s), i in zip(said, insts)]
            content = _nll(res.tokenizer, insts, logp)
        out.append(_task_score(insts, [a for a, _ in said] if gen else None, scores, content))
    return out
