"""Calibration of multiple-choice predictions, and Bayesian model averaging over sampled adapters.

Every metric takes per-instance option probabilities `probs` (a list of lists, ragged allowed: each
instance may have its own number of options, or an (n, K) tensor) and `labels`: per instance the index
of its correct option, or the list of them where several are correct (BIG-bench ties; 22 of the 572
held-out multiple-choice instances). With p_i the probability vector of instance i, Y_i its correct
set, conf_i = max_k p_ik and correct_i = [argmax_k p_ik in Y_i] (as the accuracy column counts it):

    ECE     = sum_b (|B_b| / n) * | mean_{i in B_b} correct_i - mean_{i in B_b} conf_i |
              over `bins` equal-width confidence bins (0, 1/bins], (1/bins, 2/bins], ... (conf 0 in the first)
    Brier   = (1/n) sum_i [(1 - sum_{k in Y_i} p_ik)^2 + sum_{k not in Y_i} p_ik^2]
              (multi-class, the correct options as one class; 0 best, 2 worst)
    entropy = (1/n) sum_i -sum_k p_ik log p_ik                        (nats; 0 log 0 = 0)
    accuracy with the option prior removed (`batch_calibrated_accuracy`): the pick argmax_o p_i(o) / prior(o),
              prior(o) = mean_i p_i(o), on a task whose questions share one set of options

`bayesian_calibration` samples S adapters from a generator, scores the options under each, averages
the probabilities (the Bayesian model average, BMA) and reports these metrics plus the mutual
information H(BMA) - mean_s H(p_s): the part of the predictive entropy that comes from disagreement
between sampled adapters (epistemic uncertainty), zero when every sample predicts the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hypergen.errors import HypergenError


def _rows(probs) -> list[torch.Tensor]:
    rows = [torch.as_tensor(p, dtype=torch.float64) for p in probs]
    if not rows:
        raise HypergenError("No predictions to score: give at least one instance's option probabilities.")
    for i, r in enumerate(rows):
        if r.dim() != 1 or r.numel() < 1:
            raise HypergenError(f"Instance {i}: option probabilities must be a non-empty 1-D list; got shape {tuple(r.shape)}.")
        if (r < 0).any() or abs(float(r.sum()) - 1) > 1e-3:
            raise HypergenError(f"Instance {i}: option probabilities must be >= 0 and sum to 1 (got sum {float(r.sum()):.4f}); pass softmax outputs.")
    return rows


def _labels(labels, rows) -> list[set[int]]:
    """Each instance's correct option indices (a label is an index or a list of them)."""
    labels = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels)
    if len(labels) != len(rows):
        raise HypergenError(f"{len(rows)} probability rows but {len(labels)} labels; give one label per instance.")
    out = []
    for i, (y, r) in enumerate(zip(labels, rows)):
        ys = {int(k) for k in (y if isinstance(y, list | tuple) else [y])}
        if not ys or not all(0 <= k < r.numel() for k in ys):
            raise HypergenError(f"Instance {i}: label {y} is not an option index (it has {r.numel()} options).")
        out.append(ys)
    return out


def ece(probs, labels, bins: int = 10) -> float:
    """Expected calibration error of the top prediction (see module doc), in [0, 1]."""
    if bins < 1:
        raise HypergenError(f"bins must be >= 1; got {bins}.")
    rows = _rows(probs)
    ys = _labels(labels, rows)
    conf = torch.stack([r.max() for r in rows])
    correct = torch.tensor([float(int(r.argmax()) in y) for r, y in zip(rows, ys)], dtype=torch.float64)
    which = (torch.ceil(conf * bins) - 1).clamp(0, bins - 1).long()  # bin b holds (b/bins, (b+1)/bins]
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            total += float(m.sum()) / len(rows) * abs(float(correct[m].mean() - conf[m].mean()))
    return total


def brier(probs, labels) -> float:
    """Multi-class Brier score (see module doc), in [0, 2]."""
    rows = _rows(probs)
    ys = _labels(labels, rows)
    total = 0.0
    for r, y in zip(rows, ys):
        right = torch.zeros_like(r, dtype=torch.bool)
        right[list(y)] = True
        total += (1 - float(r[right].sum())) ** 2 + float((r[~right] ** 2).sum())
    return total / len(rows)


def entropies(probs) -> list[float]:
    """Per-instance predictive entropy in nats."""
    return [float(-(r * torch.log(r.clamp_min(1e-300))).sum()) for r in _rows(probs)]


def predictive_entropy(probs) -> float:
    """Mean predictive entropy in nats (log K for uniform over K options, 0 for a one-hot)."""
    e = entropies(probs)
    return sum(e) / len(e)


def accuracy(probs, labels) -> float:
    rows = _rows(probs)
    ys = _labels(labels, rows)
    return sum(int(r.argmax()) in y for r, y in zip(rows, ys)) / len(rows)


