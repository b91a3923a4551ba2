"""The `sft` objective: train a generator through the base model on the zoo tasks' own data.

For each expert in a batch, the generator emits a differentiable adapter from the description; the
adapter is injected into the frozen resident base with `torch.func.functional_call` (the LoRA
tensors of a dedicated slot are replaced by the generated ones for that call only, so no weights are
copied and gradients flow back into the generator), and the loss is the answer-token cross-entropy
on `sft_examples` train examples of that expert's task (Text-to-LoRA's SFT objective).

Contract a family implements to support it (declaring "sft" in its `objectives`; ABMLL does):

    def adapter_for_training(self, cond: Tensor, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        '''cond (B, D) description embeddings, batch = Generator.batch_tensors(...) (cond, target,
        index). Returns flat adapters (B, P) in weight space (the Layout's alpha), differentiable
        w.r.t. the generator's parameters, and extra loss terms (scalars, already weighted) that are
        added to the task NLL and logged under their names (e.g. {"beta_kl": beta * kl}).'''

The default (a family without it) is refused with a message pointing at --objective recon.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hypergen.data import Encoded, answer_nll, answer_positions, collate, encode_example
from hypergen.errors import HypergenError
from hypergen.identity import require_same_base
from hypergen.lora import LoraWeights

SLOT = "hypergen_sft"  # the resident's adapter slot whose LoRA tensors generated adapters stand in for


@dataclass
class SftData:
    """Everything sft_step needs, kept out of the LightningModule so checkpoints stay small.

    examples[i]: the tokenised train examples of bank expert i. param_names: module path -> the
    forward model's parameter names of the slot's (lora_A, lora_B) weights.
    """

    resident: object  # hypergen.base.ResidentModel
    names: list[str]
    examples: list[list[Encoded]]
    n_examples: int
    param_names: dict[str, tuple[str, str]]
    slot: str = SLOT
    n_truncated: int = 0
    n_skipped: int = 0
    gen: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))


def _suite_and_split(zoo):
    """The zoo's task suite and split, read as build.plan does (the manifest records the suite)."""
    from hypergen.tasks import load_split, load_suite

    suite_name = zoo.meta.get("suite")
    if not suite_name:
        raise HypergenError(f"The zoo at {zoo.root} does not record its task suite (manifest 'suite'), so its tasks' data cannot be found; use --objective recon.")
    suite = load_suite(suite_name)
    split_path = zoo.meta.get("split")
    split = load_split(split_path) if split_path else (load_split() if suite_name == "bigbench" else None)
    return suite, split


def prepare_sft(bank, zoo, resident, cfg) -> SftData:
    """Tokenise every bank expert's train (input, target) pairs and set up the resident's sft slot.

    The resident's base is frozen (requires_grad False everywhere): only the generator trains.
    """
    from hypergen.zoo.build import instances

    require_same_base(bank.meta.get("base_model"), resident.name, f"The zoo at {zoo.root}")
    suite, split = _suite_and_split(zoo)
    tok = resident.tokenizer
    examples, n_trunc, n_skip = [], 0, 0
    for name in bank.names:
        task = suite.get(name)  # unknown names raise with close matches
        enc = [encode_example(tok, i.input, i.targets[0], max_tokens=cfg.sft_max_tokens) for i in instances(task, split, "train")]
        n_skip += sum(e is None for e in enc)
        enc = [e for e in enc if e is not None]
        if not enc:
            raise HypergenError(f"Expert {name}: no train example fits in sft_max_tokens={cfg.sft_max_tokens}; raise --sft-max-tokens.")
        n_trunc += sum(e.truncated for e in enc)
        examples.append(enc)
    L = bank.layout
    zeros = LoraWeights({p: (torch.zeros(a), torch.zeros(b)) for p, a, b in zip(L.paths, L.a_shapes, L.b_shapes)}, L.alpha, resident.name)
    resident.load_adapter(SLOT, zeros)  # the slot only provides the LoRA modules; its tensors are never used
    for p in resident.model.parameters():
        p.requires_grad_(False)
    ids = {id(p): n for n, p in resident.forward_model().named_parameters()}
    names = {}
    for path in L.paths:
        m = resident.model.get_submodule(path)
        names[path] = (ids[id(m.lora_A[SLOT].weight)], ids[id(m.lora_B[SLOT].weight)])
    return SftData(resident, list(bank.names), examples, cfg.sft_examples, names, n_truncated=n_trunc, n_skipped=n_skip, gen=torch.Generator().manual_seed(cfg.seed))


def task_nll(sft: SftData, flat: torch.Tensor, layout, expert: int) -> torch.Tensor:
    """Answer-token cross-entropy (mean over tokens) of `n_examples` random train examples of bank
    expert `expert`, through the base with the flat adapter (P,) injected; differentiable in `flat`."""
    res = sft.resident
    pool = sft.examples[expert]
    k = min(sft.n_examples, len(pool))
    pick = torch.randperm(len(pool), generator=sft.gen)[:k].tolist()
    enc = collate([pool[j] for j in pick], res.tokenizer.pad_token_id)
    enc = {key: v.to(res.device) for key, v in enc.items()}
    dtype = next(res.model.parameters()).dtype
    w = layout.unflatten(flat.to(res.device, dtype))
    params = {}
    for path, (a, b) in w.modules.items():
        na, nb = sft.param_names[path]
        params[na], params[nb] = a, b
    keep = answer_positions(enc["labels"])  # logits only where an answer token follows
    kwargs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "logits_to_keep": keep}
    out = torch.func.functional_call(res.forward_model(), params, args=(), kwargs=kwargs)
    return answer_nll(out.logits, enc["labels"], keep)


def sft_step(generator, sft: SftData, batch: torch.Tensor) -> dict[str, torch.Tensor]:
    """One sft loss on a (B, 3) batch of (expert, checkpoint, variant) triples: the mean over rows of
    the task NLL under each row's generated adapter, plus the family's extra terms."""
    if sft is None:
        raise HypergenError("objective 'sft' needs the task data: call prepare_sft(bank, zoo, resident, cfg) and pass it to train_generator(sft_data=...).")
    if "sft" not in generator.objectives:
        raise HypergenError(f"The {generator.family} generator cannot train with objective 'sft' (its objectives: {', '.join(generator.objectives) or 'none'}); use --objective recon.")
    if list(generator.bank.names) != sft.names:
        raise HypergenError("The sft data was prepared for another set of experts than the generator's bank; call prepare_sft with the same bank.")
    bt = generator.batch_tensors(batch)
    flat, extra = generator.adapter_for_training(bt["cond"], bt)  # (B, P), {name: scalar}
    res = sft.resident
    prev = res.active
    res.activate(sft.slot)  # route the forward through the slot whose tensors functional_call replaces
    try:
        nll = torch.stack([task_nll(sft, flat[r], generator.layout, i) for r, i in enumerate(bt["index"].tolist())]).mean()
    finally:
        if prev is None:
            res.deactivate()
        else:
            res.activate(prev)
    nll = nll.to(flat.device)
    loss = nll + sum(extra.values()) if extra else nll
    return {"loss": loss, "nll": nll, **extra}
