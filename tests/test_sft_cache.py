"""The on-disk cache of prepared sft tasks: a second prepare with the same inputs loads it, any changed
input rebuilds it, and what it loads equals what a fresh prepare makes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from hypergen.generators import sft as sft_mod
from hypergen.errors import HypergenError
from hypergen.generators.sft import cache_key, prepare_sft
from hypergen.generators.train import TrainConfig
from hypergen.paths import REPO_ROOT
from hypergen.text import FakeEncoder

WORDS = {
    "antonyms": ["Give the opposite word.", "Antonym of the word.", "Say the word meaning the reverse.", "Opposites: answer with one word."],
    "review_sentiment": ["Is the review positive or negative?", "Classify the review.", "Sentiment of a product review.", "Say Positive or Negative."],
    "reverse_words": ["Reverse the words.", "Last word first.", "Write the sentence backwards by words.", "Flip the word order."],
    "uppercase": ["Capitalise the word.", "Write it in capitals.", "Upper case, please.", "Shout the word in capital letters."],
}


class Missed(FakeEncoder):
    """The bank's encoder by name, but a prepare that reaches it has missed the cache."""

    def encode(self, texts):
        raise AssertionError("the cache was missed")


@pytest.fixture()
def inputs(tmp_path, monkeypatch):
    """A private cache root, a descriptions file and a copy of the demo suite, all editable."""
    monkeypatch.setenv("HYPERGEN_HOME", str(tmp_path / "home"))
    suite = tmp_path / "demo.jsonl"
    shutil.copy(REPO_ROOT / "data" / "demo" / "demo.jsonl", suite)
    return SimpleNamespace(descriptions=write(tmp_path / "d.json", WORDS), suite=suite, cache=tmp_path / "home" / "cache" / "sft")


def write(path, tasks):
    path.write_text(json.dumps({"version": 1, "tasks": {n: [{"text": t, "source": "own"} for t in ds] for n, ds in tasks.items()}, "heldout": {}}))
    return str(path)


def cfg(inputs, **kw) -> TrainConfig:
    return TrainConfig(**{"objective": "sft", "tasks": "descriptions", "task_suite": str(inputs.suite), "descriptions": inputs.descriptions,
                          "val_families": 1, "min_examples": 10, "sft_max_tokens": 96, "logger": "none", "progress": False, **kw})


def assert_same(a, b):
    assert a.fingerprint == b.fingerprint and (a.n_truncated, a.n_skipped, a.n_small) == (b.n_truncated, b.n_skipped, b.n_small)
    assert (a.n_examples, a.max_tokens, a.bank_names, a.families) == (b.n_examples, b.max_tokens, b.bank_names, b.families)
    for x, y in zip(a.tasks + a.val, b.tasks + b.val, strict=True):
        assert (x.name, x.expert, x.descriptions, x.train_text, x.val_text) == (y.name, y.expert, y.descriptions, y.train_text, y.val_text)
        assert torch.equal(x.cond, y.cond) and x.cond.dtype == y.cond.dtype
        assert x.train == y.train and x.val == y.val and x.train and x.val  # tokens, labels and truncation flags


def test_a_second_prepare_loads_what_the_first_made(inputs, tiny_bank, tiny_zoo, resident):
    fresh = prepare_sft(tiny_bank, tiny_zoo, resident, cfg(inputs), encoder=FakeEncoder())
    files = list(inputs.cache.iterdir())
    assert [f.suffix for f in files] == [".pt"]  # one file under its key, no temporary left behind
    loaded = prepare_sft(tiny_bank, tiny_zoo, resident, cfg(inputs), encoder=Missed())
    assert_same(loaded, fresh)
    assert loaded.resident is resident and not any(p.requires_grad for p in resident.model.parameters())


def test_the_seed_and_validation_families_divide_the_cached_tasks(inputs, tiny_bank, tiny_zoo, resident, monkeypatch, tmp_path):
    """The cache holds the tasks before the validation families are chosen: another seed loads it and
    divides it as a prepare without any cache does."""
    prepare_sft(tiny_bank, tiny_zoo, resident, cfg(inputs), encoder=FakeEncoder())
    loaded = [prepare_sft(tiny_bank, tiny_zoo, resident, cfg(inputs, seed=s, val_families=n), encoder=Missed()) for s, n in [(1, 1), (2, 1), (0, 2)]]
    monkeypatch.setenv("HYPERGEN_HOME", str(tmp_path / "elsewhere"))
    for got, (s, n) in zip(loaded, [(1, 1), (2, 1), (0, 2)]):
        assert_same(got, prepare_sft(tiny_bank, tiny_zoo, resident, cfg(inputs, seed=s, val_families=n), encoder=FakeEncoder()))
    assert len({d.fingerprint for d in loaded}) > 1  # the seeds did choose other families


