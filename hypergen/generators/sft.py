"""The `sft` objective: train a generator through the frozen base model on tasks' own data.

A batch mixes B rows; a row is (task, one of its descriptions, k of its train examples). The generator
emits every row's adapter at once (flat (B, P), differentiable), the flat vectors are viewed as stacked
per-row factors A (B, r, in) and B (B, out, r) (no per-row LoraWeights), and the frozen base runs ONCE
over the batch's k * B examples, padded only to the batch's longest, with row i's adapter added to its
examples by hypergen.rowlora. The loss is the answer-token cross-entropy, a mean over each row's
answer tokens and then over rows (Text-to-LoRA's SFT objective), plus the family's own extra terms.

Where the tasks come from (TrainConfig.tasks, see hypergen.tasks.sft_data): the zoo experts' tasks, or
every task of a descriptions file or of a suite, with no expert needed. Rows are drawn family first
(then task, description, examples), so the two families with ~250 subtasks each do not fill every
batch. The draw for step s is a function of (seed, rank, s) alone: a run resumed after SIGKILL draws
exactly what the uninterrupted one would have.

Contract a family implements to support it (declaring "sft" in its `objectives`):

    def adapter_for_training(self, cond: Tensor, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        '''cond (B, D) description embeddings; batch["index"] (B,) the row's task as a bank expert,
        -1 when the task has none. Returns flat adapters (B, P) in weight space (the Layout's alpha),
        differentiable w.r.t. the generator's parameters, and extra loss terms (scalars, already
        weighted) added to the task NLL and logged under their names (e.g. {"beta_kl": beta * kl}).
        In eval mode (validation) a stochastic family returns its deterministic adapter.'''
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from hypergen.data import Encoded, answer_positions, collate, encode_example
from hypergen.errors import HypergenError
from hypergen.identity import require_same_base
from hypergen.rowlora import RowLora


@dataclass
class TaskData:
    """One task ready for rows: description embeddings and tokenised examples."""

    name: str
    cond: torch.Tensor  # (k, D) one embedding per description variant
    train: list[Encoded]
    val: list[Encoded]
    expert: int = -1  # bank index when the task is a zoo expert, else -1

    @property
    def family(self) -> str:
        return self.name.split("/", 1)[0]


@dataclass
class SftData:
    """Everything sft_step needs, kept out of the LightningModule so checkpoints stay small."""

    resident: object  # hypergen.base.ResidentModel, frozen
    tasks: list[TaskData]  # training tasks
    val: list[TaskData]  # validation tasks: whole families apart from the training ones
    n_examples: int  # train examples per row
    bank_names: list[str]
    families: list[list[int]] = field(default_factory=list)  # training task indices, one list per family
    n_truncated: int = 0
    n_skipped: int = 0  # examples whose answer alone does not fit in sft_max_tokens
    n_small: int = 0  # tasks left out for too few examples

    def __post_init__(self):
        by_family: dict[str, list[int]] = {}
        for i, t in enumerate(self.tasks):
            by_family.setdefault(t.family, []).append(i)
        self.families = list(by_family.values())

    @property
    def fingerprint(self) -> str:
        """Names of the training and validation tasks: a resumed run must train on the same ones."""
        return hashlib.sha1("\n".join([t.name for t in self.tasks] + ["--"] + [t.name for t in self.val]).encode()).hexdigest()[:10]


def _suite_and_split(name: str, zoo=None):
    """A task suite and its split (the zoo's, as build.plan reads it; BIG-bench's committed one)."""
    from hypergen.tasks import load_split, load_suite

    split_path = zoo.meta.get("split") if zoo is not None else None
    split = load_split(split_path) if split_path else (load_split() if name == "bigbench" else None)
    return load_suite(name), split


def _zoo_sources(bank, zoo, cfg):
    """The zoo experts' tasks, divided as their experts were trained (zoo.build.instances)."""
    from hypergen.tasks.sft_data import SftTask
    from hypergen.zoo.build import instances

    suite_name = zoo.meta.get("suite") if zoo is not None else None
    if not suite_name:
        raise HypergenError(f"The zoo at {getattr(zoo, 'root', None)} does not record its task suite (manifest 'suite'), so its tasks' data cannot be found; "
                            "use --tasks descriptions or --objective recon.")
    suite, split = _suite_and_split(suite_name, zoo)
    tasks = []
    for i, name in enumerate(bank.names):
        task = suite.get(name)  # unknown names raise with close matches
        tasks.append(SftTask(name, [], instances(task, split, "train")[: cfg.sft_max_train], instances(task, split, "val"), expert=i))
    return tasks, 0


