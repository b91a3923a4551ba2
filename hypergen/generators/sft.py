"""The `sft` objective: train a generator through the frozen base model on tasks' own data.

A batch mixes B rows; a row is (task, one of its descriptions, k of its train examples). The generator
emits every row's adapter at once (flat (B, P), differentiable), the flat vectors are viewed as stacked
per-row factors A (B, r, in) and B (B, out, r) (no per-row LoraWeights), and the frozen base runs ONCE
over the batch's k * B examples, padded only to the batch's longest, with row i's adapter added to its
examples by hypergen.rowlora. The loss is the answer-token cross-entropy, a mean over each row's
answer tokens and then over rows (Text-to-LoRA's SFT objective), plus the family's own extra terms.

Where the tasks come from (TrainConfig.tasks, see hypergen.tasks.sft_data): the zoo experts' tasks, or
every task of a descriptions file or of a suite, with no expert needed, and those of a second suite
(TrainConfig.extra_suite, e.g. the OpenAI evals). Rows are drawn family first
(then task, description, examples), so the two families with ~250 subtasks each do not fill every
batch. The draw for step s is a function of (seed, rank, s) alone: a run resumed after SIGKILL draws
exactly what the uninterrupted one would have. A share of the rows (TrainConfig.sft_prompt_description)
also has the row's description in its prompt, formatted as the evaluation's `+desc` methods format it.

Preparing the tasks of a descriptions file (reading ~800 BIG-bench files, tokenising, embedding ~8,200
descriptions) takes ~10 CPU minutes, so it is cached on disk (paths.home()/cache/sft/<key>.pt), keyed
by every input that changes it (`cache_key`); a run or a resume with the same inputs loads it in seconds.

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
import functools
import hashlib
import json
import os
import random
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from hypergen import paths
from hypergen.data import IGNORE, Encoded, answer_positions, collate, encode_example
from hypergen.errors import HypergenError
from hypergen.identity import require_same_base
from hypergen.rowlora import RowLora

CACHE_VERSION = 1
"""Bump when prepare_sft makes something else of the same inputs: older cache files are then ignored."""
CODE_FILES = ("data.py", "tasks/core.py", "tasks/bigbench.py", "tasks/sni.py", "tasks/jsonl.py", "tasks/prompt.py",
              "tasks/sft_data.py", "tasks/descriptions.py", "tasks/split.py", "tasks/templated.py")
"""The modules (under hypergen/) whose code decides the cached examples: their content is in the key."""
PREPARE_FIELDS = ("tasks", "task_suite", "descriptions", "min_examples", "sft_max_train", "sft_max_tokens")
"""The TrainConfig fields the cached part of prepare_sft reads (the seed, val_families and max_tasks only divide it);
extra_suite and extra_descriptions too, keyed only when set so that the caches made before they existed stay valid."""


@dataclass
class TaskData:
    """One task ready for rows: description embeddings and tokenised examples."""

    name: str
    cond: torch.Tensor  # (k, D) one embedding per description variant
    train: list[Encoded]
    val: list[Encoded]
    expert: int = -1  # bank index when the task is a zoo expert, else -1
    descriptions: list[str] = field(default_factory=list)  # the k variants' texts, for the prompt
    train_text: list[tuple[str, str]] = field(default_factory=list, repr=False)  # (input, target) of each train example
    val_text: list[tuple[str, str]] = field(default_factory=list, repr=False)

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
    max_tokens: int = 128  # sft_max_tokens, for examples tokenised with their description in the prompt

    def __post_init__(self):
        by_family: dict[str, list[int]] = {}
        for i, t in enumerate(self.tasks):
            by_family.setdefault(t.family, []).append(i)
        self.families = list(by_family.values())

    @property
    def fingerprint(self) -> str:
        """Names of the training and validation tasks: a resumed run must train on the same ones."""
        return hashlib.sha1("\n".join([t.name for t in self.tasks] + ["--"] + [t.name for t in self.val]).encode()).hexdigest()[:10]


@dataclass
class Prepared:
    """Every task tokenised and embedded, before the validation families are chosen: what the cache holds."""

    tasks: list[TaskData]
    n_truncated: int = 0
    n_skipped: int = 0
    n_small: int = 0
    known: dict[str, torch.Tensor] = field(default_factory=dict)
    """The zoo experts' description embeddings (same encoder), so that a run from the file as is
    (prepared_encoder) builds its expert bank without the encoder."""


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
        # the zoo's descriptions, in the order the bank embedded them (bank.variants[i])
        tasks.append(SftTask(name, list(zoo.record(name).descriptions), instances(task, split, "train")[: cfg.sft_max_train], instances(task, split, "val"), expert=i))
    return tasks, 0


def _described_sources(cfg):
    """Every task of the descriptions file (or of the suite), divided by hypergen.tasks.sft_data."""
    from hypergen.tasks import load_split, load_suite
    from hypergen.tasks.descriptions import DEFAULT_PATH
    from hypergen.tasks.sft_data import described_tasks

    suite, split = _suite_and_split(cfg.task_suite)
    names = suite.names() if cfg.tasks == "suite" else None
    tasks, small = described_tasks(suite, cfg.descriptions or DEFAULT_PATH, split, names=names, min_examples=cfg.min_examples, max_train=cfg.sft_max_train)
    if cfg.extra_suite:  # e.g. the OpenAI evals: more families; the split still names the held-out ones
        more, more_small = described_tasks(load_suite(cfg.extra_suite), extra_descriptions_path(cfg), split or load_split(),
                                           min_examples=cfg.min_examples, max_train=cfg.sft_max_train)
        clash = sorted({t.name for t in tasks} & {t.name for t in more})
        if clash:
            raise HypergenError(f"--extra-suite {cfg.extra_suite} has tasks named as the first suite's ({', '.join(clash[:3])}): rename them.")
        tasks, small = tasks + more, small + more_small
    return tasks, small


def extra_descriptions_path(cfg) -> Path:
    """--extra-descriptions, else the shipped data/descriptions/<extra_suite>.json."""
    from hypergen.paths import shipped_data

    path = Path(cfg.extra_descriptions).expanduser() if cfg.extra_descriptions else shipped_data(f"descriptions/{cfg.extra_suite}.json")
    if not path.is_file():
        raise HypergenError(f"No descriptions for --extra-suite {cfg.extra_suite} at {path}: give --extra-descriptions FILE "
                            "(data/make_openai_evals_descriptions.py writes the OpenAI evals' one).")
    return path


def _tokenised(sources, small: int, tok, cfg, embed) -> Prepared:
    """Tokenise each source's examples (prompt without description) and embed its descriptions."""
    counts = {"trunc": 0, "skip": 0}

    def encode(instances) -> tuple[list[Encoded], list[tuple[str, str]]]:
        kept = [(e, (i.input, i.targets[0])) for i in instances if (e := encode_example(tok, i.input, i.targets[0], max_tokens=cfg.sft_max_tokens)) is not None]
        counts["skip"] += len(instances) - len(kept)
        counts["trunc"] += sum(e.truncated for e, _ in kept)
        return [e for e, _ in kept], [t for _, t in kept]

    def ready(s) -> TaskData:
        train, train_text = encode(s.train)
        if not train:
            raise HypergenError(f"Task {s.name}: no train example fits in sft_max_tokens={cfg.sft_max_tokens}; raise --sft-max-tokens.")
        val, val_text = encode(s.val)
        return TaskData(s.name, embed(s), train, val, s.expert, list(s.descriptions), train_text, val_text)

    tasks = [ready(s) for s in sources]
    return Prepared(tasks, counts["trunc"], counts["skip"], small)


