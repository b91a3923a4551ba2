"""SFT on tasks, not experts: the descriptions/suite task sources, validation families and their errors."""

from __future__ import annotations

import json

import pytest
import torch

from hypergen.errors import HypergenError
from hypergen.generators.sft import prepare_sft
from hypergen.generators.train import TrainConfig
from hypergen.paths import REPO_ROOT
from hypergen.tasks import load_suite
from hypergen.text import FakeEncoder

DEMO = str(REPO_ROOT / "data" / "demo" / "demo.jsonl")
WORDS = {
    "antonyms": ["Give the opposite word.", "Antonym of the word.", "Say the word meaning the reverse.", "Opposites: answer with one word."],
    "review_sentiment": ["Is the review positive or negative?", "Classify the review.", "Sentiment of a product review.", "Say Positive or Negative."],
    "reverse_words": ["Reverse the words.", "Last word first.", "Write the sentence backwards by words.", "Flip the word order."],
    "uppercase": ["Capitalise the word.", "Write it in capitals.", "Upper case, please.", "Shout the word in capital letters."],
}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Prepared tasks are cached under HYPERGEN_HOME: each test starts with none, and the user's cache is left alone."""
    monkeypatch.setenv("HYPERGEN_HOME", str(tmp_path / "home"))


def write(path, tasks, heldout=None):
    path.write_text(json.dumps({"version": 1, "tasks": {n: [{"text": t, "source": "own"} for t in ds] for n, ds in tasks.items()},
                                "heldout": {n: [{"text": t, "source": "eval"} for t in ds] for n, ds in (heldout or {}).items()}}))
    return str(path)


def cfg(path, **kw) -> TrainConfig:
    return TrainConfig(**{"objective": "sft", "tasks": "descriptions", "task_suite": DEMO, "descriptions": path, "val_families": 1,
                          "min_examples": 10, "sft_max_tokens": 96, "logger": "none", "progress": False, **kw})