def prepare_sft(bank, zoo, resident, cfg, *, encoder=None) -> SftData:
    """Read, divide and tokenise the training tasks (cfg.tasks), embed their descriptions, and choose the
    validation families (cfg.val_families). The resident's base is frozen: only the generator trains.
    encoder: the description encoder (default: the bank's, by name) for tasks that are not zoo experts."""
    from hypergen.tasks.sft_data import described_tasks, split_families

    require_same_base(bank.meta.get("base_model"), resident.name, f"The zoo at {bank.meta.get('zoo')}")
    if cfg.tasks == "zoo":
        sources, small = _zoo_sources(bank, zoo, cfg)
    else:
        from hypergen.tasks.descriptions import DEFAULT_PATH

        suite, split = _suite_and_split(cfg.task_suite)
        names = suite.names() if cfg.tasks == "suite" else None
        sources, small = described_tasks(suite, cfg.descriptions or DEFAULT_PATH, split, names=names, min_examples=cfg.min_examples, max_train=cfg.sft_max_train)
        index = {n: i for i, n in enumerate(bank.names)}
        for s in sources:
            s.expert = index.get(s.name, -1)
    n_val = cfg.val_families if cfg.val_families is not None else (0 if cfg.tasks == "zoo" else 4)
    train_src, val_src = split_families(sources, n_val, cfg.seed)
    if cfg.tasks != "zoo" and encoder is None:
        from hypergen.text import load_encoder

        encoder = load_encoder(bank.meta.get("encoder") or "minilm")
    if encoder is not None and bank.meta.get("encoder") and encoder.name != bank.meta["encoder"]:
        raise HypergenError(f"The descriptions would be embedded with {encoder.name!r} but the generator's bank uses {bank.meta['encoder']!r}: use one encoder.")
    tok, counts = resident.tokenizer, {"trunc": 0, "skip": 0}

    def encode(instances) -> list[Encoded]:
        enc = [encode_example(tok, i.input, i.targets[0], max_tokens=cfg.sft_max_tokens) for i in instances]
        counts["skip"] += sum(e is None for e in enc)
        counts["trunc"] += sum(e.truncated for e in enc if e is not None)
        return [e for e in enc if e is not None]

    def ready(s) -> TaskData:
        cond = bank.variants[s.expert] if cfg.tasks == "zoo" else encoder.encode(s.descriptions).float()
        train = encode(s.train)
        if not train:
            raise HypergenError(f"Task {s.name}: no train example fits in sft_max_tokens={cfg.sft_max_tokens}; raise --sft-max-tokens.")
        return TaskData(s.name, cond, train, encode(s.val), s.expert)

    tasks, val = [ready(s) for s in train_src], [ready(s) for s in val_src]
    for p in resident.model.parameters():
        p.requires_grad_(False)
    return SftData(resident, tasks, val, cfg.sft_examples, list(bank.names), n_truncated=counts["trunc"], n_skipped=counts["skip"], n_small=small)


# ---- batches ------------------------------------------------------------------------------------
class TrainBatches(torch.utils.data.Dataset):
    """Step s -> its (B, 2 + k) batch of rows [task, variant, example indices (-1 = none)], drawn family
    first from (seed, rank, s) alone, so a resumed run continues the very same sequence."""

    def __init__(self, sft: SftData, batch_size: int, seed: int, rank: int = 0):
        self.sft, self.batch_size, self.key = sft, batch_size, f"{seed}:{rank}"

    def __len__(self) -> int:
        return 2**62  # indexed by step; the sampler says which steps

    def __getitem__(self, step: int) -> torch.Tensor:
        rng = random.Random(f"{self.key}:{step}")
        k, rows = self.sft.n_examples, []
        for _ in range(self.batch_size):
            t = rng.choice(rng.choice(self.sft.families))
            task = self.sft.tasks[t]
            ex = rng.sample(range(len(task.train)), min(k, len(task.train)))
            rows.append([t, rng.randrange(len(task.cond)), *ex, *[-1] * (k - len(ex))])
        return torch.tensor(rows, dtype=torch.long)


def val_batches(sft: SftData, batch_size: int) -> list[torch.Tensor]:
    """The fixed validation rows: each validation task with its first description and its first k val
    examples (tasks with no val example are left out), batch_size rows at a time."""
    k, rows = sft.n_examples, []
    for t, task in enumerate(sft.val):
        n = min(k, len(task.val))
        if n:
            rows.append([t, 0, *range(n), *[-1] * (k - n)])
    return [torch.tensor(rows[i : i + batch_size], dtype=torch.long) for i in range(0, len(rows), batch_size)]


