"""End to end on the real SmolLM2-135M-Instruct and all-MiniLM-L6-v2 (from the cache, offline)."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.integration

QUESTION = "What is the capital of France? Answer in one word."


def test_real_base_answers_paris(real_resident):
    real_resident.deactivate()
    assert "Paris" in real_resident.answer([QUESTION], max_new_tokens=12)[0]


def test_real_encoder_embeds_by_meaning(real_encoder):
    e = real_encoder.encode(["Classify the sentiment of a movie review.", "Is this film review positive or negative?", "Multiply two numbers."])
    assert e.shape == (3, 384)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(3))
    assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.2


def test_trained_adapter_changes_answer_then_base_returns(real_resident, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from hypergen.lora import LoraWeights
    from hypergen.zoo.expert import ExpertConfig, train_expert

    res = real_resident
    res.deactivate()
    before = res.answer([QUESTION], max_new_tokens=12)[0]
    examples = [(f"Tell me about thing number {i}.", "banana") for i in range(16)]
    out = train_expert(res, examples, ExpertConfig(steps=12, batch_size=4, lr=5e-3, warmup=2, logger="none", progress=False))
    assert out.losses[-1] < out.losses[0] / 4

    res.activate(out.weights, name="banana")
    adapted = res.answer([QUESTION], max_new_tokens=12)[0]
    assert adapted != before and "banana" in adapted.lower()
    res.deactivate()
    assert res.answer([QUESTION], max_new_tokens=12)[0] == before

    # the exported folder loads in plain peft and gives the same next-token logits
    out.weights.save(tmp_path / "banana")
    loaded = LoraWeights.load(tmp_path / "banana")
    pm = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(res.path), tmp_path / "banana").eval()
    ids = res.tokenizer(res.prompts([QUESTION])[0], return_tensors="pt", add_special_tokens=False)["input_ids"]
    res.activate(loaded, name="banana")
    with torch.no_grad():
        torch.testing.assert_close(pm(input_ids=ids).logits[:, -1], res.forward_model()(input_ids=ids).logits[:, -1], atol=1e-4, rtol=1e-4)
    res.deactivate()
