"""What the serving paths check and leave behind: the base an adapter was made for (by name, not only by
shapes), the adapter_config.json a peft user loads, the resident model's routing after a failed call,
and the active adapter after a call that was told not to activate."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from conftest import random_lora
from safetensors.torch import load_file, save_file

from hypergen import api
from hypergen.errors import HypergenError
from hypergen.identity import require_same_base, short_name
from hypergen.lora import LoraWeights
from hypergen.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "app"))
from app_support import SessionAdapters  # noqa: E402

ANTONYM = "Give the antonym of the word: the word with the opposite meaning."


def test_base_names_compare_without_hub_owner_or_folder():
    assert short_name("HuggingFaceTB/SmolLM2-135M-Instruct") == short_name("/models/SmolLM2-135M-Instruct/") == "SmolLM2-135M-Instruct"
    require_same_base("HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct", "The adapter")
    with pytest.raises(HypergenError, match="made for base model 'HuggingFaceTB/SmolLM2-360M'"):
        require_same_base("HuggingFaceTB/SmolLM2-360M", "SmolLM2-135M-Instruct", "The adapter")


def test_adapter_config_names_the_default_base_by_its_hub_id(resident, tmp_path):
    """AutoPeftModelForCausalLM loads the base named in adapter_config.json: a hub id it can resolve,
    read back as hypergen's name."""
    w = random_lora(resident.model, name="SmolLM2-135M-Instruct")
    w.save(tmp_path / "ad")
    assert json.loads((tmp_path / "ad/adapter_config.json").read_text())["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert LoraWeights.load(tmp_path / "ad").base_model == "SmolLM2-135M-Instruct"
    random_lora(resident.model, name="tiny-llama").save(tmp_path / "local")  # any other base keeps its folder name
    assert json.loads((tmp_path / "local/adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-llama"


def test_a_file_with_two_adapters_tensors_is_refused(resident, tmp_path):
    """peft's in-memory keys carry the adapter's name; a file with two adapters' A and B must not be
    paired up silently (the last key would win, A of one adapter with B of another)."""
    random_lora(resident.model).save(tmp_path / "ad")
    one = load_file(str(tmp_path / "ad/adapter_model.safetensors"))
    two = {}
    for k, t in one.items():
        two[k.replace(".weight", ".default.weight")] = t
        two[k.replace(".weight", ".other.weight")] = t + 1
    save_file(two, str(tmp_path / "ad/adapter_model.safetensors"))
    with pytest.raises(HypergenError, match="more than one lora_A .*save each adapter on its own"):
        LoraWeights.load(tmp_path / "ad")


def test_answer_refuses_an_adapter_named_for_another_base_of_the_same_shape(tiny_path, resident, tmp_path):
    """Shapes alone pass SmolLM2-135M vs its Instruct fine-tune: the recorded name decides."""
    random_lora(resident.model, name="SmolLM2-135M").save(tmp_path / "ad")
    with pytest.raises(HypergenError, match="made for base model 'SmolLM2-135M', but the loaded base is 'tiny-llama'"):
        api.answer(["hot"], adapter=tmp_path / "ad", base=str(tiny_path), device="cpu", max_new_tokens=2)


def test_app_sessions_refuse_an_adapter_for_another_base_and_share_the_models_lock(resident):
    sessions = SessionAdapters(resident)
    assert sessions.lock is resident.lock  # api calls and sessions serialise on one lock
    with pytest.raises(HypergenError, match="made for base model 'other-base'"):
        sessions.answer(SessionAdapters.new_slot(), random_lora(resident.model, name="other-base"), ["hot"], 2)
    assert resident.adapters == []  # refused before loading


def test_generate_without_activating_answers_and_leaves_the_active_adapter(tiny_zoo, tiny_path):
    common = dict(zoo_path=str(tiny_zoo.root), base=str(tiny_path), encoder_name="fake", device="cpu", max_new_tokens=4)
    model = api.resident(str(tiny_path), "cpu")
    active = api.generate(ANTONYM, "nearest", inputs=["hot", "big"], **common)
    assert model.active == "generated"
    model.deactivate()
    passive = api.generate(ANTONYM, "nearest", inputs=["hot", "big"], activate=False, **common)
    assert model.active is None  # still the plain base
    assert passive.answers == active.answers
    assert model.answer(["hot", "big"], max_new_tokens=4) != active.answers  # what the base says: the adapter did answer


def test_generate_refuses_a_zoo_for_another_named_base_without_loading_it(tiny_zoo, tmp_path):
    """activate=False loads no model, but a named base is still checked against the zoo's."""
    from hypergen.testing import make_tiny_llama

    other = make_tiny_llama(tmp_path / "other-llama")
    with pytest.raises(HypergenError, match="made for base model 'tiny-llama', but the loaded base is 'other-llama'"):
        api.generate(ANTONYM, "nearest", activate=False, zoo_path=str(tiny_zoo.root), base=str(other), encoder_name="fake")


def test_a_failed_routed_forward_leaves_no_routing_hooks(resident, monkeypatch):
    """peft removes its adapter_names hooks only when the forward returns; after an exception a later
    call of another batch size must still work and route its own rows."""
    w = random_lora(resident.model)
    resident.load_adapter("a", w)
    expected = resident.answer(["hot", "big", "cold"], adapter_names=["a", None, "a"], max_new_tokens=3)
    plain = resident.answer(["hot"], max_new_tokens=3)
    layer = resident.model.model.layers[0].mlp
    real = layer.forward

    def boom(*args, **kwargs):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(layer, "forward", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        resident.answer(["hot", "big"], adapter_names=["a", None], max_new_tokens=3)
    monkeypatch.setattr(layer, "forward", real)
    hooks = [h for m in resident.peft.modules() for h in m._forward_pre_hooks.values() if "adapter_names" in repr(h)]
    assert hooks == []
    assert resident.answer(["hot"], max_new_tokens=3) == plain  # no routing asked for: none applied
    assert resident.answer(["hot", "big", "cold"], adapter_names=["a", None, "a"], max_new_tokens=3) == expected


@pytest.mark.parametrize("device, message", [("gpu", "Unknown device 'gpu'"), ("cuda:banana", "Unknown device")])
def test_unknown_devices_are_one_line_errors(device, message):
    from hypergen.base import pick_device

    with pytest.raises(HypergenError, match=message):
        pick_device(device)


def test_a_cuda_index_past_the_machines_devices_is_refused():
    from hypergen.base import pick_device

    if not torch.cuda.is_available():
        with pytest.raises(HypergenError, match="CUDA is not available"):
            pick_device("cuda:7")
    else:
        with pytest.raises(HypergenError, match="CUDA device"):
            pick_device(f"cuda:{torch.cuda.device_count()}")


def test_app_refuses_a_bad_device_or_base_before_serving(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from hypergen import app_cli
    from hypergen.cli import app as cli

    monkeypatch.setattr(app_cli.os, "execve", lambda *a: pytest.fail("the server started"))
    r = CliRunner().invoke(cli, ["app", "--device", "gpu"])
    assert r.exit_code == 1 and "Unknown device 'gpu'" in r.stderr
    r = CliRunner().invoke(cli, ["app", "--base", str(tmp_path)])
    assert r.exit_code == 1 and "not a Hugging Face model folder" in r.stderr