def prepare_sft(bank, zoo, resident, cfg, *, encoder=None, prepared: str | Path | None = None) -> SftData:
    """Read, divide and tokenise the training tasks (cfg.tasks), embed their descriptions, choose the
    validation families (cfg.val_families), then keep cfg.max_tasks of the rest (first_tasks). The
    resident's base is frozen: only the generator trains.
    encoder: the description encoder (default: the bank's, by name) for tasks that are not zoo experts.
    The tasks of a descriptions file or suite come from the on-disk cache when their inputs are unchanged.
    prepared: a prepared-tasks file to use as is instead (prepared_as_is), e.g. carried to another machine."""
    from hypergen.tasks.sft_data import split_families

    require_same_base(bank.meta.get("base_model"), resident.name, f"The zoo at {bank.meta.get('zoo')}")
    enc_name = encoder.name if encoder is not None else (bank.meta.get("encoder") or "minilm")
    if bank.meta.get("encoder") and enc_name != bank.meta["encoder"]:
        raise HypergenError(f"The descriptions would be embedded with {enc_name!r} but the generator's bank uses {bank.meta['encoder']!r}: use one encoder.")
    n_val = cfg.val_families if cfg.val_families is not None else (0 if cfg.tasks == "zoo" else 4)
    if prepared is not None and cfg.tasks == "zoo":
        raise HypergenError("A prepared-tasks file (--prepared) holds the tasks of --tasks descriptions or suite; the zoo's tasks are read from the zoo.")
    if cfg.tasks == "zoo":  # 60 tasks at most, embedded already: not worth a cache
        sources, small = _zoo_sources(bank, zoo, cfg)
        split_families(sources, n_val, cfg.seed)  # a bad --val-families fails before the tokenising
        prep = _tokenised(sources, small, resident.tokenizer, cfg, lambda s: bank.variants[s.expert])
    else:

        def build() -> Prepared:
            from hypergen.text import load_encoder, one_line_for_long_descriptions

            sources, small = _described_sources(cfg)
            split_families(sources, n_val, cfg.seed)  # a bad --val-families fails before the slow part
            enc = encoder if encoder is not None else load_encoder(enc_name)
            with one_line_for_long_descriptions():
                prep = _tokenised(sources, small, resident.tokenizer, cfg, lambda s: enc.encode(s.descriptions).float())
            if zoo is not None:  # the bank's texts, as it embedded them (ExpertBank.from_zoo)
                prep.known = {t: e for n, v in zip(bank.names, bank.variants) for t, e in zip(zoo.record(n).descriptions, v)}
            return prep

        if prepared is not None:
            prep = prepared_as_is(prepared, cfg, resident, enc_name)
        else:
            prep = cached(cache_inputs(cfg, resident, enc_name), build)
        index = {n: i for i, n in enumerate(bank.names)}  # the cache knows no bank: experts are found here
        for t in prep.tasks:
            t.expert = index.get(t.name, -1)
    train, val = split_families(prep.tasks, n_val, cfg.seed)
    train = first_tasks(train, cfg.max_tasks, cfg.seed)  # after validation is set apart: the same val for every max_tasks
    for p in resident.model.parameters():
        p.requires_grad_(False)
    return SftData(resident, train, val, cfg.sft_examples, list(bank.names), n_truncated=prep.n_truncated, n_skipped=prep.n_skipped,
                   n_small=prep.n_small, max_tokens=cfg.sft_max_tokens)


