"""Training descriptions: the committed data/descriptions files, their loader, and the script that
writes them (run here on a small fake BIG-bench tree, never on the real cache)."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict

import pytest

from hypergen.errors import HypergenError
from hypergen.paths import REPO_ROOT
from hypergen.tasks import load_split, load_suite
from hypergen.tasks.core import norm_text
from hypergen.tasks.descriptions import (
    DEFAULT_PATH,
    MIN_DESCRIPTIONS,
    Description,
    load_descriptions,
    load_eval_descriptions,
    load_variants,
)
from hypergen.tasks.split import Split, SplitCriteria, divide_instances

# The committed file's numbers, as data/README.md states them.
TRAINING_TASKS = 797
TASKS_WITH_8 = 797
SOURCES = {
    "reader", "own", "subtask_first", "parent", "instruction", "keywords", "prefixes", "example",
    "examples", "format", "title", "title_keywords", "answers", "wording", "wording_example",
}  # fmt: skip


def _script():
    spec = importlib.util.spec_from_file_location("make_descriptions", REPO_ROOT / "data/make_descriptions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the committed file ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def committed():
    return json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))


def test_committed_file_loads_with_enough_descriptions_per_task(committed):
    tasks = load_descriptions()
    assert len(tasks) == TRAINING_TASKS == committed["counts"]["training_tasks"]
    assert sum(len(v) >= 8 for v in tasks.values()) == TASKS_WITH_8 >= 250
    assert set(committed["short"]) == {n for n, v in tasks.items() if len(v) < 8}
    for name, descriptions in tasks.items():
        assert len(descriptions) >= MIN_DESCRIPTIONS, name
        assert {d.source for d in descriptions} <= SOURCES, name
        keys = [norm_text(d.text) for d in descriptions]
        assert len(set(keys)) == len(keys), f"{name} repeats a description"
    assert DEFAULT_PATH.stat().st_size < 2_000_000


def test_committed_training_tasks_hold_the_zoo_and_nothing_held_out():
    split = load_split()
    names = set(load_descriptions())
    assert set(split.zoo) <= names | {parent for parent, _ in load_variants().values()}  # tense trains as its 12 wordings
    for name in names:
        assert name not in split.heldout
        assert split.may_train(name), name  # no held-out family, nor one related to it by name or by source data


def test_committed_eval_descriptions_are_never_training_descriptions():
    evals = load_eval_descriptions()
    assert set(evals) == set(load_split().heldout)
    assert all(d.source == "eval" for v in evals.values() for d in v)
    training = {norm_text(d.text) for v in load_descriptions().values() for d in v}
    assert not {norm_text(d.text) for v in evals.values() for d in v} & training


def test_committed_variant_tasks_replace_their_parents():
    """Issue 17.4: tense trains as one task per wording, each described with its wording."""
    variants, tasks = load_variants(), load_descriptions()
    assert len(variants) == 53 and set(variants) <= set(tasks)
    for name, (parent, wording) in variants.items():
        assert name.startswith(parent + "/") and parent not in tasks, name
        assert all(norm_text(wording.rstrip(":")) in norm_text(d.text) for d in tasks[name] if d.source == "wording"), name
    tense = {n: w for n, (p, w) in variants.items() if p == "tense"}
    assert len(tense) == 12 and tense["tense/change_tense_to_simple_past"] == "Change tense to SIMPLE PAST:"
    assert all(d.text.startswith("Change tense to SIMPLE PAST.") for d in tasks["tense/change_tense_to_simple_past"])


def test_committed_templated_analysis_finds_tense():
    data = json.loads((DEFAULT_PATH.parent / "templated.json").read_text(encoding="utf-8"))
    (tense,) = [t for t in data["tasks"] if t["task"] == "tense"]
    assert tense["position"] == "trailing" and tense["side"] == "train"
    assert "Change tense to SIMPLE PAST:" in {v["text"] for v in tense["variants"]}
    assert sum(v["count"] for v in tense["variants"]) == tense["covered"] >= 0.8 * tense["inputs"]


# --- the loader ------------------------------------------------------------------------------------


def write_file(path, tasks, heldout=None, version=1):
    as_json = lambda m: {n: [{"text": t, "source": s} for s, t in v] for n, v in m.items()}  # noqa: E731
    path.write_text(json.dumps({"version": version, "tasks": as_json(tasks), "heldout": as_json(heldout or {})}))
    return path


FIVE = [("own", f"Describe it, way {i}.") for i in range(5)]


def test_loader_returns_frozen_descriptions_in_the_asked_order(tmp_path):
    path = write_file(tmp_path / "d.json", {"a": FIVE, "b": FIVE[:4]}, {"h": [("eval", "Held out.")]})
    got = load_descriptions(path, tasks=["b", "a"])
    assert list(got) == ["b", "a"]
    assert got["a"][0] == Description("Describe it, way 0.", "own")
    with pytest.raises(AttributeError):
        got["a"][0].text = "x"
    assert load_eval_descriptions(path) == {"h": [Description("Held out.", "eval")]}


@pytest.mark.parametrize(
    "content, tasks, message",
    [
        (None, None, "No descriptions file"),
        ("{not json", None, "not valid JSON"),
        ('{"version": 1, "tasks": []}', None, "not a descriptions file"),
        ('{"version": 9, "tasks": {}, "heldout": {}}', None, "version 9"),
        ('{"version": 1, "tasks": {"a": [{"text": "x"}]}, "heldout": {}}', None, "malformed"),
        ('{"version": 1, "tasks": {"a": [{"text": " ", "source": "own"}]}, "heldout": {}}', None, "empty description"),
        ("ok", ["missing"], "descriptions missing for task 'missing'"),
        ("ok", ["h"], "held out"),
        ("ok", ["few"], "fewer than 4"),
    ],
)
def test_loader_refuses_with_what_to_do(tmp_path, content, tasks, message):
    path = tmp_path / "d.json"
    if content == "ok":
        write_file(path, {"a": FIVE, "few": FIVE[:2]}, {"h": [("eval", "Held out.")]})
    elif content is not None:
        path.write_text(content)
    with pytest.raises(HypergenError, match=message) as e:
        load_descriptions(path, tasks=tasks)
    assert "make_descriptions.py" in str(e.value) or message == "held out"


# --- the script, on a fake BIG-bench tree ------------------------------------------------------------

LABELS = ["positive", "negative"]


def write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def tense_examples(n):
    verbs = ["walk", "jump", "play", "cook", "clean", "paint", "call", "visit", "watch", "open"]
    out = []
    for i in range(n):
        verb, future = verbs[i % 10], i % 2 == 0
        out.append({
            "input": f"Person {i} will {verb} today. Change tense to {'FUTURE' if future else 'PAST'}:",
            "target": f"Person {i} will {verb} today." if future else f"Person {i} {verb}ed today.",
        })  # fmt: skip
    return out


def sentiment_examples(n, topic):
    return [
        {"input": f"The {topic} number {i} was {'great' if i % 2 else 'awful'}.",
         "target_scores": {lab: int(lab == LABELS[i % 2 == 0]) for lab in LABELS}}
        for i in range(n)
    ]  # fmt: skip


@pytest.fixture
def fake_bigbench(tmp_path):
    """alpha: 40 examples (training only); beta/*: zoo subtasks; gamma: held out; gamma_extra: a
    related family (excluded); tiny: too few examples; delta: described exactly as gamma is."""
    root = tmp_path / "bigbench"
    write_json(root / "alpha/task.json", {
        "description": "Change the tense of a sentence.",
        "keywords": ["syntax", "paraphrase", "zero-shot"],
        "example_input_prefix": "\nSentence: ", "example_output_prefix": "\nRewritten: ",
        "task_prefix": "Rewrite the sentence in the tense it asks for.\n",
        "examples": tense_examples(40),
    })  # fmt: skip
    write_json(root / "beta/task.json", {"description": "Judge the sentiment of short reviews"})
    for sub in ("hotels_one", "movies_two"):
        write_json(root / f"beta/{sub}/task.json", {
            "description": "Reviews in one domain",
            "keywords": ["emotional understanding", "multiple choice"],
            "examples": sentiment_examples(90, sub.split("_")[0]),
        })  # fmt: skip
    gamma = {"description": "Say whether the claim holds.", "examples": sentiment_examples(90, "claim")}
    write_json(root / "gamma/task.json", gamma)
    write_json(root / "delta/task.json", dict(gamma, keywords=["logical reasoning"]))
    related = {"description": "Claims again.", "examples": sentiment_examples(40, "claim")}
    write_json(root / "gamma_extra/task.json", related)
    write_json(root / "tiny/task.json", {"description": "Too small.", "examples": sentiment_examples(10, "tiny")})
    suite = load_suite(root)
    sizes = {t.name: len(t.instances) for t in suite if len(t.instances) >= 80}
    criteria = SplitCriteria()
    split = Split(
        version=1, seed=0, zoo=["beta/hotels_one", "beta/movies_two", "delta"], heldout=["gamma"],
        instances={n: divide_instances(s, n, criteria) for n, s in sizes.items()}, sizes=sizes,
        criteria=asdict(criteria), counts={"heldout_families": ["gamma"]},
    )  # fmt: skip
    split_path = tmp_path / "split.json"
    split.save(split_path)
    return root, split_path


def test_script_is_deterministic_and_keeps_held_out_text_out_of_training(fake_bigbench, tmp_path):
    root, split_path = fake_bigbench
    script = _script()
    for out in ("a", "b"):
        script.main(["--root", str(root), "--split", str(split_path), "--out", str(tmp_path / out)])
    for name in ("bigbench.json", "templated.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()

    path = tmp_path / "a" / "bigbench.json"
    tasks = load_descriptions(path, minimum=1)
    # alpha's inputs end in one of two instructions: it trains as one task per wording, not as itself
    past, future = "alpha/change_tense_to_past", "alpha/change_tense_to_future"
    assert list(tasks) == [future, past, "beta/hotels_one", "beta/movies_two", "delta"]  # not gamma*, tiny
    assert load_variants(path) == {future: ("alpha", "Change tense to FUTURE:"), past: ("alpha", "Change tense to PAST:")}
    assert len(tasks[past]) >= 8 and len(tasks["beta/hotels_one"]) >= 8
    alpha = {d.source: d.text for d in tasks[past]}
    assert all(t.startswith("Change tense to PAST.") for t in alpha.values()) and alpha["wording"] == "Change tense to PAST."
    assert alpha["prefixes"].endswith("Inputs start with 'Sentence:'; the answer follows 'Rewritten:'.")
    assert "A task about syntax and paraphrase: " in alpha["keywords"]  # "zero-shot" is no topic
    assert alpha["instruction"] == "Change tense to PAST. Rewrite the sentence in the tense it asks for."
    assert " -> " in alpha["example"] and "ed today" in alpha["example"] and "Change tense" not in alpha["example"].split(" e.g. ")[1]
    assert alpha["title"] == "Change tense to PAST. Alpha."
    beta = {d.source: d.text for d in tasks["beta/hotels_one"]}
    assert beta["parent"] == "Judge the sentiment of short reviews. Subtask: hotels one."
    assert beta["subtask_first"].startswith("Hotels one. Reviews in one domain.")
    assert "answer with one of: negative, positive" in beta["format"]
    # zoo tasks draw their examples from the split's train part only: no test input in a description
    split = load_split(split_path)
    test_inputs = [t.instances[i].input.split("\n")[0] for t in [load_suite(root).get("beta/hotels_one")]
                   for i in split.instances["beta/hotels_one"]["test"]]  # fmt: skip
    assert not any(f"{i}" in d.text for i in test_inputs for d in tasks["beta/hotels_one"])

    evals = load_eval_descriptions(path)
    assert list(evals) == ["gamma"]
    # delta is described exactly as gamma: its reader and own texts are dropped, the rest stays
    assert {norm_text(d.text) for d in tasks["delta"]}.isdisjoint({norm_text(evals["gamma"][0].text)})
    assert json.loads(path.read_text())["counts"]["dropped_as_heldout_text"] >= 1

    templated = json.loads((tmp_path / "a" / "templated.json").read_text())["tasks"]
    (alpha_t,) = [t for t in templated if t["task"] == "alpha"]
    assert alpha_t["position"] == "trailing"
    assert alpha_t["variants"] == [
        {"text": "Change tense to FUTURE:", "count": 20},
        {"text": "Change tense to PAST:", "count": 20},
    ]
    assert not [t for t in templated if t["task"].startswith("beta")]  # reviews share no instruction


def test_variant_tasks_train_on_their_parents_inputs_without_the_wording(fake_bigbench, tmp_path):
    """sft_data builds a variant task from its parent's instances: those holding the wording, cut out;
    20 instances are enough for a variant (alpha itself would need --min-examples 30 to count)."""
    from hypergen.tasks.sft_data import described_tasks
    from hypergen.tasks.templated import strip_instruction

    root, split_path = fake_bigbench
    _script().main(["--root", str(root), "--split", str(split_path), "--out", str(tmp_path / "d")])
    suite = load_suite(root)
    tasks, small = described_tasks(suite, tmp_path / "d" / "bigbench.json", load_split(split_path), min_examples=30)
    by = {t.name: t for t in tasks}
    assert small == 0 and {"alpha/change_tense_to_past", "alpha/change_tense_to_future"} <= set(by) and "alpha" not in by
    parent = suite.get("alpha").instances
    for wording, name in (("Change tense to PAST:", "alpha/change_tense_to_past"), ("Change tense to FUTURE:", "alpha/change_tense_to_future")):
        expected = {strip_instruction(i.input, wording): i.targets for i in parent if wording in i.input}
        got = by[name].train + by[name].val
        assert len(got) == 20 and by[name].val and by[name].family == "alpha"
        assert all("Change tense" not in i.input and expected[i.input] == i.targets for i in got)


@pytest.mark.parametrize(
    "text, wording, out",
    [
        ("She walks. Change tense to PAST:", "Change tense to PAST:", "She walks."),
        ("Q: She walks.  Change tense\nto PAST:\nA:", "Change tense to PAST:", "Q: She walks.\nA:"),
        ("What word is shown below?\n  ##\n #  #", "What word is shown below?", "  ##\n #  #"),  # the art keeps its indentation
        ("Which is sarcastic? (a) x (b) y", "Which is sarcastic?", "(a) x (b) y"),
        ("Change tense to PAST:", "Change tense to PAST:", None),  # nothing left
        ("Y and Y", "Y", None),  # not exactly once
        ("She walks.", "Change tense to PAST:", None),
    ],
)
def test_strip_instruction(text, wording, out):
    from hypergen.tasks.templated import strip_instruction

    assert strip_instruction(text, wording) == out


def test_variant_names_keep_the_family():
    from hypergen.tasks.templated import variant_name

    assert variant_name("tense", "Change tense to SIMPLE PAST:") == "tense/change_tense_to_simple_past"
    assert variant_name("common_morpheme", "Quel est le morphème commun:") == "common_morpheme/quel_est_le_morpheme_commun"
    kannada = variant_name("kannada", "ನಾನು ಯಾರು?")
    assert kannada.startswith("kannada/wording_") and kannada == variant_name("kannada", "ನಾನು ಯಾರು?")
