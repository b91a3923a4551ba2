"""LoraWeights: PEFT folder round trip, mixing, validation and bad input."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from conftest import random_lora

from hypergen.errors import HypergenError
from hypergen.lora import LoraWeights, mix


def test_save_load_roundtrip(resident, tmp_path):
    w = random_lora(resident.model, seed=1)
    w.save(tmp_path / "ad")
    back = LoraWeights.load(tmp_path / "ad")
    assert (back.rank, back.alpha, back.target_modules) == (8, 16.0, ["q_proj", "v_proj"])
    assert list(back.modules) == list(w.modules)
    for p in w.modules:
        assert torch.equal(back.modules[p][0], w.modules[p][0]) and torch.equal(back.modules[p][1], w.modules[p][1])
    # the same adapter always writes the same config file (peft holds target_modules in a set)
    back.save(tmp_path / "again")
    assert (tmp_path / "ad" / "adapter_config.json").read_bytes() == (tmp_path / "again" / "adapter_config.json").read_bytes()
    listed = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())["target_modules"]
    assert listed == sorted(w.modules)


def test_plain_peft_loads_our_folder_with_every_key(tiny_path, resident, tmp_path):
    """Wrong key names would load silently as zeros/random: compare every tensor and the outputs."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    w = random_lora(resident.model, seed=2)
    w.save(tmp_path / "ad")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_path), tmp_path / "ad").eval()
    key_warnings = [str(w.message) for w in caught if "key" in str(w.message).lower()]
    assert key_warnings == []  # peft warns on missing/unexpected adapter keys
    sd = pm.state_dict()
    for p, (a, b) in w.modules.items():
        assert torch.equal(sd[f"base_model.model.{p}.lora_A.default.weight"], a)
        assert torch.equal(sd[f"base_model.model.{p}.lora_B.default.weight"], b)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    resident.activate(w)
    with torch.no_grad():
        ours = resident.forward_model()(input_ids=ids).logits
        theirs = pm(input_ids=ids).logits
    torch.testing.assert_close(ours, theirs)


def test_load_folder_saved_by_peft(tiny_path, resident, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    pm = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_path), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    pm.save_pretrained(tmp_path / "peft")
    w = LoraWeights.load(tmp_path / "peft")
    assert (w.rank, w.alpha, len(w.modules)) == (4, 8.0, 4)
    w.validate_for(resident.model)
    sd = pm.state_dict()  # every tensor as peft holds it: a swapped, transposed or misnamed one would load silently
    assert sorted(f"base_model.model.{p}.lora_A.default.weight" for p in w.modules) == sorted(k for k in sd if ".lora_A." in k)
    for p, (a, b) in w.modules.items():
        assert torch.equal(a, sd[f"base_model.model.{p}.lora_A.default.weight"])
        assert torch.equal(b, sd[f"base_model.model.{p}.lora_B.default.weight"])


def test_rslora_scale_is_folded(resident, tmp_path):
    w = random_lora(resident.model, rank=4, alpha=8)
    w.save(tmp_path / "ad")
    cfg = json.loads((tmp_path / "ad/adapter_config.json").read_text())
    cfg["use_rslora"] = True
    (tmp_path / "ad/adapter_config.json").write_text(json.dumps(cfg))
    assert LoraWeights.load(tmp_path / "ad").scaling == pytest.approx(8 / 4**0.5)


def test_mix_concat_is_exact_sum_of_updates(resident):
    ws = [random_lora(resident.model, seed=s, alpha=a) for s, a in [(1, 16.0), (2, 8.0), (3, 32.0)]]
    coefs = [0.5, 0.3, 0.2]
    m = mix(ws, coefs, how="concat")
    assert m.rank == 24
    for p in ws[0].modules:
        torch.testing.assert_close(m.delta(p), sum(c * w.delta(p) for c, w in zip(coefs, ws)))


def test_mix_average_is_lorahub(resident):
    ws = [random_lora(resident.model, seed=s) for s in (1, 2)]
    m = mix(ws, [0.25, 0.75], how="average")
    p = next(iter(ws[0].modules))
    a = 0.25 * ws[0].modules[p][0] + 0.75 * ws[1].modules[p][0]
    b = 0.25 * 2 * ws[0].modules[p][1] + 0.75 * 2 * ws[1].modules[p][1]  # scaling 16/8 folded into B
    torch.testing.assert_close(m.delta(p), b @ a)


def test_validate_names_module_and_both_shapes(tmp_path, resident):
    from hypergen.base import load_base
    from hypergen.testing import make_tiny_llama

    wider = load_base(make_tiny_llama(tmp_path / "wider", hidden=128), device="cpu")
    w = random_lora(wider.model)
    with pytest.raises(HypergenError, match=r"model\.layers\.0\.self_attn\.q_proj with in=128 out=128 but the base has in=64 out=64"):
        resident.activate(w)


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("missing", "does not exist"),
        ("no_config", "no adapter_config.json"),
        ("corrupt", "not a readable safetensors file"),
        ("bin_only", "loads only safetensors"),
        ("bad_json", "not valid JSON"),
        ("dora", "DoRA"),
    ],
)
def test_bad_adapter_folders(resident, tmp_path, breakage, message):
    folder = tmp_path / "ad"
    random_lora(resident.model).save(folder)
    cfg = folder / "adapter_config.json"
    weights = folder / "adapter_model.safetensors"
    if breakage == "missing":
        folder = tmp_path / "nope"
    elif breakage == "no_config":
        cfg.unlink()
    elif breakage == "corrupt":
        weights.write_bytes(weights.read_bytes()[:100])
    elif breakage == "bin_only":
        weights.rename(folder / "adapter_model.bin")
    elif breakage == "bad_json":
        cfg.write_text("{\n  'r': 8,\n")
    elif breakage == "dora":
        cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "use_dora": True}))
    with pytest.raises(HypergenError, match=message):
        LoraWeights.load(folder)


def test_mismatched_ranks_rejected():
    with pytest.raises(HypergenError, match="one LoRA rank"):
        LoraWeights({"a": (torch.zeros(4, 3), torch.zeros(2, 4)), "b": (torch.zeros(8, 3), torch.zeros(2, 8))}, 8.0)