def change(inputs, what: str) -> dict:
    """Change one input of the prepared tasks; returns the TrainConfig fields to pass."""
    if what == "descriptions file content":
        write(Path(inputs.descriptions), {**WORDS, "uppercase": ["Capitalise the word.", "Write it in capitals.", "Upper case, please.", "Shout it."]})
    elif what == "suite file content":
        inputs.suite.write_text(inputs.suite.read_text().replace('"cold"', '"freezing"'))
    elif what == "another suite":
        return {"task_suite": str(shutil.copy(inputs.suite, inputs.suite.with_name("copy.jsonl")))}
    else:
        return {what: {"sft_max_tokens": 80, "min_examples": 11, "sft_max_train": 5, "tasks": "suite"}[what]}
    return {}


@pytest.mark.parametrize("what", ["sft_max_tokens", "min_examples", "sft_max_train", "tasks", "descriptions file content", "suite file content", "another suite"])
def test_any_changed_input_rebuilds(inputs, tiny_bank, tiny_zoo, resident, what):
    prepare_sft(tiny_bank, tiny_zoo, resident, cfg(inputs), encoder=FakeEncoder())
    kw = change(inputs, what)
    with pytest.raises(AssertionError, match="the cache was missed"):
        prepare_sft(tiny_bank, tiny_zoo, resident, cfg(inputs, **kw), encoder=Missed())


def test_the_key_covers_the_base_encoder_and_reader(inputs, resident, monkeypatch):
    c = cfg(inputs)
    key = cache_key(c, resident, "fake")
    assert cache_key(c, resident, "fake") == key
    assert cache_key(c, SimpleNamespace(name="other-base", path=resident.path, tokenizer=resident.tokenizer), "fake") != key
    assert cache_key(c, resident, "all-MiniLM-L6-v2") != key
    monkeypatch.setattr("hypergen.tasks.bigbench.READER_VERSION", 99)
    assert cache_key(c, resident, "fake") != key
    monkeypatch.undo()
    monkeypatch.setattr(sft_mod, "CACHE_VERSION", 99)
    assert cache_key(c, resident, "fake") != key


def test_an_unreadable_cache_file_is_rebuilt(inputs, tiny_bank, tiny_zoo, resident):
    fresh = prepare_sft(tiny_bank, tiny_zoo, resident, cfg(inputs), encoder=FakeEncoder())
    (path,) = inputs.cache.iterdir()
    path.write_bytes(path.read_bytes()[:100])  # what a crash mid-write would leave without the rename
    assert_same(prepare_sft(tiny_bank, tiny_zoo, resident, cfg(inputs), encoder=FakeEncoder()), fresh)
    assert_same(prepare_sft(tiny_bank, tiny_zoo, resident, cfg(inputs), encoder=Missed()), fresh)  # and written again


def test_a_prepared_file_trains_as_is_without_the_files_it_was_made_from(inputs, tiny_bank, tiny_zoo, resident, tmp_path):
    """--prepared FILE (e.g. carried to a lent GPU): the suite, the descriptions file and the cache are not needed."""
    fresh = prepare_sft(tiny_bank, tiny_zoo, resident, cfg(inputs), encoder=FakeEncoder())
    (made,) = inputs.cache.iterdir()
    carried = shutil.move(made, tmp_path / "carried.pt")
    inputs.suite.unlink()
    Path(inputs.descriptions).unlink()
    assert_same(prepare_sft(tiny_bank, tiny_zoo, resident, cfg(inputs), encoder=Missed(), prepared=carried), fresh)
    assert not inputs.cache.exists() or not any(inputs.cache.iterdir())  # used where it lies, nothing rebuilt


def edited(path: Path, edit) -> Path:
    data = torch.load(path, weights_only=True)
    edit(data)
    torch.save(data, path)
    return path


@pytest.mark.parametrize("what", ["base", "encoder", "settings", "second suite"])
def test_a_prepared_file_made_for_another_run_is_refused_naming_both(inputs, tiny_bank, tiny_zoo, resident, what):
    prepare_sft(tiny_bank, tiny_zoo, resident, cfg(inputs), encoder=FakeEncoder())
    (made,) = inputs.cache.iterdir()
    kw = {}
    if what == "base":
        edited(made, lambda d: d["inputs"]["tokenizer"].update(base="other-base"))
        theirs, ours = "'other-base'", repr(resident.name)
    elif what == "encoder":
        edited(made, lambda d: d["inputs"].update(encoder="all-MiniLM-L6-v2"))
        theirs, ours = "'all-MiniLM-L6-v2'", "'fake'"
    elif what == "settings":
        kw, theirs, ours = {"sft_max_tokens": 80}, "'sft_max_tokens': 96", "'sft_max_tokens': 80"
    else:
        kw, theirs, ours = {"extra_suite": "openai_evals"}, "None", "['openai_evals', '']"
    with pytest.raises(HypergenError, match=f"prepared with {what}") as e:
        prepare_sft(tiny_bank, tiny_zoo, resident, cfg(inputs, **kw), encoder=FakeEncoder(), prepared=made)
    assert theirs in str(e.value) and ours in str(e.value)


