"""Per-row LoRA (hypergen.rowlora) against peft: logits, greedy answers, scores, gradients, mixed ranks."""

from __future__ import annotations

import pytest
import torch
from conftest import random_lora

from hypergen import rowlora
from hypergen.errors import HypergenError

TEXTS = ["hi", "a much longer input with many more tokens than the first", "mid length text", "four"]
NAMES = ["one", "two", "three", None]


def adapters_for(model):
    """Three different adapters (ranks 8, 4, 2; the third on q/v/o) and a base row."""
    return [
        random_lora(model, seed=1),
        random_lora(model, seed=2, rank=4),
        random_lora(model, seed=3, rank=2, alpha=4.0, targets=("q_proj", "v_proj", "o_proj")),
        None,
    ]


def batch(res, texts=TEXTS):
    """Left-padded (ragged) chat prompts."""
    return res.tokenizer(res.prompts(texts), return_tensors="pt", padding=True, add_special_tokens=False)


def run(res, enc, adapter_names=None, lora=None):
    """Logits (B, T, V) through peft's per-row slots (adapter_names) or per-row LoRA (lora)."""
    with torch.no_grad(), res._context(adapter_names, lora):
        return res.forward_model()(**enc, **res._rows(adapter_names, len(enc["input_ids"]))).logits


@pytest.fixture(params=["plain", "peft-active"])
def served(request, resident, tiny_path):
    """(reference resident with the adapters in peft slots, resident to serve per-row adapters from).

    plain: a fresh base that peft never wrapped. peft-active: the same resident, which holds the slots
    and has a fourth adapter active, which the per-row path must ignore and leave active."""
    from hypergen.base import load_base

    ws = adapters_for(resident.model)
    for name, w in zip(NAMES, ws):
        if name:
            resident.load_adapter(name, w)
    if request.param == "plain":
        return resident, load_base(tiny_path, device="cpu"), ws
    resident.load_adapter("other", random_lora(resident.model, seed=9))
    resident.activate("other")
    return resident, resident, ws


def test_stack_pads_ranks_and_fills_missing_modules(resident):
    ws = adapters_for(resident.model)
    lora = rowlora.stack(ws)
    q, o = "model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.o_proj"
    a, b = lora.modules[q]
    assert a.shape == (4, 8, 64) and b.shape == (4, 64, 8) and lora.rows == 4
    torch.testing.assert_close(a[1, :4], ws[1].modules[q][0])
    assert not a[1, 4:].any() and not b[1, :, 4:].any()  # rank 4 padded to 8 with zeros
    assert not lora.modules[o][0][:2].any() and lora.modules[o][0][2].any()  # o_proj only in the third
    assert not a[3].any() and not b[3].any()
    torch.testing.assert_close(lora.scaling, torch.tensor([2.0, 4.0, 2.0, 0.0]))
    assert rowlora.stack([None, None]).modules == {}


def test_logits_match_peft_per_row(served):
    ref, res, ws = served
    enc = batch(ref)
    want = run(ref, enc, adapter_names=NAMES)
    got = run(res, enc, lora=res._stack(ws))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    base = run(res, enc, lora=res._stack([None] * 4))
    for i in range(3):
        assert not torch.allclose(got[i], base[i], atol=1e-3)  # every adapter changes its row
    torch.testing.assert_close(got[3], base[3], atol=1e-5, rtol=0)
    if res.peft is not None:  # the active slot was off for the call and is still the active one
        assert res.active == "other" and res.peft.active_adapter == "other"
        assert not torch.allclose(run(res, enc), base, atol=1e-3)


def test_greedy_answers_match_peft(served):
    ref, res, ws = served
    want = ref.answer(TEXTS, adapter_names=NAMES, max_new_tokens=6)
    got = res.answer(TEXTS, adapters=ws, max_new_tokens=6, batch_size=3)  # a ragged chunk of 3, then 1
    assert got == want
    assert len(set(res.answer([TEXTS[0]] * 4, adapters=ws, max_new_tokens=6))) > 1  # rows really differ


def test_score_with_adapters_equals_score_with_slots(served):
    ref, res, ws = served
    texts = TEXTS + ["fifth one"]
    cands = [["ok", "no", "maybe not"], ["yes"], ["a b c d e", "x"], ["z", "zz"], ["q"]]
    # batch_size 2: chunks (one, two), (three, base), (base): the last chunk holds no adapter at all
    want = ref.score(texts, cands, adapter_names=NAMES + [None], batch_size=2)
    got = res.score(texts, cands, adapters=ws + [None], batch_size=2)
    for g, w in zip(got, want):
        assert g == pytest.approx(w, abs=1e-5)
    base = res.score(texts, cands, adapters=[None] * 5, batch_size=2)
    assert all(got[i][0] != pytest.approx(base[i][0], abs=1e-3) for i in range(3)) and got[3] == pytest.approx(base[3], abs=1e-5)


