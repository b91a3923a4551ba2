"""The CLI: thin, fast to start, one-line errors with non-zero exits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import random_lora
from typer.testing import CliRunner

from hypergen.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args))


def test_import_is_light():
    code = "import sys, hypergen, hypergen.cli; heavy = [m for m in ('torch', 'wandb', 'streamlit', 'transformers') if m in sys.modules]; print(heavy)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_info_json(tiny_path):
    r = run("info", "--json", "--base", str(tiny_path))
    assert r.exit_code == 0, r.output
    facts = json.loads(r.stdout)
    assert facts["base_model_path"] == str(tiny_path) and facts["base_model_ready"] is True
    assert facts["device"] in ("cpu", "cuda") and facts["versions"]["peft"]


def test_answer_with_adapter_differs_from_base(tiny_path, resident, tmp_path):
    random_lora(resident.model, seed=5, scale=1.0).save(tmp_path / "ad")
    base = run("answer", "hello there", "--base", str(tiny_path), "--max-new-tokens", "6", "--json")
    adapted = run("answer", "hello there", "--base", str(tiny_path), "--max-new-tokens", "6", "--json", "--adapter", str(tmp_path / "ad"))
    assert base.exit_code == 0 and adapted.exit_code == 0, base.output + adapted.output
    assert json.loads(base.stdout)["answers"][0]["answer"] != json.loads(adapted.stdout)["answers"][0]["answer"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["answer", ""], "Empty input"),
        (["answer", "hi", "--description", " "], "Empty --description"),
        (["answer", "hi", "--adapter", "/no/such/folder"], "does not exist"),
        (["info", "--device", "cuda:7"], None),  # fine when CUDA exists; an error without it
        (["data", "fetch", "imagenet"], "Unknown data source"),
    ],
)
def test_bad_input_is_one_line_error(tiny_path, args, message):
    import torch

    if args[0] == "info" and torch.cuda.is_available():
        pytest.skip("CUDA present: cuda:7 may be valid here")
    message = message or "CUDA is not available"
    if args[0] == "answer":
        args = [*args, "--base", str(tiny_path)]
    r = run(*args)
    assert r.exit_code == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and message in r.stderr
    assert r.stdout == "" and "Traceback" not in r.output


def test_adapter_for_other_base_is_refused(tiny_path, tmp_path):
    from hypergen.base import load_base
    from hypergen.testing import make_tiny_llama

    other = load_base(make_tiny_llama(tmp_path / "other", hidden=128), device="cpu")
    random_lora(other.model).save(tmp_path / "ad")
    r = run("answer", "hi", "--base", str(tiny_path), "--adapter", str(tmp_path / "ad"))
    assert r.exit_code == 1 and "made for another base model" in r.output and "in=128" in r.output


def test_console_script_exits_nonzero_on_error(tiny_path):
    exe = sys.executable.replace("python", "hypergen") if sys.executable.endswith("python") else "hypergen"
    p = subprocess.run([exe, "answer", "", "--base", str(tiny_path)], capture_output=True, text=True)
    assert p.returncode == 1 and p.stderr.startswith("error: ") and "Traceback" not in p.stderr


# ---- options come from the typed API: cli.py restates no default ------------------------------------
def test_help_imports_nothing_heavy():
    """`hypergen --help` builds every light command; train, eval and zoo build wait until invoked."""
    code = (
        "import sys; from typer.main import get_command; from typer.testing import CliRunner; import hypergen.cli as c; "
        "r = CliRunner().invoke(c.app, ['--help']); assert r.exit_code == 0 and 'train' in r.stdout and 'eval' in r.stdout, r.output; "
        "print([m for m in ('torch', 'pytorch_lightning', 'transformers') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def captured(monkeypatch, module, name, result=None):
    """Replace module.name by a recorder of its arguments."""
    calls = []
    monkeypatch.setattr(module, name, lambda *a, **kw: calls.append((a, kw)) or result)
    return calls


def test_no_option_given_means_the_configs_own_defaults(monkeypatch):
    from dataclasses import replace

    from hypergen import api
    from hypergen.eval import protocol
    from hypergen.generators.train import TrainConfig
    from hypergen.zoo.build import BuildConfig

    built = captured(monkeypatch, api, "zoo_build", api.ZooBuild("z", 0, True))
    assert run("zoo", "build").exit_code == 0
    assert built[0][0] == (BuildConfig(),)

    multi = captured(monkeypatch, api, "zoo_multitask", {"n_train": 0, "config": {"tasks": []}, "seconds": 0})
    assert run("zoo", "multitask").exit_code == 0
    assert multi[0] == ((BuildConfig(),), {})  # steps and per_task: zoo_multitask's own defaults

    trained = captured(monkeypatch, api, "train", {"global_rank": 1})
    assert run("train", "sg").exit_code == 0
    assert trained[0] == (("sg", replace(TrainConfig(), progress=True)), {})

    evaluated = captured(monkeypatch, protocol, "run", {})
    assert run("eval", "--json").exit_code == 0
    assert evaluated[0] == ((protocol.EvalConfig(),), {"progress": False})

    generated = captured(monkeypatch, api, "generate")
    run("generate", "a task")
    assert generated[0] == (("a task",), {"activate": False})


def test_given_options_reach_the_nested_config(monkeypatch):
    from hypergen import api
    from hypergen.eval import protocol

    built = captured(monkeypatch, api, "zoo_build", api.ZooBuild("z", 0, True))
    r = run("zoo", "build", "--rank", "4", "--steps", "3", "--tasks", "a", "--tasks", "b", "--no-oracle", "--layers", "0", "--logger", "none")
    assert r.exit_code == 0, r.output
    cfg = built[0][0][0]
    assert (cfg.expert.lora.rank, cfg.expert.lora.alpha, cfg.expert.lora.layers) == (4, 8.0, (0,))  # alpha = 2 * rank: LoraSpec's rule
    assert (cfg.expert.steps, cfg.tasks, cfg.oracle, cfg.expert.logger) == (3, ["a", "b"], False, "none")

    evaluated = captured(monkeypatch, protocol, "run", {})
    assert run("eval", "--methods", "base", "--tasks", "x", "--no-controls", "--json").exit_code == 0
    cfg = evaluated[0][0][0]
    assert (cfg.methods, cfg.tasks, cfg.controls) == (("base",), ("x",), False)


def test_set_gives_the_family_its_own_settings_typed_and_refuses_what_it_cannot_read(monkeypatch):
    from hypergen import api

    trained = captured(monkeypatch, api, "train", {"global_rank": 1})
    assert run("train", "t2l", "--set", "noise=0.5", "--set", "hidden=64", "--set", "head-scale=0.25").exit_code == 0
    assert trained[0][1] == {"noise": 0.5, "hidden": 64, "head_scale": 0.25}
    assert trained[0][0][0] == "t2l"
    for bad, said in [("noise", "KEY=VALUE"), ("width=3", "no setting 'width'"), ("hidden=0.5", "not a whole number"), ("noise=lots", "not a number")]:
        r = run("train", "t2l", "--set", bad)
        assert r.exit_code == 1 and said in r.stderr, (bad, r.stderr)
    assert len(trained) == 1  # nothing bad reached the api
    assert "its settings: top_k, temperature, seed, hidden" in run("train", "t2l", "--set", "width=3").stderr


def test_the_reports_command_reruns_the_same_evaluation(monkeypatch):
    """report.command quotes every setting that differs from its default: run through the CLI, it gives the
    same EvalConfig (a --tasks run quoted as the whole split's command was a different run)."""
    import shlex
    from dataclasses import replace

    from hypergen.eval import protocol
    from hypergen.eval.report import command

    cfg = protocol.EvalConfig(split="all", methods=("base", "nearest+desc"), tasks=("a b", "c"), limit=2, controls=False, zoo="my zoo",
                              base="/m/tiny", encoder="fake", max_new_tokens=8, long_budget=32, calibration_samples=2, max_options=0,
                              bootstrap=100, out="o", device="cpu", batch_rows=8)
    line = command(cfg)
    assert line.startswith("hypergen eval ") and "--device" not in line and "--batch-rows" not in line  # how, not what, it scores
    evaluated = captured(monkeypatch, protocol, "run", {})
    assert run(*shlex.split(line)[1:], "--json").exit_code == 0
    assert evaluated[0][0][0] == replace(cfg, device="auto", batch_rows=32)


def test_a_build_reports_only_where_the_api_says(monkeypatch):
    from hypergen import api

    captured(monkeypatch, api, "zoo_build", api.ZooBuild("z", 3, False))  # another rank of a --devices N build
    r = run("zoo", "build")
    assert r.exit_code == 0 and r.stdout == ""
    captured(monkeypatch, api, "zoo_build", api.ZooBuild("z", 3, True))
    assert run("zoo", "build").stdout == "zoo: z (3 experts)\n"


def test_help_shows_the_configs_defaults_and_docs():
    from hypergen.zoo.expert import ExpertConfig

    r = run("zoo", "build", "--help")
    assert r.exit_code == 0
    text = " ".join(r.stdout.split())
    assert f"--steps <int> optimizer steps (at most; see max_epochs). [default: {ExpertConfig().steps}]" in text
    assert "--rank" in text and "None = 2 * rank" in text and "--init-seed" not in text and "--progress" not in text


def test_docstring_fields():
    from hypergen.cli_options import docstring_fields

    doc = """What it is.

    a: the first (default: none). b / c_d: both
    of these. e: `a: not a field` stays in e's text.
    """
    assert docstring_fields(doc, ["a", "b", "c_d", "e", "f"]) == {"a": "the first (default: none).", "b": "both of these.", "c_d": "both of these.", "e": "`a: not a field` stays in e's text."}


def test_generators_lists_the_families_and_the_default_mode(monkeypatch):
    from hypergen import api

    monkeypatch.setattr(api, "DEFAULT_GENERATOR", "mix")
    for mode in (True, False):
        monkeypatch.setattr(api, "DEFAULT_PROMPT_DESCRIPTION", mode)
        rows = json.loads(run("generators", "--json").stdout)
        assert {r["name"] for r in rows} == set(api.list_generators())
        assert [(r["name"], r["prompt_description"]) for r in rows if r["default"]] == [("mix", mode)]
        text = run("generators").stdout
        assert ("(default, answers with the description in the prompt too)" in text) is mode and "(default" in text
    monkeypatch.setattr(api, "checkpoint_path", lambda name, checkpoint=None: Path("/ckpt/sg") if name == "sg" else None)
    rows = {r["name"]: r for r in json.loads(run("generators", "--json").stdout)}
    assert (rows["sg"]["checkpoint"], rows["icm"]["checkpoint"], rows["mix"]["checkpoint"]) == ("/ckpt/sg", None, None)
    lines = {line.split()[0]: line for line in run("generators").stdout.splitlines()}
    assert "trained" in lines["sg"] and "untrained (hypergen train icm)" in lines["icm"] and "baseline" in lines["mix"]  # icm: not "trained"


def test_a_base_given_as_a_relative_path_is_named_by_its_folder(tmp_path, monkeypatch):
    """`--base .` was recorded as "", which require_same_base reads as "any base"."""
    from hypergen.identity import base_name

    monkeypatch.chdir(tmp_path)
    assert base_name(".") == base_name(str(tmp_path)) == tmp_path.name
