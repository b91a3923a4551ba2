"""ResidentModel: activation, in-place swaps, per-row adapters, scoring, devices."""

from __future__ import annotations

import pytest
import torch
from conftest import random_lora

from hypergen.errors import HypergenError

IDS = torch.tensor([[3, 14, 15, 92, 65, 35]])


def logits(res, **kw):
    with torch.no_grad(), res._context(kw.get("adapter_names")):
        return res.forward_model()(input_ids=IDS, **kw).logits


def test_activate_changes_output_and_deactivate_restores_base(resident):
    base = logits(resident)
    resident.activate(random_lora(resident.model, seed=1))
    assert not torch.allclose(logits(resident), base)
    resident.deactivate()
    torch.testing.assert_close(logits(resident), base)


def test_the_model_itself_follows_activate_and_deactivate(resident):
    """`resident.model` called directly (a user's own loop, not answer/score) applies the active adapter and
    only it: a loaded slot that is not active, a deactivated one, and per-row calls leave it the base."""

    def direct():
        with torch.no_grad():
            return resident.model(input_ids=IDS).logits

    base = direct()
    w1, w2 = random_lora(resident.model, seed=1), random_lora(resident.model, seed=2)
    resident.load_adapter("one", w1)  # loaded, not active
    torch.testing.assert_close(direct(), base)
    resident.activate("one")
    one = direct()
    assert (one - base).abs().max() > 1e-2
    resident.deactivate()
    torch.testing.assert_close(direct(), base)
    routed = resident.score(["abc"], [["x", "yz"]], adapter_names=["one"])  # peft's per-row routing, layers on for the call
    torch.testing.assert_close(direct(), base)
    resident.activate("one")
    assert routed == resident.score(["abc"], [["x", "yz"]])  # the routed row was under "one"
    resident.score(["abc"], [["x", "yz"]], adapters=[w2])  # LoraWeights per row: peft's layers off for the call
    torch.testing.assert_close(direct(), one)
    resident.load_adapter("two", w2)  # a second slot does not change which one applies
    torch.testing.assert_close(direct(), one)
    resident.remove("one")
    torch.testing.assert_close(direct(), base)


def test_swap_is_in_place_and_matches_fresh_load(resident, tiny_path):
    from hypergen.base import load_base

    w1, w2 = random_lora(resident.model, seed=1), random_lora(resident.model, seed=2)
    resident.activate(w1)
    slot_ptrs = [p.data_ptr() for pair in resident._slots["default"].params.values() for p in pair]
    resident.activate(w2)  # same rank + modules: tensors copied into the existing slot
    assert [p.data_ptr() for pair in resident._slots["default"].params.values() for p in pair] == slot_ptrs
    fresh = load_base(tiny_path, device="cpu")
    fresh.activate(w2)
    torch.testing.assert_close(logits(resident), logits(fresh))


def test_swap_to_other_rank_replaces_slot(resident):
    resident.activate(random_lora(resident.model, rank=8))
    resident.activate(random_lora(resident.model, rank=4, seed=3))
    assert resident._slots["default"].rank == 4 and resident.adapters == ["default"]


def test_per_row_adapters_match_single_runs(resident):
    w1, w2 = random_lora(resident.model, seed=1), random_lora(resident.model, seed=2)
    resident.load_adapter("one", w1)
    resident.load_adapter("two", w2)
    texts = ["abc", "abc", "abc"]
    mixed = resident.score(texts, [["x", "yz"]] * 3, adapter_names=[None, "one", "two"])
    resident.deactivate()
    s_base = resident.score(["abc"], [["x", "yz"]])[0]
    resident.activate("one")
    s_one = resident.score(["abc"], [["x", "yz"]])[0]
    resident.activate("two")
    s_two = resident.score(["abc"], [["x", "yz"]])[0]
    for got, want in zip(mixed, [s_base, s_one, s_two]):
        assert got == pytest.approx(want, abs=1e-4)
    assert s_one != pytest.approx(s_base, abs=1e-3)
    answers = resident.answer(texts, adapter_names=[None, "one", "two"], max_new_tokens=4)
    alone = []
    for name in (None, "one", "two"):
        resident.deactivate() if name is None else resident.activate(name)
        alone.append(resident.answer(["abc"], max_new_tokens=4)[0])
    resident.deactivate()
    assert answers == alone  # each row answered as under its adapter alone