def test_mixed_ranks_match_each_adapter_alone(resident):
    """Rows padded to the largest rank equal each adapter applied alone through peft."""
    ws = [random_lora(resident.model, seed=s, rank=r, alpha=2.0 * r) for s, r in [(1, 1), (2, 3), (3, 8)]]
    enc = batch(resident, TEXTS[:3])
    got = run(resident, enc, lora=resident._stack(ws))
    for i, w in enumerate(ws):
        resident.activate(w)  # same slot, other rank: replaced
        torch.testing.assert_close(got[i], run(resident, enc)[i], atol=1e-5, rtol=0)


def row_loss(logits, ids, mask):
    """Mean next-token NLL per row over real tokens, (B,)."""
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]  # (B, T-1)
    m = mask[:, 1:].to(logp.dtype)
    return -(logp * m).sum(1) / m.sum(1)


def test_gradients_match_a_single_adapter_functional_call(resident):
    model = resident.model
    ws = adapters_for(model)
    lora = rowlora.stack(ws)
    for a, b in lora.modules.values():
        a.requires_grad_(True)
        b.requires_grad_(True)
    enc = batch(resident)
    with rowlora.apply(model, lora):
        losses = row_loss(model(**enc).logits, enc["input_ids"], enc["attention_mask"])
    losses.sum().backward()
    for a, b in lora.modules.values():
        assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
        assert not a.grad[3].any() and not b.grad[3].any()  # the base row (scale 0) trains nothing
    q = "model.layers.0.self_attn.q_proj"
    assert lora.modules[q][0].grad[:3].abs().sum(-1).gt(0).any() and lora.modules[q][1].grad[:3].abs().gt(0).any()
    # each row alone: merged W + s B A through torch.func.functional_call, differentiated w.r.t. its own A, B
    for i, w in enumerate(ws[:3]):
        leaves = {p: (a.clone().requires_grad_(True), b.clone().requires_grad_(True)) for p, (a, b) in w.modules.items()}
        params = {f"{p}.weight": model.get_submodule(p).weight + w.scaling * b @ a for p, (a, b) in leaves.items()}
        row = {k: v[i : i + 1] for k, v in enc.items()}
        logits = torch.func.functional_call(model, params, args=(), kwargs=row).logits
        row_loss(logits, row["input_ids"], row["attention_mask"]).sum().backward()
        for p, (a, b) in leaves.items():
            r = a.shape[0]
            torch.testing.assert_close(lora.modules[p][0].grad[i, :r], a.grad, rtol=1e-3, atol=1e-6)
            torch.testing.assert_close(lora.modules[p][1].grad[i, :, :r], b.grad, rtol=1e-3, atol=1e-6)
            assert not lora.modules[p][0].grad[i, r:].any()  # the padding rows of A get no gradient


def test_gradients_match_finite_differences(resident):
    """Directional derivatives of the loss along random directions in A and B, float64. Llama's RMSNorm
    computes in float32 even in a float64 model, so a single entry's difference drowns in its rounding;
    a direction over a whole tensor has a derivative large enough to check to 2e-3."""
    model = resident.model.double()
    lora = rowlora.stack(adapters_for(model), dtype=torch.float64)
    enc = batch(resident)
    q, v = "model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.v_proj"

    def loss():
        with rowlora.apply(model, lora):
            return row_loss(model(**enc).logits, enc["input_ids"], enc["attention_mask"]).sum()

    for a, b in lora.modules.values():
        a.requires_grad_(True)
        b.requires_grad_(True)
    loss().backward()
    g = torch.Generator().manual_seed(0)
    for t in [lora.modules[q][0], lora.modules[v][1], lora.modules[v][0]]:
        d = torch.randn(t.shape, generator=g, dtype=t.dtype)
        with torch.no_grad():
            t += 1e-4 * d
            up = loss()
            t -= 2e-4 * d
            down = loss()
            t += 1e-4 * d
        fd = float(up - down) / 2e-4
        assert abs(fd) > 1e-3 and float((t.grad * d).sum()) == pytest.approx(fd, rel=2e-3)


def test_refusals(resident, tmp_path):
    from hypergen.testing import make_tiny_llama

    w = random_lora(resident.model, seed=1)
    resident.load_adapter("one", w)
    with pytest.raises(HypergenError, match="not both"):
        resident.answer(["a"], adapters=[w], adapter_names=["one"])
    with pytest.raises(HypergenError, match="one per input"):
        resident.score(["a", "b"], [["x"], ["y"]], adapters=[w])
    with pytest.raises(HypergenError, match="LoraWeights or None"):
        resident.answer(["a"], adapters=["one"])
    from hypergen.base import load_base

    other = load_base(make_tiny_llama(tmp_path / "wide", hidden=32), device="cpu")
    with pytest.raises(HypergenError, match="another base model"):
        resident.answer(["a"], adapters=[random_lora(other.model)])
    with pytest.raises(HypergenError, match="another base model"), rowlora.apply(other.model, rowlora.stack([w])):
        pass
    with pytest.raises(HypergenError, match="one adapter per row"), rowlora.apply(resident.model, rowlora.stack([w, w])):
        resident.model(input_ids=torch.tensor([[1, 2], [3, 4], [5, 6]]))
    assert not any(m._forward_hooks for m in resident.model.modules())  # hooks go even when the call fails