def test_a_prepared_file_that_cannot_be_used_is_refused_clearly(inputs, tiny_bank, tiny_zoo, resident, tmp_path):
    with pytest.raises(HypergenError, match="No prepared-tasks file"):
        prepare_sft(tiny_bank, tiny_zoo, resident, cfg(inputs), encoder=FakeEncoder(), prepared=tmp_path / "nothing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(HypergenError, match="not a readable prepared-tasks file"):
        prepare_sft(tiny_bank, tiny_zoo, resident, cfg(inputs), encoder=FakeEncoder(), prepared=tmp_path / "junk.pt")
    prepare_sft(tiny_bank, tiny_zoo, resident, cfg(inputs), encoder=FakeEncoder())
    (made,) = inputs.cache.iterdir()
    with pytest.raises(HypergenError, match="before prepared-tasks files recorded their inputs"):  # as the caches made before 2026-12-02
        prepare_sft(tiny_bank, tiny_zoo, resident, cfg(inputs), encoder=FakeEncoder(), prepared=edited(made, lambda d: d.pop("inputs")))
    with pytest.raises(HypergenError, match="zoo's tasks are read from the zoo"):
        prepare_sft(tiny_bank, tiny_zoo, resident, cfg(inputs, tasks="zoo"), encoder=FakeEncoder(), prepared=made)


def test_a_run_from_a_prepared_file_needs_no_encoder(inputs, tiny_zoo, tiny_path, tmp_path, monkeypatch):
    """The file holds the embeddings of its tasks' descriptions and of the zoo's (the bank's), so a run from it
    where it was carried (a lent GPU without MiniLM) builds the same bank and trains the same generator
    without loading the encoder; a zoo text it lacks loads the encoder then."""
    from hypergen import api
    from hypergen.generators.checkpoint import WEIGHTS_FILE
    from hypergen.generators.sft import prepared_encoder
    from safetensors.torch import load_file

    c = cfg(inputs, steps=2, batch_size=2, lr=3e-3, sft_max_train=4, accelerator="cpu")
    common = {"zoo_path": str(tiny_zoo.root), "encoder_name": "fake", "base": str(tiny_path)}
    api.train("t2l", c, out=tmp_path / "here", **common)
    (made,) = inputs.cache.iterdir()
    carried = shutil.move(made, tmp_path / "carried.pt")
    zoo_texts = [d for r in tiny_zoo.records() for d in r.descriptions]
    assert set(zoo_texts) - {d for ds in WORDS.values() for d in ds}  # the zoo's own texts are not among the tasks'

    loads = []
    monkeypatch.setattr(FakeEncoder, "encode", lambda self, texts: loads.append(texts) or pytest.fail("the encoder was used"))
    for var in ("HYPERGEN_HOME", "HYPERGEN_RUNS"):  # no cache, no run folder to resume: it trains again
        monkeypatch.setenv(var, str(tmp_path / "device" / var))
    api.train("t2l", c, out=tmp_path / "there", prepared=carried, **common)
    here, there = (load_file(tmp_path / d / WEIGHTS_FILE) for d in ("here", "there"))
    assert here.keys() == there.keys() and all(torch.equal(here[k], there[k]) for k in here)
    assert not loads

    monkeypatch.undo()
    encoded = []

    class Counting(FakeEncoder):  # the real encoder, recording every text it is asked for
        def encode(self, texts):
            encoded.extend(texts)
            return super().encode(texts)

    enc = prepared_encoder(carried, "fake", Counting)
    task_texts = [d for ds in WORDS.values() for d in ds]
    assert torch.equal(enc.encode(zoo_texts), FakeEncoder().encode(zoo_texts))
    assert torch.equal(enc.encode(task_texts), FakeEncoder().encode(task_texts))
    assert encoded == []  # every one from the file
    new = "A text no file holds."
    assert torch.equal(enc.encode([new, zoo_texts[0]]), FakeEncoder().encode([new, zoo_texts[0]]))  # loaded for it
    assert encoded == [new]  # that one only
    with pytest.raises(HypergenError, match="prepared with encoder 'fake'; this run has 'all-MiniLM-L6-v2'"):
        prepared_encoder(carried, "minilm", lambda: pytest.fail("no encoder for a refused file"))


def test_train_takes_a_prepared_file_only_for_the_sft_objective(tiny_zoo, tmp_path):
    from hypergen import api

    with pytest.raises(HypergenError, match="goes with --objective sft"):
        api.train("t2l", TrainConfig(steps=1, logger="none", progress=False), zoo_path=str(tiny_zoo.root), out=tmp_path / "g",
                  encoder_name="fake", prepared=tmp_path / "x.pt")
    assert not (tmp_path / "g").exists()