def test_descriptions_source_trains_on_every_described_task(tiny_bank, tiny_zoo, resident, tmp_path):
    path = write(tmp_path / "d.json", WORDS)
    data = prepare_sft(tiny_bank, tiny_zoo, resident, cfg(path), encoder=FakeEncoder())
    assert len(data.tasks) == 3 and len(data.val) == 1
    assert {t.name for t in data.tasks + data.val} == set(WORDS) and data.val[0].family not in {t.family for t in data.tasks}
    suite = load_suite(DEMO)
    for t in data.tasks + data.val:
        torch.testing.assert_close(t.cond, FakeEncoder().encode(WORDS[t.name]))  # every variant, embedded
        assert t.expert == tiny_bank.names.index(t.name)  # a zoo task keeps its expert (sg leaves it out of its prior)
        n = len(suite.get(t.name).instances)
        assert len(t.val) == min(20, n // 5) and len(t.train) + len(t.val) + data.n_skipped <= n  # the fixed validation slice apart
    again = prepare_sft(tiny_bank, tiny_zoo, resident, cfg(path), encoder=FakeEncoder())
    assert [t.name for t in again.val] == [t.name for t in data.val] and again.fingerprint == data.fingerprint  # chosen deterministically


def test_the_shipped_file_covers_hundreds_of_tasks_from_almost_100_families():
    from hypergen.tasks.descriptions import load_descriptions

    names = list(load_descriptions())
    assert len(names) >= 250 and len({n.split("/")[0] for n in names}) >= 98  # 100 before the two same-source families left (split.SAME_SOURCE)


def test_suite_source_needs_descriptions_for_every_task(tiny_bank, tiny_zoo, resident, tmp_path):
    path = write(tmp_path / "d.json", {k: v for k, v in WORDS.items() if k != "uppercase"})
    with pytest.raises(HypergenError, match="descriptions missing for task 'uppercase'"):
        prepare_sft(tiny_bank, tiny_zoo, resident, cfg(path, tasks="suite"), encoder=FakeEncoder())


def test_no_usable_tasks_is_a_clear_error(tiny_bank, tiny_zoo, resident, tmp_path):
    with pytest.raises(HypergenError, match="No usable tasks for SFT.*--min-examples"):
        prepare_sft(tiny_bank, tiny_zoo, resident, cfg(write(tmp_path / "d.json", WORDS), min_examples=1000), encoder=FakeEncoder())


def test_heldout_families_never_train(tiny_bank, tiny_zoo, resident, tmp_path):
    path = write(tmp_path / "d.json", WORDS, heldout={"antonyms/other": ["An evaluation description."]})
    with pytest.raises(HypergenError, match="held-out families.*antonyms"):
        prepare_sft(tiny_bank, tiny_zoo, resident, cfg(path), encoder=FakeEncoder())


def test_bad_settings_are_refused(tiny_bank, tiny_zoo, resident, tmp_path):
    with pytest.raises(HypergenError, match="--tasks must be zoo, descriptions or suite"):
        TrainConfig(tasks="all")
    for bad, message in [({"log_every": 0}, "log_every must be >= 1"), ({"lr": -1e-3}, "--lr and --weight-decay must be >= 0"),
                         ({"weight_decay": -1.0}, "--lr and --weight-decay must be >= 0")]:  # they failed on the first step, after the data was read
        with pytest.raises(HypergenError, match=message):
            TrainConfig(**bad)
    with pytest.raises(HypergenError, match="--val-families 4 needs"):
        prepare_sft(tiny_bank, tiny_zoo, resident, cfg(write(tmp_path / "d.json", WORDS), val_families=4), encoder=FakeEncoder())
    with pytest.raises(HypergenError, match="bank uses 'fake'"):
        prepare_sft(tiny_bank, tiny_zoo, resident, cfg(write(tmp_path / "e.json", WORDS)), encoder=type("E", (), {"name": "other", "encode": None})())


def test_max_tasks_keeps_a_nested_seeded_subset_with_the_same_validation(tiny_bank, tiny_zoo, resident, tmp_path):
    from hypergen.generators.sft import first_tasks

    path = write(tmp_path / "d.json", WORDS)
    full = prepare_sft(tiny_bank, tiny_zoo, resident, cfg(path), encoder=FakeEncoder())
    for n in (1, 2):
        some = prepare_sft(tiny_bank, tiny_zoo, resident, cfg(path, max_tasks=n), encoder=FakeEncoder())
        assert len(some.tasks) == n and [t.name for t in some.val] == [t.name for t in full.val]  # validation unchanged
        assert some.fingerprint != full.fingerprint  # another run
    assert len(prepare_sft(tiny_bank, tiny_zoo, resident, cfg(path, max_tasks=99), encoder=FakeEncoder()).tasks) == 3  # more than there are: all
    with pytest.raises(HypergenError, match="--max-tasks must be >= 1"):
        cfg(path, max_tasks=0)
    # nested and ordered, for every size, and another seed draws other tasks
    tasks = [type("T", (), {"name": f"t{i}"})() for i in range(40)]
    names = lambda n, seed=0: [t.name for t in first_tasks(tasks, n, seed)]  # noqa: E731
    for small, large in [(5, 13), (13, 30), (30, 40)]:
        assert set(names(small)) < set(names(large)) and names(small) == sorted(names(small), key=lambda s: int(s[1:]))
    assert names(10) != names(10, seed=1) and names(10) != names(40)[:10]  # drawn, not the first ten


def test_validation_families_take_their_related_families_with_them():
    """modified_arithmetic may validate only with arithmetic (a near copy by name, split.family_groups)."""
    from hypergen.tasks.sft_data import SftTask, split_families

    tasks = [SftTask(n, ["d"], [], []) for n in ["arithmetic/a", "modified_arithmetic/b"] + [f"f{i}" for i in range(40)]]
    picked = 0
    for seed in range(100):
        train, val = split_families(tasks, 3, seed)
        fams = {t.family for t in val}
        assert ("arithmetic" in fams) == ("modified_arithmetic" in fams) and not fams & {t.family for t in train}
        picked += "arithmetic" in fams
    assert 0 < picked < 100