def test_score_equals_manual_loglik(resident):
    tok = resident.tokenizer
    prompt = resident.prompts(["hello"])[0]
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    c_ids = tok("ok", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = torch.tensor([p_ids + c_ids])
    with torch.no_grad():
        logp = torch.log_softmax(resident.model(input_ids=ids).logits[0, :-1], -1)
    want = sum(logp[len(p_ids) - 1 + k, t].item() for k, t in enumerate(c_ids))
    assert resident.score(["hello"], [["ok", "no"]])[0][0] == pytest.approx(want, abs=1e-4)


def test_batched_score_equals_manual_loglik_over_ragged_prompts_and_options(resident):
    """Left-padded prompts, a different number of options per row, per-row adapters: each score is the
    plain full-sequence log-likelihood of that one prompt + option."""
    tok = resident.tokenizer
    resident.load_adapter("r7", random_lora(resident.model, seed=7))
    texts = ["hi", "a much longer input with many more tokens in it than the first", "mid length text"]
    cands = [["ok", "no", "maybe not"], ["yes"], ["a b c d e", "x"]]
    rows = [None, "r7", "r7"]
    got = resident.score(texts, cands, adapter_names=rows, batch_size=2)  # two batches, the first ragged
    for text, opts, row, g in zip(texts, cands, rows, got):
        p_ids = tok(resident.prompts([text])[0], add_special_tokens=False)["input_ids"]
        for opt, value in zip(opts, g):
            c_ids = tok(opt, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            with torch.no_grad(), resident._context([row]):  # peft routes rows only in enabled layers
                logits = resident.forward_model()(input_ids=torch.tensor([p_ids + c_ids]), **resident._rows([row], 1)).logits[0, :-1]
            want = sum(torch.log_softmax(logits, -1)[len(p_ids) - 1 + k, t].item() for k, t in enumerate(c_ids))
            assert value == pytest.approx(want, abs=1e-4), (text, opt, row)
    resident.remove("r7")


def test_answer_batches_like_single(resident):
    resident.activate(random_lora(resident.model, seed=4))
    batch = resident.answer(["a short one", "a much longer input text here"], max_new_tokens=6)
    single = [resident.answer([t], max_new_tokens=6)[0] for t in ["a short one", "a much longer input text here"]]
    assert batch == single


@pytest.mark.parametrize("bad", [[], [""], ["  "]])
def test_empty_input_is_an_error(resident, bad):
    with pytest.raises(HypergenError, match="Empty input"):
        resident.answer(bad)


def test_unknown_adapter_names(resident):
    resident.load_adapter("one", random_lora(resident.model))
    with pytest.raises(HypergenError, match="Unknown adapter"):
        resident.score(["a"], [["b"]], adapter_names=["nope"])
    with pytest.raises(HypergenError, match="No adapter named"):
        resident.activate("nope")


def test_remove_last_adapter_unwraps_to_base(resident):
    base = logits(resident)
    resident.activate(random_lora(resident.model))
    resident.remove("default")
    assert resident.peft is None and resident.adapters == []
    torch.testing.assert_close(logits(resident), base)


def test_missing_base_folder(tmp_path):
    from hypergen.base import load_base

    with pytest.raises(HypergenError, match="no config.json"):
        load_base(tmp_path)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_swap_and_answer(tiny_path):
    from hypergen.base import load_base

    res = load_base(tiny_path, device="auto")
    assert res.device.type == "cuda"
    base = res.answer(["hello"], max_new_tokens=4)
    res.activate(random_lora(res.model, seed=1))
    assert res._slots["default"].params[next(iter(res._slots["default"].params))][0].device.type == "cuda"
    res.answer(["hello"], max_new_tokens=4)
    res.deactivate()
    assert res.answer(["hello"], max_new_tokens=4) == base


def test_tests_keep_training_runs_out_of_the_user_cache(tmp_path_factory):
    """Each test trains in a runs folder of its own under pytest's temporary folder (conftest.own_runs_folder)."""
    from hypergen import paths

    assert paths.runs_dir() != paths.home() / "runs" and paths.runs_dir().is_relative_to(tmp_path_factory.getbasetemp())
