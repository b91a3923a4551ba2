"""Calibration metrics against hand-computed values, and Bayesian model averaging on the tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from hypergen.errors import HypergenError
from hypergen.eval.calibration import accuracy, bayesian_calibration, brier, ece, entropies, predictive_entropy
from hypergen.text import FakeEncoder

# conf 0.9 / 0.6 / 0.8 / 0.5, correct 1 / 0 / 1 / 1 (the last instance has three options)
PROBS = [[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.5, 0.3, 0.2]]
LABELS = [0, 1, 1, 0]


def test_ece_by_hand():
    # 10 bins: each instance alone in its bin -> mean |correct - conf| = (0.1 + 0.6 + 0.2 + 0.5) / 4
    assert ece(PROBS, LABELS) == pytest.approx(0.35)
    # one bin: |mean correct - mean conf| = |0.75 - 0.7|
    assert ece(PROBS, LABELS, bins=1) == pytest.approx(0.05)
    # 2 bins: (0, .5] holds conf 0.5 (correct): |1 - .5|; (.5, 1] holds .9 .6 .8: |2/3 - 2.3/3|
    assert ece(PROBS, LABELS, bins=2) == pytest.approx(0.25 * 0.5 + 0.75 * abs(2 / 3 - 2.3 / 3))
    assert ece([[1.0, 0.0]] * 3, [0, 0, 0]) == 0.0


def test_brier_and_entropy_by_hand():
    # (.1^2+.1^2) + (.6^2+.6^2) + (.2^2+.2^2) + (.5^2+.3^2+.2^2) = .02 + .72 + .08 + .38
    assert brier(PROBS, LABELS) == pytest.approx(1.2 / 4)
    want = [-sum(p * math.log(p) for p in row) for row in PROBS]
    assert entropies(PROBS) == pytest.approx(want)
    assert predictive_entropy(PROBS) == pytest.approx(sum(want) / 4)
    assert predictive_entropy([[0.25] * 4]) == pytest.approx(math.log(4))
    assert predictive_entropy([[1.0, 0.0]]) == 0.0  # 0 log 0 = 0
    assert accuracy(PROBS, LABELS) == 0.75


def test_several_correct_options_count_as_one_class():
    """A BIG-bench tie: options 1 and 2 both correct. The top option 2 is right (as the accuracy column
    counts it), and the Brier score takes p(correct) = 0.3 + 0.5."""
    probs, labels = [[0.2, 0.3, 0.5]], [[1, 2]]
    assert accuracy(probs, labels) == 1.0 and ece(probs, labels, bins=1) == pytest.approx(0.5)  # |1 - 0.5|
    assert brier(probs, labels) == pytest.approx((1 - 0.8) ** 2 + 0.2**2)
    assert brier(PROBS, [[y] for y in LABELS]) == pytest.approx(brier(PROBS, LABELS))  # a list of one is the index
    with pytest.raises(HypergenError, match="not an option index"):
        brier(probs, [[]])


def test_option_labels_keep_every_correct_option():
    from hypergen.eval.calibration import option_labels
    from hypergen.tasks import Instance

    one, two = Instance("q", ["b"], ["a", "b", "c"]), Instance("q", ["a", "c"], ["a", "b", "c"])
    assert option_labels([one, two]) == [1, [0, 2]]


def test_tensors_work_like_lists():
    t = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    assert ece(t, torch.tensor([0, 1, 1])) == pytest.approx(ece(PROBS[:3], LABELS[:3]))
    assert brier(t, [0, 1, 1]) == pytest.approx(brier(PROBS[:3], LABELS[:3]))


@pytest.mark.parametrize(
    ("probs", "labels", "message"),
    [([[0.5, 0.2]], [0], "sum to 1"), ([[0.5, 0.5]], [2], "not an option index"), ([[0.5, 0.5]], [0, 1], "one label per instance"), ([], [], "No predictions")],
)
def test_bad_inputs_are_refused(probs, labels, message):
    with pytest.raises(HypergenError, match=message):
        brier(probs, labels)


def test_batch_calibration_removes_the_bias_to_one_option():
    """Every question answered "No" (raw accuracy 0.5), but p(No) is lower on the two "Yes" questions:
    with the prior p(No) = 0.75 divided out, the picks follow the content (1.0). The option order may
    differ from question to question: the prior is of the option's text."""
    from hypergen.eval.calibration import batch_calibrated_accuracy

    probs = [[0.9, 0.1], [0.1, 0.9], [0.4, 0.6], [0.6, 0.4]]  # p(No) = 0.9, 0.9, 0.6, 0.6
    options = [["No", "Yes"], ["Yes", "No"], ["Yes", "No"], ["No", "Yes"]]
    labels = [0, 1, 0, 1]  # No, No, Yes, Yes
    assert accuracy(probs, labels) == 0.5
    # priors: No = (0.9 + 0.9 + 0.6 + 0.6) / 4 = 0.75, Yes = 0.25; question 3: 0.4 / 0.25 > 0.6 / 0.75
    assert batch_calibrated_accuracy(probs, labels, options) == 1.0
    assert batch_calibrated_accuracy(probs, [[0, 1]] * 4, options) == 1.0  # several correct: any of them
    # no shared set of options: there is no option prior, so the plain accuracy
    assert batch_calibrated_accuracy(PROBS, LABELS, [["a", "b"], ["c", "d"], ["a", "b"], ["a", "b", "c"]]) == accuracy(PROBS, LABELS)
    assert batch_calibrated_accuracy([[0.7, 0.3]], [1], [["x", "x"]]) == 0.0  # a repeated text is not a label set
    same = [[0.7, 0.3]] * 4  # the same probabilities for every question: every ratio ties, the raw pick decides
    assert batch_calibrated_accuracy(same, [1, 1, 0, 1], [["a", "b"]] * 4) == accuracy(same, [1, 1, 0, 1]) == 0.25
    with pytest.raises(HypergenError, match="option texts"):
        batch_calibrated_accuracy(probs, labels, options[:3])