# ---- the loss -----------------------------------------------------------------------------------
def stacked(layout, flat: torch.Tensor, counts: torch.Tensor | None = None) -> RowLora:
    """Flat adapters (B, P) -> per-row factors, as views into `flat` (no copy, gradients kept).
    counts (B,): row i serves counts[i] consecutive sequences; unequal counts repeat its factors."""
    B, off, mods = flat.shape[0], 0, {}
    uneven = counts is not None and bool((counts != counts[0]).any())
    for p, (r, n_in), (n_out, _) in zip(layout.paths, layout.a_shapes, layout.b_shapes):
        a = flat[:, off : off + r * n_in].view(B, r, n_in)  # (B, r, in)
        off += r * n_in
        b = flat[:, off : off + n_out * r].view(B, n_out, r)  # (B, out, r)
        off += n_out * r
        # equal counts need no copy: rowlora's hook gives consecutive sequences their row's adapter
        mods[p] = (a.repeat_interleave(counts, 0), b.repeat_interleave(counts, 0)) if uneven else (a, b)
    n = int(counts.sum()) if uneven else B
    return RowLora(mods, torch.full((n,), layout.alpha / layout.rank, device=flat.device, dtype=flat.dtype))


@contextlib.contextmanager
def _per_row(res, lora: RowLora):
    """Per-row adapters on the resident's base Linears, every peft slot off for the call."""
    from hypergen import rowlora

    with contextlib.ExitStack() as stack:
        if res.peft is not None:
            stack.enter_context(res.peft.disable_adapter())
        stack.enter_context(rowlora.apply(res.model, lora))
        yield


def rows_nll(res, layout, flat: torch.Tensor, examples: list[list[Encoded]]) -> torch.Tensor:
    """(B,) answer-token NLL of each row's examples (mean over the row's answer tokens) under the row's
    flat adapter (B, P), in one forward pass of the frozen base; differentiable in `flat`."""
    counts = torch.tensor([len(e) for e in examples])
    if (counts == 0).any():
        raise HypergenError("Every sft row needs at least one example.")
    enc = collate([e for ex in examples for e in ex], res.tokenizer.pad_token_id)  # right-padded to the longest
    enc = {key: v.to(res.device) for key, v in enc.items()}
    keep = answer_positions(enc["labels"])  # logits only where an answer token follows
    dtype = next(res.model.parameters()).dtype
    lora = stacked(layout, flat.to(res.device, dtype), counts.to(res.device))
    with _per_row(res, lora):
        out = res.forward_model()(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], logits_to_keep=keep)
    target = enc["labels"][:, 1:][keep[:, :-1]]
    tok = F.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]).float(), target, reduction="none")  # (n_tokens,)
    row = torch.repeat_interleave(torch.arange(len(examples), device=res.device), counts.to(res.device))[keep.nonzero()[:, 0]]
    return torch.zeros(len(examples), device=tok.device).index_add(0, row, tok) / torch.bincount(row, minlength=len(examples))


def sft_step(generator, sft: SftData, batch: torch.Tensor, *, validation: bool = False) -> dict[str, torch.Tensor]:
    """The sft loss of a (B, 2 + k) batch of rows (TrainBatches, val_batches): the mean over rows of
    each row's answer NLL under its generated adapter, plus the family's extra terms."""
    if sft is None:
        raise HypergenError("objective 'sft' needs the task data: call prepare_sft(bank, zoo, resident, cfg) and pass it to train_generator(sft_data=...).")
    if "sft" not in generator.objectives:
        raise HypergenError(f"The {generator.family} generator cannot train with objective 'sft' (its objectives: {', '.join(generator.objectives) or 'none'}); use --objective recon.")
    if list(generator.bank.names) != sft.bank_names:
        raise HypergenError("The sft data was prepared for another set of experts than the generator's bank; call prepare_sft with the same bank.")
    tasks = sft.val if validation else sft.tasks
    rows = batch.tolist()
    dev = generator.bank.emb.device
    cond = torch.stack([tasks[r[0]].cond[r[1]] for r in rows]).to(dev)  # (B, D)
    index = torch.tensor([tasks[r[0]].expert for r in rows], device=dev)
    flat, extra = generator.adapter_for_training(cond, {"cond": cond, "index": index})  # (B, P), {name: scalar}
    examples = [[(tasks[r[0]].val if validation else tasks[r[0]].train)[j] for j in r[2:] if j >= 0] for r in rows]
    nll = rows_nll(sft.resident, generator.layout, flat, examples).mean().to(flat.device)
    loss = nll + sum(extra.values()) if extra else nll
    return {"loss": loss, "nll": nll, **extra}
