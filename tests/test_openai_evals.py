"""The OpenAI evals reader (a fake `evals` wheel written here) and training on it beside another suite."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace

import pytest

from hypergen.errors import HypergenError
from hypergen.generators.sft import cache_key, extra_descriptions_path, prepare_sft
from hypergen.generators.train import TrainConfig
from hypergen.tasks import load_suite
from hypergen.tasks.openai_evals import read_samples, registry
from hypergen.text import FakeEncoder

WORDS = ["sun", "moon", "star", "tree", "rock", "bird", "fish", "lamp", "door", "road", "milk", "rain"]
UPPER_SYSTEM = "Write the given word in capital letters. Answer with the word only."


def chat(system: str | None, user: str, **extra) -> list[dict]:
    return ([{"role": "system", "content": system, **extra}] if system else []) + [{"role": "user", "content": user}]


def yaml_entry(name: str, description: str, cls: str, samples: str) -> str:
    return (f"{name}:\n  id: {name}.dev.v0\n  description: {description}\n  metrics: [accuracy]\n"
            f"{name}.dev.v0:\n  class: {cls}\n  args:\n    samples_jsonl: {samples}\n")


def samples_file(rows: list[dict]) -> str:
    return "\n".join(json.dumps(r) for r in rows) + "\n"


@pytest.fixture()
def wheel(tmp_path):
    """An evals wheel in miniature: a task with a shared system message (plus one sample with another, one
    few-shot sample and one written as a demonstration), a file with two evals (one without system
    messages, one whose system message changes per sample), and a model-graded eval (not read)."""
    upper = [{"input": chat(UPPER_SYSTEM, w), "ideal": w.upper()} for w in WORDS * 3]
    upper += [{"input": chat("Something else.", "sky"), "ideal": "SKY"},
              {"input": chat(UPPER_SYSTEM, "a") + [{"role": "assistant", "content": "A"}, {"role": "user", "content": "b"}], "ideal": "B"},
              {"input": chat("a", "b", name="example_user") + chat(None, "c"), "ideal": "C"},
              {"input": chat(UPPER_SYSTEM, "sun"), "ideal": "SUN"}]  # an exact duplicate
    reverse = [{"input": f"Reverse: {a} {b}", "ideal": [f"{b} {a}", f"{b}, {a}"]} for a, b in zip(WORDS, WORDS[1:] + WORDS[:1])]
    length = [{"input": chat(f"Count the letters, then add {i}.", w), "ideal": str(len(w) + i)} for i, w in enumerate(WORDS)]
    path = tmp_path / "evals-3.0.1.post1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evals/registry/evals/toy-upper.yaml", yaml_entry("toy-upper", "Test capitals.", "evals.elsuite.basic.match:Match", "upper/samples.jsonl"))
        z.writestr("evals/registry/evals/toy-pair.yaml",
                   yaml_entry("toy-reverse", "Reverse two words.", "evals.elsuite.basic.includes:Includes", "pair/reverse.jsonl")
                   + yaml_entry("toy-length", "Letter arithmetic.", "evals.elsuite.basic.fuzzy_match:FuzzyMatch", "pair/length.jsonl"))
        z.writestr("evals/registry/evals/graded.yaml", yaml_entry("graded", "Judged by a model.", "evals.elsuite.modelgraded.classify:ModelBasedClassify", "upper/samples.jsonl"))
        z.writestr("evals/registry/evals/broken.yaml", "a: [unclosed\n")
        z.writestr("evals/registry/data/upper/samples.jsonl", samples_file(upper) + "not json\n")
        z.writestr("evals/registry/data/pair/reverse.jsonl", samples_file(reverse))
        z.writestr("evals/registry/data/pair/length.jsonl", samples_file(length))
    return path


def test_reader_moves_the_shared_instruction_into_the_description(wheel):
    suite = load_suite(wheel)  # found by its format, as any suite
    assert sorted(suite.names()) == ["oai_toy_pair/toy_length", "oai_toy_pair/toy_reverse", "oai_toy_upper"]
    upper = suite.get("oai_toy_upper")
    assert upper.descriptions == [f"Test capitals. {UPPER_SYSTEM}", UPPER_SYSTEM, "Test capitals."]
    assert upper.family == "oai_toy_upper" and upper.source == "openai_evals" and upper.categories == ["toy-upper"]
    # plain inputs; the sample with another system message, the few-shot ones and the duplicates are out
    assert sorted(i.input for i in upper.instances) == sorted(WORDS)
    assert all(i.targets == [i.input.upper()] for i in upper.instances)


def test_reader_keeps_a_changing_system_message_in_the_input_and_every_ideal(wheel):
    suite = load_suite(wheel)
    length = suite.get("oai_toy_pair/toy_length")
    assert length.descriptions == ["Letter arithmetic."] and length.family == "oai_toy_pair"
    assert length.instances[2].input == "Count the letters, then add 2.\n\nstar" and length.instances[2].targets == ["6"]
    reverse = suite.get("oai_toy_pair/toy_reverse")
    assert reverse.instances[0].input == "Reverse: sun moon" and reverse.instances[0].targets == ["moon sun", "moon, sun"]


def test_a_missing_wheel_says_how_to_fetch_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERGEN_HOME", str(tmp_path))
    with pytest.raises(HypergenError, match="hypergen data fetch openai_evals"):
        load_suite("openai_evals")


def test_registry_reads_only_exact_answer_evals_and_samples_up_to_a_limit(wheel):
    assert {e["eval"] for e in registry(wheel).values()} == {"toy-upper", "toy-reverse", "toy-length"}
    assert len(read_samples(wheel, "evals/registry/data/upper/samples.jsonl", limit=5)) == 5


def test_extra_suite_trains_beside_the_first_and_keys_its_own_cache(wheel, tmp_path, monkeypatch, tiny_bank, tiny_zoo, resident):
    monkeypatch.setenv("HYPERGEN_HOME", str(tmp_path / "home"))
    from hypergen.paths import REPO_ROOT

    def descriptions(path, tasks):
        path.write_text(json.dumps({"version": 1, "tasks": {n: [{"text": f"{n} {i}", "source": "own"} for i in range(4)] for n in tasks}, "heldout": {}}))
        return str(path)

    first = descriptions(tmp_path / "demo.json", ["antonyms", "uppercase"])
    extra = descriptions(tmp_path / "oai.json", ["oai_toy_upper", "oai_toy_pair/toy_length"])
    cfg = TrainConfig(objective="sft", tasks="descriptions", task_suite=str(REPO_ROOT / "data" / "demo" / "demo.jsonl"), descriptions=first,
                      val_families=1, min_examples=10, sft_max_tokens=96, logger="none", progress=False)
    both = replace(cfg, extra_suite=str(wheel), extra_descriptions=extra)
    data = prepare_sft(tiny_bank, tiny_zoo, resident, both, encoder=FakeEncoder())
    assert sorted(t.name for t in data.tasks + data.val) == ["antonyms", "oai_toy_pair/toy_length", "oai_toy_upper", "uppercase"]
    assert len({cache_key(cfg, resident, "fake"), cache_key(both, resident, "fake")}) == 2


def test_extra_suite_settings_are_checked():
    with pytest.raises(HypergenError, match="--extra-suite"):
        TrainConfig(objective="sft", tasks="descriptions", extra_descriptions="d.json")
    with pytest.raises(HypergenError, match="--tasks descriptions"):
        TrainConfig(objective="sft", tasks="zoo", extra_suite="openai_evals")


def test_extra_suite_without_descriptions_says_which_file(tmp_path, tiny_bank, tiny_zoo, resident, wheel):
    cfg = TrainConfig(objective="sft", tasks="descriptions", extra_suite=str(wheel), extra_descriptions=str(tmp_path / "none.json"), logger="none")
    with pytest.raises(HypergenError, match="none.json"):
        extra_descriptions_path(cfg)


def test_committed_file_has_8_descriptions_a_task_and_nothing_held_out():
    """data/descriptions/openai_evals.json (data/make_openai_evals_descriptions.py): every training task has
    8+ descriptions, none of a family related to a held-out BIG-bench one, none an evaluation description."""
    from hypergen.paths import shipped_data
    from hypergen.tasks import load_split
    from hypergen.tasks.core import norm_text
    from hypergen.tasks.descriptions import load_descriptions, load_eval_descriptions
    from hypergen.tasks.split import near_family

    got = load_descriptions(shipped_data("descriptions/openai_evals.json"), minimum=8)
    assert len(got) >= 200 and len({n.split("/", 1)[0] for n in got}) >= 150
    held = {n.split("/", 1)[0] for n in load_split().heldout}
    assert not [n for n in got if near_family(n.split("/", 1)[0], held) or near_family(n.split("/", 1)[0].removeprefix("oai_"), held)]
    evals = {norm_text(d.text) for ds in load_eval_descriptions().values() for d in ds}
    assert not [d.text for ds in got.values() for d in ds if norm_text(d.text) in evals]


def test_long_description_warnings_become_one_line(capsys):
    """Preparing ~10,000 descriptions (many of the OpenAI evals' instructions are longer than MiniLM's window)
    says so once, not once per description; any other warning still reaches the caller."""
    import warnings

    from hypergen.text import LONG, one_line_for_long_descriptions

    with pytest.warns(DeprecationWarning, match="other"), one_line_for_long_descriptions():
        for n in (300, 400, 500):
            warnings.warn(f"Description is {n} tokens; {LONG} 256 and ignores the rest.", stacklevel=1)
        warnings.warn("other", DeprecationWarning, stacklevel=1)
    assert capsys.readouterr().err == "3 descriptions are longer than the encoder's window; it reads the start of each.\n"
    with pytest.raises(ValueError), one_line_for_long_descriptions():
        warnings.warn(f"Description is 300 tokens; {LONG} 256.", stacklevel=1)
        raise ValueError("the body failed")
    assert capsys.readouterr().err.startswith("1 description is longer")