def first_tasks(tasks: list, n: int | None, seed: int) -> list:
    """`n` of `tasks` (all when n is None or not smaller), drawn by `seed` and kept in their order
    (TrainConfig.max_tasks, for the scaling curve). Nested: for one seed and task list, the tasks kept for
    a smaller n are among those kept for a larger one. (Here, not in tasks/sft_data.py: that module's code
    is part of the prepared tasks' cache key, and this choice happens after the cache.)"""
    if n is None or n >= len(tasks):
        return tasks
    order = list(range(len(tasks)))
    random.Random(f"tasks:{seed}").shuffle(order)
    keep = set(order[:n])
    return [t for i, t in enumerate(tasks) if i in keep]


# ---- the cache of prepared tasks ----------------------------------------------------------------
def _sha1_file(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _suite_stamp(name: str) -> dict:
    """What says the suite changed, without reading it: its location, BIG-bench's reader version, and
    each file's name, size and mtime (1.7 GB of BIG-bench files are too slow to hash on every start)."""
    from hypergen.tasks.bigbench import READER_VERSION
    from hypergen.tasks.core import readers

    reader = next((r for r in readers() if r.name == name and r.default is not None), None)
    root = Path(reader.default() if reader is not None else name).expanduser().resolve()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    stamp = [[str(p.relative_to(root)) if p != root else p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    return {"suite": name, "root": str(root), "bigbench_reader": READER_VERSION, "files": hashlib.sha1(json.dumps(stamp).encode()).hexdigest()}


def _tokenizer_stamp(resident) -> dict:
    """The base's name and its tokenizer and chat template files' content."""
    folder = getattr(resident, "path", None)
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.name.startswith(("tokenizer", "chat_template", "special_tokens", "vocab", "merges"))) if folder else []
    tok = resident.tokenizer
    return {"base": resident.name, "files": {p.name: _sha1_file(p) for p in files}, "vocab": len(tok), "chat_template": tok.chat_template}


def cache_inputs(cfg, resident, encoder_name: str, *, stamps: bool = True) -> dict:
    """Every input of the cached part of prepare_sft: the descriptions file's content, the suite
    (`_suite_stamp`), the split file's content (BIG-bench), the tokenizer, the encoder's name, the
    TrainConfig fields in PREPARE_FIELDS, the code in CODE_FILES and CACHE_VERSION. stamps=False leaves out
    what is read from the task files and code (the part a file used as is, `prepared_as_is`, need not match)."""
    from hypergen.tasks.descriptions import DEFAULT_PATH
    from hypergen.tasks.split import DEFAULT_PATH as SPLIT_PATH

    inputs = {"version": CACHE_VERSION, "config": {k: getattr(cfg, k) for k in PREPARE_FIELDS}, "tokenizer": _tokenizer_stamp(resident),
              "encoder": encoder_name, **({"extra": {"config": [cfg.extra_suite, cfg.extra_descriptions]}} if cfg.extra_suite else {})}
    if not stamps:
        return inputs
    code = Path(__file__).parents[1]
    inputs |= {
        "descriptions": _sha1_file(Path(cfg.descriptions or DEFAULT_PATH).expanduser()),
        "suite": _suite_stamp(cfg.task_suite),
        "split": _sha1_file(Path(SPLIT_PATH)) if cfg.task_suite == "bigbench" else None,  # as _suite_and_split reads it
        # the code that reads, frames and tokenises the tasks: an edit there rebuilds, no version bump needed
        "code": {f: _sha1_file(code / f) for f in CODE_FILES},
    }
    if cfg.extra_suite:
        inputs["extra"] |= {"suite": _suite_stamp(cfg.extra_suite), "descriptions": _sha1_file(extra_descriptions_path(cfg)),
                            "code": _sha1_file(code / "tasks/openai_evals.py")}
    return inputs


def _digest(inputs: dict) -> str:
    return hashlib.sha1(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cache_key(cfg, resident, encoder_name: str) -> str:
    """A hash of cache_inputs: the name of the prepared tasks' file in the cache."""
    return _digest(cache_inputs(cfg, resident, encoder_name))


def _must_match(inputs: dict) -> dict:
    """The inputs a file used as is must share with the run: base, tokenizer, encoder and the preparing settings."""
    tok = inputs["tokenizer"]
    return {"base": tok["base"], "tokenizer (vocabulary size, chat template)": [tok["vocab"], tok["chat_template"]],
            "encoder": inputs["encoder"], "settings": inputs["config"], "second suite": (inputs.get("extra") or {}).get("config")}


def prepared_as_is(path: Path, cfg, resident, encoder_name: str) -> Prepared:
    """The prepared tasks in a file a run made (the cache's <key>.pt, whose path prepare_sft prints), used as
    they are: the task files, descriptions files and code they were read with need not be on this machine
    (e.g. a file carried to a lent GPU). Refused when it was made for another base, tokenizer, encoder or
    preparing settings (PREPARE_FIELDS, the second suite), naming both."""
    data = _read_as_is(path)
    got, want = _must_match(data["inputs"]), _must_match(cache_inputs(cfg, resident, encoder_name, stamps=False))
    for what in want:
        if got[what] != want[what]:
            raise HypergenError(f"{path} was prepared with {what} {got[what]!r}; this run has {want[what]!r}. Use a file made with the run's own settings.")
    return _prepared(data)


def prepared_encoder(path: Path, encoder: str, load) -> KnownEmbeddings:
    """The encoder `encoder` (e.g. minilm) as far as the prepared-tasks file at `path` holds its embeddings:
    its tasks' descriptions and the zoo's (Prepared.known). `load()` gives the real encoder, loaded only for
    a text the file does not hold, so a run from a carried file needs no copy of the encoder."""
    from hypergen.text import KnownEmbeddings, encoder_name

    data, name = _read_as_is(path), encoder_name(encoder)
    if data["inputs"]["encoder"] != name:
        raise HypergenError(f"{path} was prepared with encoder {data['inputs']['encoder']!r}; this run has {name!r}. Use a file made with the run's own settings.")
    table = {d: e for t in data["tasks"] for d, e in zip(t["descriptions"], t["cond"])} | _known(data)
    return KnownEmbeddings(name, table, load)


@functools.lru_cache(maxsize=1)
def _read(path: Path, stamp: tuple) -> dict:
    """The file's content, read once for both prepared_encoder and prepared_as_is (`stamp`: its size and mtime)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _read_as_is(path: Path) -> dict:
    """The content of a prepared-tasks file given by its path, refused clearly when it cannot be used as is."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise HypergenError(f"No prepared-tasks file at {path}: a run with --tasks descriptions or suite prints the path of the one it made.")
    try:
        data = _read(path.resolve(), (path.stat().st_size, path.stat().st_mtime_ns))
    except Exception as e:
        raise HypergenError(f"{path} is not a readable prepared-tasks file ({type(e).__name__}).") from None
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        raise HypergenError(f"{path} is not a prepared-tasks file of this version ({CACHE_VERSION}); make it again with the run's own command.")
    if "inputs" not in data:
        raise HypergenError(f"{path} was made before prepared-tasks files recorded their inputs (2026-12-02): delete it and run the same "
                            "`hypergen train` command once to make it again (~7 min for the shipped recipe).")
    return data


def cache_path(key: str) -> Path:
    return paths.home() / "cache" / "sft" / f"{key}.pt"


def _pack(examples: list[Encoded]) -> dict[str, torch.Tensor]:
    """Encoded examples as 4 tensors (labels are IGNORE over the prompt, then the answer's ids)."""
    return {"ids": torch.tensor([i for e in examples for i in e.input_ids], dtype=torch.int32),
            "lens": torch.tensor([len(e.input_ids) for e in examples], dtype=torch.int64),
            "prompt": torch.tensor([sum(x == IGNORE for x in e.labels) for e in examples], dtype=torch.int64),
            "truncated": torch.tensor([e.truncated for e in examples], dtype=torch.bool)}


def _unpack(p: dict[str, torch.Tensor]) -> list[Encoded]:
    ids, out, at = p["ids"].tolist(), [], 0
    for n, k, cut in zip(p["lens"].tolist(), p["prompt"].tolist(), p["truncated"].tolist()):
        e = ids[at : at + n]
        out.append(Encoded(e, [IGNORE] * k + e[k:], cut))
        at += n
    return out


def _save(path: Path, prep: Prepared, inputs: dict) -> None:
    """Plain tensors, strings and lists (loadable with weights_only=True), with the inputs they were made from
    (cache_inputs), written to a temporary file and renamed: a killed writer never leaves a half file under the key."""
    tasks = [{"name": t.name, "cond": t.cond, "train": _pack(t.train), "val": _pack(t.val), "descriptions": t.descriptions,
              "train_text": [list(x) for x in t.train_text], "val_text": [list(x) for x in t.val_text]} for t in prep.tasks]
    data = {"version": CACHE_VERSION, "tasks": tasks, "counts": [prep.n_truncated, prep.n_skipped, prep.n_small],
            "inputs": json.loads(json.dumps(inputs, default=str)),
            "known": {"texts": list(prep.known), "emb": torch.stack(list(prep.known.values())) if prep.known else torch.zeros(0)}}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(data, f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _prepared(data: dict) -> Prepared:
    tasks = [TaskData(t["name"], t["cond"], _unpack(t["train"]), _unpack(t["val"]), -1, list(t["descriptions"]),
                      [tuple(x) for x in t["train_text"]], [tuple(x) for x in t["val_text"]]) for t in data["tasks"]]
    return Prepared(tasks, *data["counts"], known=_known(data))


def _known(data: dict) -> dict[str, torch.Tensor]:
    known = data.get("known") or {"texts": []}  # older files hold none: the zoo's texts then need the encoder
    return dict(zip(known["texts"], known.get("emb", [])))


def _load(path: Path) -> Prepared | None:
    """The prepared tasks at `path`, or None when it is missing, unreadable or of another version (then it is rebuilt)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        return _prepared(data) if data.get("version") == CACHE_VERSION else None
    except FileNotFoundError:
        return None
    except Exception as e:  # a file from a crash or another version: rebuild it, never fail the run
        print(f"Ignoring the unreadable sft cache {path} ({type(e).__name__}); rebuilding it.", file=sys.stderr, flush=True)
        return None


def cached(inputs: dict, build) -> Prepared:
    """The prepared tasks saved under the key of `inputs` (cache_inputs), or build() saved there with them."""
    path = cache_path(_digest(inputs))
    prep = _load(path)
    if prep is None:
        prep = build()
        _save(path, prep, inputs)
    print(f"Prepared tasks: {path}", file=sys.stderr, flush=True)
    return prep


# ---- batches ------------------------------------------------------------------------------------
def _with_description(key: str, share: float) -> int:
    """1 for a row whose prompt also holds its description: a draw of its own, so that a share of 0
    leaves every other draw (and so the batches of runs made before the share existed) unchanged."""
    return int(share > 0 and random.Random(f"{key}:prompt").random() < share)


class TrainBatches(torch.utils.data.Dataset):
    """Step s -> its (B, 3 + k) batch of rows [task, variant, description in the prompt (0/1), example
    indices (-1 = none)], drawn family first from (seed, rank, s) alone, so a resumed run continues the
    very same sequence. prompt_description: the share of rows with their description in the prompt."""

    def __init__(self, sft: SftData, batch_size: int, seed: int, rank: int = 0, *, prompt_description: float = 0.0):
        self.sft, self.batch_size, self.key, self.share = sft, batch_size, f"{seed}:{rank}", prompt_description

    def __len__(self) -> int:
        return 2**62  # indexed by step; the sampler says which steps

    def __getitem__(self, step: int) -> torch.Tensor:
        rng = random.Random(f"{self.key}:{step}")
        k, rows = self.sft.n_examples, []
        for i in range(self.batch_size):
            t = rng.choice(rng.choice(self.sft.families))
            task = self.sft.tasks[t]
            ex = rng.sample(range(len(task.train)), min(k, len(task.train)))
            desc = _with_description(f"{self.key}:{step}:{i}", self.share)
            rows.append([t, rng.randrange(len(task.cond)), desc, *ex, *[-1] * (k - len(ex))])
        return torch.tensor(rows, dtype=torch.long)


def val_batches(sft: SftData, batch_size: int, *, prompt_description: float = 0.0, seed: int = 0) -> list[torch.Tensor]:
    """The fixed validation rows: each validation task with its first description and its first k val
    examples (tasks with no val example are left out), batch_size rows at a time. The same share of rows
    as in training has the description in the prompt, the same rows at every validation."""
    k, rows = sft.n_examples, []
    for t, task in enumerate(sft.val):
        n = min(k, len(task.val))
        if n:
            rows.append([t, 0, _with_description(f"{seed}:val:{t}", prompt_description), *range(n), *[-1] * (k - n)])
    return [torch.tensor(rows[i : i + batch_size], dtype=torch.long) for i in range(0, len(rows), batch_size)]


def batch_examples(sft: SftData, batch: torch.Tensor, *, validation: bool = False) -> list[list[Encoded]]:
    """Each row's examples, tokenised: as prepared, or with the row's description in the prompt (as
    hypergen.data.encode_example formats it for the evaluation's `+desc` methods) when its flag is set.
    An example whose answer no longer fits beside the description keeps its plain prompt."""
    tasks = sft.val if validation else sft.tasks
    out = []
    for t, v, desc, *idx in batch.tolist():
        task = tasks[t]
        plain, texts = (task.val, task.val_text) if validation else (task.train, task.train_text)
        if desc and (not texts or not task.descriptions):
            raise HypergenError(f"Task {task.name} was prepared without its texts, so its description cannot go in the prompt; prepare it with prepare_sft.")
        row = []
        for j in (j for j in idx if j >= 0):
            e = encode_example(sft.resident.tokenizer, *texts[j], description=task.descriptions[v], max_tokens=sft.max_tokens) if desc else None
            row.append(e or plain[j])
        out.append(row)
    return out


# ---- the loss -----------------------------------------------------------------------------------
def stacked(layout, flat: torch.Tensor, counts: torch.Tensor) -> RowLora:
    """Flat adapters (B, P) -> per-row factors, as views into `flat` (no copy, gradients kept).
    counts (B,): row i serves counts[i] consecutive sequences; unequal counts repeat its factors."""
    B, off, mods = flat.shape[0], 0, {}
    uneven = bool((counts != counts[0]).any())
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
        stack.enter_context(res.adapters_off())
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


def partners(tasks: list[int]) -> list[tuple[int, int]]:
    """(row, partner) pairs for the contrast term: each row with the next row of the batch (cyclically),
    kept only where the partner's task is another one. Rows are drawn family first, so most pairs are
    of different families; a batch of one task has none."""
    n = len(tasks)
    return [(i, (i + 1) % n) for i in range(n) if tasks[(i + 1) % n] != tasks[i]]


SPREAD_FAMILIES = 64
"""How many training families (evenly spaced, one description each) adapter_spread reads besides the validation ones."""


@torch.no_grad()
def adapter_spread(generator, sft: SftData, n_families: int = SPREAD_FAMILIES) -> float | None:
    """Layout.spread of the adapters the generator makes, in eval mode, from the first description of the
    first task of up to n_families training families (evenly spaced) and of every validation family: 0 when
    it makes one adapter whatever the description, ~1 when they have nothing in common, as the zoo's experts
    (0.95). A cheap reading of how far a description moves the adapter, logged at each validation
    (`adapter_spread`); whether that motion helps an unseen task is what the controls measure.
    None with fewer than 2 families."""
    train = [sft.tasks[f[0]] for f in sft.families]  # the first task of each training family
    picked = train[:: -(-len(train) // n_families)] if train else []  # step ceil(N / n): at most n_families
    tasks = picked + list({t.family: t for t in reversed(sft.val)}.values())  # and of each validation family
    if len(tasks) < 2:
        return None
    was_training, dev = generator.training, generator.bank.emb.device
    generator.eval()
    try:
        cond = torch.stack([t.cond[0] for t in tasks]).to(dev)
        flat, _ = generator.adapter_for_training(cond, {"cond": cond, "index": torch.tensor([t.expert for t in tasks], device=dev)})
    finally:
        generator.train(was_training)
    return generator.layout.spread(flat)


def sft_step(generator, sft: SftData, batch: torch.Tensor, *, validation: bool = False, other: bool = False,
             contrast: float = 0.0, margin: float = 0.5) -> dict[str, torch.Tensor]:
    """The sft loss of a (B, 3 + k) batch of rows (TrainBatches, val_batches): the mean over rows of
    each row's answer NLL under its generated adapter, plus the family's extra terms.

    other: the evaluation's "another task's description" control. Each row's adapter is made from the
    first description of the next task in the list; the row's examples stay its own, and so does any
    description in its prompt. Validation measures it on unseen families, beside the plain NLL.

    contrast, margin: a training signal for the description's effect on answers (TrainConfig.contrast).
    Each row's examples are also scored under another row's adapter (`partners`: another task's
    description), in the same forward pass over twice the rows, and the loss adds
        contrast * mean over pairs of relu(margin + NLL(own adapter) - NLL(partner's adapter)),
    a hinge that is zero once the row's own adapter beats the other task's by `margin` nats per answer
    token. Its gradient flows through both adapters: it also makes the partner's adapter worse on this
    row's task. Logged as "contrast" (the weighted term), "nll_other" (the partners' mean NLL) and
    "other_minus_own" (the mean paired gap, what the hinge reads)."""
    if sft is None:
        raise HypergenError("objective 'sft' needs the task data: call prepare_sft(bank, zoo, resident, cfg) and pass it to train_generator(sft_data=...).")
    if "sft" not in generator.objectives:
        raise HypergenError(f"The {generator.family} generator cannot train with objective 'sft' (its objectives: {', '.join(generator.objectives) or 'none'}); use --objective recon.")
    if list(generator.bank.names) != sft.bank_names:
        raise HypergenError("The sft data was prepared for another set of experts than the generator's bank; call prepare_sft with the same bank.")
    tasks = sft.val if validation else sft.tasks
    rows = batch.tolist()
    if other:
        if len(tasks) < 2:
            raise HypergenError("The other-description control needs at least 2 tasks.")
        rows = [[(r[0] + 1) % len(tasks), 0] for r in rows]  # whose description makes the adapter
    dev = generator.bank.emb.device
    cond = torch.stack([tasks[r[0]].cond[r[1]] for r in rows]).to(dev)  # (B, D)
    index = torch.tensor([tasks[r[0]].expert for r in rows], device=dev)
    flat, extra = generator.adapter_for_training(cond, {"cond": cond, "index": index})  # (B, P), {name: scalar}
    examples = batch_examples(sft, batch, validation=validation)
    pairs = partners([r[0] for r in rows]) if contrast > 0 and not validation else []
    if pairs:  # the partners' adapters on the rows' own examples, in the same pass
        own_i, mate = (torch.tensor(x, device=flat.device) for x in zip(*pairs))
        both = rows_nll(sft.resident, generator.layout, torch.cat([flat, flat[mate]]), examples + [examples[i] for i, _ in pairs]).to(flat.device)
        per_row, nll_other = both[: len(rows)], both[len(rows) :]
        gap = nll_other - per_row[own_i]  # (pairs,) > 0: the own description's adapter does better
        extra = {**extra, "contrast": contrast * F.relu(margin - gap).mean()}
        logged = {"nll_other": nll_other.mean().detach(), "other_minus_own": gap.mean().detach()}
    else:
        per_row, logged = rows_nll(sft.resident, generator.layout, flat, examples).to(flat.device), {}
    nll = per_row.mean()
    loss = nll + sum(extra.values()) if extra else nll
    return {"loss": loss, "nll": nll, **extra, **logged}