def test_the_summary_reports_the_calibrated_accuracy_and_its_controls(tmp_path):
    """protocol.calibrated derives accuracy_bc from a row's stored probabilities and its instances'
    options (long rows and generation rows stay as they are); summarize puts it in the headline and
    pairs it in the controls."""
    from hypergen.eval.protocol import EvalConfig, calibrated
    from hypergen.eval.stats import summarize
    from hypergen.tasks import Instance

    test = [Instance("q", ["Yes" if y else "No"], ["No", "Yes"]) for y in (0, 0, 1, 1)]
    row = {"task": "f/t", "method": "t2l", "seed": 0, "accuracy": 0.5, "main": 0.5, "nll": 1.0, "multiple_choice": True,
           "option_probs": [[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]], "labels": [0, 0, 1, 1]}
    got = calibrated(row, test)
    assert got["accuracy_bc"] == 1.0 and "accuracy_bc" not in row  # derived, the stored row untouched
    assert calibrated({**row, "long": True}, test) == {**row, "long": True} and calibrated({"answers": ["x"]}, test) == {"answers": ["x"]}
    assert calibrated(row, test[:3]) == row  # probabilities that do not fit the instances: left without it, not a failed run
    other = calibrated({**row, "method": "t2l@other", "option_probs": [[0.9, 0.1], [0.6, 0.4], [0.9, 0.1], [0.6, 0.4]]}, test)
    assert other["accuracy_bc"] == 0.5
    s = summarize([got, other], EvalConfig(split="all", bootstrap=50))
    assert s["methods"]["t2l"]["mc_accuracy_bc_family"] == 1.0 and s["methods"]["t2l"]["mc_accuracy"] == 0.5
    assert s["controls"]["t2l"]["accuracy_bc_aligned_minus_other_family"] == 0.5


@pytest.fixture()
def review_instances():
    from hypergen.paths import REPO_ROOT
    from hypergen.tasks import load_suite

    return load_suite(REPO_ROOT / "data/demo/demo.jsonl").get("review_sentiment").instances[:4]


def test_bayesian_model_average_on_the_tiny_model(tiny_bank, resident, review_instances):
    from hypergen.scoring import option_probs
    from hypergen.generators import build

    torch.manual_seed(0)
    g = build("abmll", tiny_bank, init_post_var=1.0)  # wide posterior: samples visibly disagree
    cond = FakeEncoder().encode(["Decide whether the short product review is positive or negative."])[0]
    rep = bayesian_calibration(resident, g, cond, review_instances, samples=3, seed=4)
    assert rep.samples == 3 and len(rep.probs) == 4 and resident.active is None
    assert all(sum(p) == pytest.approx(1) for p in rep.probs)
    assert rep.labels == [i.options.index(i.targets[0]) for i in review_instances]
    assert 0 <= rep.ece <= 1 and 0 <= rep.brier <= 2 and rep.mutual_information >= 0
    # the BMA is the mean over the sampled adapters of each one's option probabilities
    per = []
    for w in g.generate(cond, samples=3, seed=4).samples:
        resident.activate(w, name="check")
        per.append(option_probs(resident, review_instances))
    want = torch.tensor(per).mean(0)
    torch.testing.assert_close(torch.tensor(rep.probs, dtype=torch.float32), want, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(torch.tensor(per[0]), torch.tensor(per[1]))  # the samples really differ
    assert rep.ece == pytest.approx(ece(want, rep.labels), abs=1e-4)
    mean_h = sum(predictive_entropy(p) for p in per) / len(per)  # H(BMA) - mean H(sample): disagreement, > 0 here
    assert rep.mutual_information == pytest.approx(predictive_entropy(want) - mean_h, abs=1e-5) and rep.mutual_information > 0
    one = bayesian_calibration(resident, g, cond, review_instances, samples=1)
    assert one.samples == 1 and one.mutual_information == 0.0


def test_free_text_instances_are_refused(tiny_bank, resident):
    from hypergen.generators import build
    from hypergen.tasks import Instance

    with pytest.raises(HypergenError, match="multiple-choice"):
        bayesian_calibration(resident, build("abmll", tiny_bank), FakeEncoder().encode(["x"])[0], [Instance("hot", ["cold"])])