def batch_calibrated_accuracy(probs, labels, options: Sequence[Sequence[str]]) -> float:
    """Accuracy with each option's prior over the task's questions divided out (Batch Calibration, Zhou et
    al., ICLR 2024): with p_i(o) the probability of option o on question i, the prior
    prior(o) = mean_i p_i(o), and the pick argmax_o p_i(o) / prior(o). A model that puts every question
    on one option ("No" 20 of 20) is then judged by how its confidence moves from question to question,
    not by that bias. No label is used to fit it.
    options: each question's option texts, in its probabilities' order. The prior is of an option's text,
    so it exists only where every question has the same options (a label set: yes/no, true/false, ...;
    their order may differ); elsewhere this is the plain accuracy. Options whose ratios tie (a method that
    gives every question the same probabilities) are decided by the raw probability: such a method keeps
    its plain accuracy."""
    rows = _rows(probs)
    ys = _labels(labels, rows)
    if len(options) != len(rows) or any(len(o) != r.numel() for o, r in zip(options, rows)):
        raise HypergenError("Give each instance's option texts, one per probability, in the same order.")
    prior: dict[str, float] = {}  # stays empty (every prior 1: the plain pick) without one shared set of options
    if len({frozenset(o) for o in options}) == 1 and len(set(options[0])) == len(options[0]):
        for o, r in zip(options, rows):
            for text, p in zip(o, r.tolist()):
                prior[text] = prior.get(text, 0.0) + p / len(rows)
    right = 0
    for o, r, y in zip(options, rows, ys):
        score = r.clamp_min(1e-300).log() - torch.tensor([prior.get(t, 1.0) for t in o], dtype=torch.float64).clamp_min(1e-300).log()
        tied = (score >= score.max() - 1e-9).nonzero().flatten().tolist()
        right += max(tied, key=lambda k: float(r[k])) in y
    return right / len(rows)


@dataclass
class CalibrationReport:
    """What `bayesian_calibration` measured. probs: the BMA option probabilities per instance."""

    probs: list[list[float]]
    labels: list[int | list[int]]
    samples: int
    accuracy: float
    ece: float
    brier: float
    entropy: float  # mean entropy of the BMA (total predictive uncertainty), nats
    mutual_information: float  # entropy minus mean per-sample entropy (epistemic part), nats; 0 for S=1

    def summary(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(self).items() if k not in ("probs", "labels")} | {"n": len(self.labels)}


def option_labels(instances) -> list[int | list[int]]:
    """Each instance's correct option: its index, or the list of indices where several are correct."""
    out = []
    for i in instances:
        if not i.options:
            raise HypergenError(f"Calibration needs multiple-choice instances (with options); {i.input[:40]!r} has none.")
        hit = [k for k, o in enumerate(i.options) if o in i.targets]
        if not hit:
            raise HypergenError(f"Instance {i.input[:40]!r}: none of its options {i.options} is a target {i.targets}.")
        out.append(hit[0] if len(hit) == 1 else hit)
    return out


def bayesian_calibration(
    resident,
    generator,
    cond: torch.Tensor,
    instances: Sequence,
    *,
    samples: int = 8,
    seed: int | None = None,
    description: str | None = None,
    bins: int = 10,
    slot: str = "calibration",
) -> CalibrationReport:
    """Sample `samples` adapters from `generator` for the description embedding `cond` (D,), score
    every instance's options by log-likelihood under each (in adapter slot `slot` of `resident`),
    average the option probabilities over samples (BMA) and measure calibration.

    samples=1 scores the generator's point estimate (for ABMLL: the posterior mean). Works for any
    family; for a deterministic one all samples are equal and the mutual information is 0. The
    resident's active adapter is restored afterwards.
    """
    from hypergen.scoring import option_probs

    labels = option_labels(instances)
    res = generator.generate(cond, samples=samples, seed=seed)
    adapters = res.samples or [res.weights]
    prev = resident.active
    per_sample = []  # S x n x K_i
    try:
        for w in adapters:
            resident.activate(w, name=slot)
            per_sample.append(option_probs(resident, instances, description=description))
    finally:
        if prev is None:
            resident.deactivate()
        else:
            resident.activate(prev)
    bma = [torch.tensor([s[i] for s in per_sample], dtype=torch.float64).mean(0) for i in range(len(instances))]  # n x (K_i,)
    mean_h = sum(predictive_entropy(s) for s in per_sample) / len(per_sample)
    h = predictive_entropy(bma)
    return CalibrationReport(
        probs=[b.tolist() for b in bma],
        labels=labels,
        samples=len(adapters),
        accuracy=accuracy(bma, labels),
        ece=ece(bma, labels, bins),
        brier=brier(bma, labels),
        entropy=h,
        mutual_information=max(0.0, h - mean_h),
    )


__all__ = ["CalibrationReport", "accuracy", "batch_calibrated_accuracy", "bayesian_calibration", "brier", "ece", "entropies", "option_labels", "predictive_entropy"]
