"""Bad arguments to api.generate / api.answer and the CLI: a HypergenError naming the argument (a one-line
error and exit 1 on the command line), checked before anything is loaded, written or activated."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from hypergen import api
from hypergen.cli import app
from hypergen.errors import HypergenError

ANTONYM = "Give the antonym of the word: the word with the opposite meaning."


@pytest.fixture()
def common(tiny_zoo, tiny_path):
    return dict(zoo_path=str(tiny_zoo.root), base=str(tiny_path), encoder_name="fake", device="cpu")


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((123,), {}, "description must be a string; got int 123"),
        ((None,), {}, "description must be a string; got NoneType"),
        ((ANTONYM,), {"samples": "3"}, "samples must be an integer; got str '3'"),
        ((ANTONYM,), {"samples": 2.0}, "samples must be an integer; got float"),
        ((ANTONYM,), {"samples": 0}, "samples must be >= 1; got 0"),
        ((ANTONYM,), {"samples": 10_000}, f"samples must be at most {api.MAX_SAMPLES}"),
        ((ANTONYM,), {"inputs": [123]}, "inputs[0] must be a string; got int 123"),
        ((ANTONYM,), {"inputs": ["hot", "  "]}, "Empty input: inputs[1] is blank"),
        ((ANTONYM,), {"inputs": 5}, "inputs must be a string or a list of strings; got int"),
        ((ANTONYM,), {"inputs": b"hot"}, "inputs must be a string or a list of strings; got bytes"),
        ((ANTONYM,), {"seed": 2**70}, "seed must be at most 9223372036854775807"),
        ((ANTONYM,), {"seed": -1}, "seed must be >= 0; got -1"),
        ((ANTONYM,), {"seed": "7"}, "seed must be an integer"),
        ((ANTONYM,), {"max_new_tokens": 0}, "max_new_tokens must be >= 1; got 0"),
        ((ANTONYM,), {"max_new_tokens": -5}, "max_new_tokens must be >= 1; got -5"),
        (("Give the antonym \udcff\udcfe",), {}, "description is not valid UTF-8"),
        ((ANTONYM,), {"inputs": ["h\udcffot"]}, "inputs[0] is not valid UTF-8"),
    ],
)
def test_generate_refuses_bad_arguments_by_name(args, kwargs, message, common, tmp_path):
    with pytest.raises(HypergenError) as e:
        api.generate(*args, "nearest", out=tmp_path / "ad", **{**common, **kwargs})
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "ad").exists()


@pytest.mark.parametrize(
    "texts, kwargs, message",
    [
        (123, {}, "texts must be a string or a list of strings; got int"),
        (["hi", None], {}, "texts[1] must be a string; got NoneType"),
        ([], {}, "Empty input"),
        ("hi", {"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
        ("hi", {"description": 7}, "description must be a string; got int"),
        ("h\udcffi", {}, "texts[0] is not valid UTF-8"),
    ],
)
def test_answer_refuses_bad_arguments_by_name(texts, kwargs, message, tiny_path):
    with pytest.raises(HypergenError, match="^" + message.replace("[", r"\[").replace("]", r"\]")):
        api.answer(texts, base=str(tiny_path), device="cpu", **kwargs)


def test_a_bare_string_is_one_input(common):
    one = api.generate(ANTONYM, "nearest", inputs="hot", max_new_tokens=3, **common)
    listed = api.generate(ANTONYM, "nearest", inputs=["hot"], max_new_tokens=3, **common)
    assert len(one.answers) == 1 and one.answers == listed.answers
    assert api.answer("hot", base=common["base"], device="cpu", max_new_tokens=3) == api.answer(["hot"], base=common["base"], device="cpu", max_new_tokens=3)


@pytest.mark.parametrize(
    "description, warned",
    [
        ("将每条推文标记为讽刺或非讽刺。", True),  # Chinese
        ("صنّف كل تغريدة على أنها ساخرة أو غير ساخرة.", True),  # Arabic
        ("Определите, является ли отзыв о товаре положительным.", True),  # Cyrillic
        ("Donnez l'antonyme du mot : été, hiver, ça, déjà.", False),  # French is Latin script: not judged
        ("Translate the Russian word 'привет' into English, one word per answer.", False),  # an English description quoting one
        ("12345 !!! ???", False),  # no letters at all
    ],
)
def test_non_latin_descriptions_are_flagged_as_outside_the_encoders_language(description, warned, common):
    res = api.generate(description, "nearest", activate=False, **{k: v for k, v in common.items() if k != "base"})
    notes = [w for w in res.warnings if "English only" in w]
    assert bool(notes) == warned, res.warnings
    if warned:
        assert "all-MiniLM-L6-v2" in notes[0] and "not Latin script" in notes[0]


def _cli(*args):
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--samples", "65"], f"samples must be at most {api.MAX_SAMPLES}"),
        (["--samples", "10000"], f"samples must be at most {api.MAX_SAMPLES}"),
        (["--seed", str(2**70)], "seed must be at most"),
        (["--seed", "-3"], "seed must be >= 0"),
    ],
)
def test_cli_generate_bad_numbers_are_one_line_errors(extra, message, tiny_zoo, tmp_path):
    r = _cli("generate", ANTONYM, "--generator", "nearest", "--zoo", str(tiny_zoo.root), "--encoder", "fake", "--out", str(tmp_path / "ad"), *extra)
    assert r.exit_code == 1, r.output
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and message in r.stderr
    assert r.stdout == "" and "Traceback" not in r.output and not (tmp_path / "ad").exists()


@pytest.mark.parametrize("command", [["generate", b"\xff\xfe"], ["answer", b"caf\xe9"], ["generate", "ok", "--zoo", b"/tmp/\xff"]])
def test_invalid_utf8_in_argv_is_a_one_line_error(command, tmp_path):
    exe = sys.executable.replace("python", "hypergen") if sys.executable.endswith("python") else "hypergen"
    p = subprocess.run([exe, *command], capture_output=True, cwd=tmp_path)
    err = p.stderr.decode()
    assert p.returncode == 1, err
    assert err.startswith("error: argument ") and "not valid UTF-8" in err and err.count("\n") == 1, err
    assert p.stdout == b"" and list(tmp_path.iterdir()) == []


def test_force_is_passed_to_save_and_a_failed_save_changes_nothing(common, tmp_path):
    folder = tmp_path / "ad"
    r = _cli("generate", ANTONYM, "--generator", "nearest", "--zoo", common["zoo_path"], "--encoder", "fake", "--out", str(folder))
    assert r.exit_code == 0, r.output
    first = (folder / "adapter_model.safetensors").read_bytes()
    other = "Rewrite the given word in capital letters."
    r = _cli("generate", other, "--generator", "nearest", "--zoo", common["zoo_path"], "--encoder", "fake", "--out", str(folder))
    assert r.exit_code == 1 and "holds an adapter" in r.stderr and "--force" in r.stderr and r.stderr.count("\n") == 1
    assert (folder / "adapter_model.safetensors").read_bytes() == first
    r = _cli("generate", other, "--generator", "nearest", "--zoo", common["zoo_path"], "--encoder", "fake", "--out", str(folder), "--force")
    assert r.exit_code == 0, r.output
    assert (folder / "adapter_model.safetensors").read_bytes() != first

    # the API: a refused save leaves the resident model's active adapter as it was
    model = api.resident(common["base"], "cpu")
    before = api.generate(ANTONYM, "nearest", inputs=["hot"], max_new_tokens=4, **common)
    active, weights = model.active, model.weights("generated")
    (tmp_path / "file").write_text("mine")
    for out in (folder, tmp_path / "file"):
        with pytest.raises(HypergenError):
            api.generate(other, "nearest", out=out, inputs=["hot"], max_new_tokens=4, **common)
    assert model.active == active and all(torch.equal(a, b) for p in weights.modules for a, b in zip(weights.modules[p], model.weights("generated").modules[p]))
    assert (tmp_path / "file").read_text() == "mine"
    assert api.generate(ANTONYM, "nearest", out=folder, force=True, inputs=["hot"], max_new_tokens=4, **common).answers == before.answers
