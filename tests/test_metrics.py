"""hypergen.tasks.metrics against values worked out by hand."""

import pytest

from hypergen.tasks import exact_match, macro_average, normalize_answer, rouge_l


@pytest.mark.parametrize(
    "text, normalized",
    [
        ("The  Cat!", "cat"),
        ("An apple, a day.", "apple day"),
        ("theory", "theory"),  # "the" only as a whole word
        ("  Yes.\n", "yes"),
    ],
)
def test_normalize_answer(text, normalized):
    assert normalize_answer(text) == normalized


@pytest.mark.parametrize(
    "prediction, references, expected",
    [
        ("the cat", ["a dog", "Cat."], 1.0),
        ("cat", "dog", 0.0),
        ("cats", ["cat"], 0.0),
        ("", [""], 1.0),
    ],
)
def test_exact_match(prediction, references, expected):
    assert exact_match(prediction, references) == expected


@pytest.mark.parametrize(
    "prediction, references, expected",
    [
        # LCS "the cat on the mat" = 5 of 6 tokens each way: P = R = F = 5/6.
        ("the cat sat on the mat", "the cat is on the mat", 5 / 6),
        # LCS "a c" = 2: P = 2/4, R = 2/2, F = 2PR/(P+R) = 2/3.
        ("a b c d", "a c", 2 / 3),
        # Best over references; punctuation and case are separators only.
        ("Hello, World!", ["goodbye", "hello world"], 1.0),
        ("x", ["y"], 0.0),
        ("", ["y"], 0.0),
        # No stemmer: "runs" and "run" differ.
        ("he runs", "he run", 0.5),
    ],
)
def test_rouge_l(prediction, references, expected):
    assert rouge_l(prediction, references) == pytest.approx(expected)


def test_macro_average_weighs_tasks_equally():
    assert macro_average({"a": 1.0, "b": 0.0, "c": 0.5}) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        macro_average({})
