"""The public facade. The CLI and the Streamlit app call only these functions.

Heavy objects (base model, encoder, generators) are loaded once per process and kept resident, so a
second call costs only the work it asks for.

Where things are found when not given:
- the zoo: HYPERGEN_ZOO, else the shipped zoo/ of the source checkout, else the zoo `hypergen zoo
  build` made in the cache (paths.home()/zoo/bigbench);
- a generator's checkpoint, in this order: an explicit folder (--checkpoint), then the user's trained
  one in the cache (paths.home()/generators/NAME, where `hypergen train` writes), then the shipped one
  (HYPERGEN_GENERATORS/NAME, else the source checkout's generators/NAME).
A `pip install .` puts the package in site-packages, away from the checkout's zoo/ and generators/:
point HYPERGEN_ZOO and HYPERGEN_GENERATORS at them (e.g. in a clone of the repository).
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import json
import os
import platform
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from hypergen import paths
from hypergen.errors import HypergenError
from hypergen.identity import base_name, require_same_base

PACKAGES = ("hypergen", "torch", "transformers", "peft", "pytorch-lightning", "sentence-transformers", "wandb", "streamlit", "typer")


def resident(base: str | Path | None = None, device: str = "auto"):
    """The process-wide ResidentModel for (base, device); loaded on first use. `resident()`,
    `resident(None, "auto")` and a Path or str of one folder are the same model, loaded once."""
    return _resident(str(Path(base).expanduser().resolve()) if base is not None else None, device)


@functools.lru_cache(maxsize=4)
def _resident(base: str | None, device: str):
    from hypergen.base import load_base

    return load_base(base, device=device)


def encoder(name: str = "minilm"):
    """The process-wide description encoder (minilm, or fake in tests); loaded once."""
    return _encoder(name)


@functools.lru_cache(maxsize=2)
def _encoder(name: str):
    from hypergen.text import load_encoder

    return load_encoder(name)


def info(base: str | None = None, device: str = "auto") -> dict:
    """Facts about this installation; loads nothing heavy beyond torch.

    base: a local Hugging Face model folder instead of SmolLM2. device: auto, cpu or cuda.
    """
    import torch

    from hypergen import assets
    from hypergen.base import pick_device

    base_path = Path(base).expanduser() if base else assets.smollm2_path()
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = md.version(p)
        except md.PackageNotFoundError:
            versions[p] = None
    return {
        "base_model": base_name(base),
        "base_model_path": str(base_path),
        "base_model_ready": (base_path / "config.json").is_file(),
        "encoder": assets.MINILM_NAME,
        "encoder_path": str(assets.minilm_path()),
        "encoder_ready": (assets.minilm_path() / "config.json").is_file(),
        "device": str(pick_device(device)),
        "cuda_available": torch.cuda.is_available(),
        "home": str(paths.home()),
        "cache": {"models": str(paths.models_dir()), "downloads": str(paths.downloads_dir()), "data": str(paths.data_dir()), "runs": str(paths.runs_dir())},
        "python": platform.python_version(),
        "versions": versions,
    }


def answer(
    texts: Sequence[str] | str,
    *,
    adapter: str | Path | None = None,
    description: str | None = None,
    base: str | None = None,
    device: str = "auto",
    max_new_tokens: int = 64,
) -> list[str]:
    """Answer inputs with the resident base, optionally with a PEFT adapter folder active.
    A bare string is one input. Safe to call from several threads: each call answers with its own adapter.

    adapter: a PEFT adapter folder to activate. description: put this task description in the prompt.
    base: a local Hugging Face model folder instead of SmolLM2. device: auto, cpu or cuda.
    max_new_tokens: the longest answer, in tokens.
    """
    from hypergen.lora import LoraWeights

    texts = _inputs(texts, "texts")
    if not texts:
        raise HypergenError("Empty input: give the text to answer, e.g. hypergen answer \"What is 2+2?\".")
    if description is not None and not _text(description, "description").strip():
        raise HypergenError("Empty --description: describe the task in words or leave the option out.")
    _integer(max_new_tokens, "max_new_tokens", 1, MAX_NEW_TOKENS)
    weights = LoraWeights.load(adapter) if adapter is not None else None
    with _LOAD_LOCK:
        model = resident(base, device)
    if weights is not None:
        require_same_base(weights.base_model, model.name, f"The adapter at {adapter}")
    with model.lock:  # activate + answer as one step, or another thread's adapter answers
        if weights is None:
            model.deactivate()
        else:
            model.activate(weights)
        return model.answer(texts, description=description, max_new_tokens=max_new_tokens)


# ---- argument checks: a wrong type gets a message naming the argument, not a TypeError deep inside --
def _text(value, name: str) -> str:
    if not isinstance(value, str):
        raise HypergenError(f"{name} must be a string; got {type(value).__name__} {value!r:.60}.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # lone surrogates: what Python makes of undecodable bytes in argv or a file read with errors="surrogateescape"
        raise HypergenError(f"{name} is not valid UTF-8 text: decode it as UTF-8 (or fix the terminal's encoding) and try again.") from None
    return value


def _inputs(value, name: str) -> list[str]:
    """None -> [], a bare string -> [it], else a list of non-empty strings."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence) or isinstance(value, (bytes, bytearray)):
        raise HypergenError(f"{name} must be a string or a list of strings; got {type(value).__name__}.")
    texts = [_text(t, f"{name}[{i}]") for i, t in enumerate(value)]
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise HypergenError(f"Empty input: {name}[{empty[0]}] is blank; give the text to answer.")
    return texts


def _integer(value, name: str, low: int, high: int | None = None, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HypergenError(f"{name} must be an integer; got {type(value).__name__} {value!r:.60}.")
    if value < low:
        raise HypergenError(f"{name} must be >= {low}; got {value}.")
    if high is not None and value > high:
        raise HypergenError(f"{name} must be at most {high}{why}; got {value}.")
    return value


def _script_note(text: str) -> str | None:
    """A warning when NON_LATIN_SHARE or more of the letters are not Latin script. Judged by the letters'
    Unicode names, not by guessing the language: French passes unwarned, Chinese, Arabic or Cyrillic do not."""
    import unicodedata

    letters = [c for c in text if unicodedata.category(c).startswith("L")]
    other = sum("LATIN" not in unicodedata.name(c, "") for c in letters)
    if not letters or other / len(letters) < NON_LATIN_SHARE:
        return None
    return (f"{other / len(letters):.0%} of the description's letters are not Latin script, but the description encoder "
            "(all-MiniLM-L6-v2) was trained on English only: the match to the zoo is unreliable. Describe the task in English.")


def setup(bigbench: bool = False) -> dict[str, str]:
    """Download and convert the models (and optionally BIG-bench) into the cache; idempotent.

    bigbench: also fetch the BIG-bench tasks (358 MB download).
    """
    from hypergen import assets

    return assets.setup(bigbench=bigbench)


DATA_SOURCES = ("bigbench", "openai_evals")


def fetch_data(source: str, force: bool = False) -> Path:
    """Download a task source from PyPI into the cache; returns where its tasks are read from.

    bigbench: the sdist, of which only the task.json files are extracted. openai_evals: the `evals`
    wheel, read in place (hypergen.tasks.openai_evals). force: extract BIG-bench again even if present.
    """
    if source not in DATA_SOURCES:
        raise HypergenError(f"Unknown data source {source!r}; available: {', '.join(DATA_SOURCES)}. For Super-NaturalInstructions, pass your folder with --suite.")
    if source == "openai_evals":
        from hypergen.tasks.openai_evals import fetch_openai_evals

        return fetch_openai_evals()
    from hypergen.tasks import fetch_bigbench

    return fetch_bigbench(force=force)


# ---- where the shipped zoo and generators are (module docstring) --------------------------------
def _checkout() -> Path | None:
    """The source checkout hypergen runs from (an editable install or the repo on sys.path), else None."""
    return paths.REPO_ROOT if paths.is_checkout() else None


def _shipped(env: str, folder: str) -> Path | None:
    """$env when set, else the checkout's `folder`, else None (an installed wheel ships neither)."""
    if os.environ.get(env):
        path = Path(os.environ[env]).expanduser()
        if not path.is_dir():
            raise HypergenError(f"{env}={path} is not a folder: point it at the {folder}/ folder of a hypergen checkout, or unset it.")
        return path
    root = _checkout()
    return root / folder if root is not None else None


# ---- zoo ---------------------------------------------------------------------------------------
def default_zoo_path() -> Path:
    """The zoo used when none is given: HYPERGEN_ZOO, else the checkout's shipped zoo/, else the cache build."""
    shipped = _shipped("HYPERGEN_ZOO", "zoo")
    if shipped is not None and (os.environ.get("HYPERGEN_ZOO") or (shipped / "manifest.json").is_file()):
        return shipped
    built = paths.home() / "zoo" / "bigbench"
    if (built / "manifest.json").is_file():
        return built
    where = f"in {shipped}" if shipped is not None else "beside the package: this is an installed copy, not a source checkout"
    raise HypergenError(f"No zoo: the shipped zoo is not {where}, and none was built in {built}. "
                        "Point HYPERGEN_ZOO at a zoo folder (e.g. zoo/ in a clone of hypergen), pass --zoo, or build one with `hypergen zoo build`.")


def zoo(path: str | Path | None = None):
    from hypergen.zoo.store import Zoo

    return Zoo(path or default_zoo_path())


def zoo_list(path: str | Path | None = None) -> list[dict]:
    """One dict per expert: name, description, steps, metric, base and expert scores.

    path: the zoo folder (default: HYPERGEN_ZOO, the shipped zoo/, else the cache build).
    """
    z = zoo(path)
    return [
        {
            "name": r.name,
            "description": r.description,
            "steps": r.steps,
            "metric": r.metric,
            "base_score": round(r.base_score["main"], 4),
            "expert_score": round(r.expert_score["main"], 4),
            "gain": round(r.gain, 4),
        }
        for r in z.records()
    ]


@dataclass
class ZooBuild:
    """What zoo_build made. reports: whether this process reports it; with devices > 1 every process
    launched runs the caller's code, and only the first (rank 0) should speak."""

    root: Path
    experts: int
    reports: bool


def zoo_build(cfg) -> ZooBuild:
    """Build or resume a zoo (BuildConfig)."""
    from hypergen.zoo.build import build_zoo

    z = build_zoo(cfg)
    # the launcher gives the processes it starts their rank in the environment; the first has none
    rank = os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))
    return ZooBuild(z.root, len(z), rank == "0")


def zoo_multitask(cfg, steps: int = 400, per_task: int = 100) -> dict:
    """Train the multi-task LoRA baseline beside the zoo's experts (BuildConfig `cfg`: its tasks and expert
    training settings, whose step count and checkpoint choice this overrides); returns its record. One
    already in the zoo, trained on the same tasks with the same settings, is kept (a rerun takes seconds).

    steps: optimizer steps of the multi-task LoRA. per_task: train instances taken from each task (balanced).
    """
    from dataclasses import asdict

    from hypergen.zoo.build import build_multitask

    return asdict(build_multitask(cfg, steps=steps, per_task=per_task))


def zoo_report(path: str | Path | None = None, out: str | Path = "docs/zoo.md", command: str = "hypergen zoo build --limit 60 --steps 100",
               title: str = "The expert zoo") -> Path:  # the defaults are hypergen.zoo.report's COMMAND and TITLE (the CLI reads them here)
    """Write the zoo table (base vs expert score per task) and its summary line as Markdown; returns the file.

    path: the zoo folder (default: HYPERGEN_ZOO, the shipped zoo/, else the cache build). out: the Markdown file to write.
    command: the command that built the zoo, quoted in the report. title: the page's heading.
    """
    from hypergen.zoo.report import write_report

    return write_report(zoo(path), out, command, title)


def zoo_pack(source: str | Path, dest: str | Path) -> Path:
    """Copy a built zoo into a compact shippable one (int8 per-row absmax, final adapters only)."""
    return zoo(source).pack(dest).root


# ---- generators --------------------------------------------------------------------------------
# The held-out evaluation (`hypergen eval`, docs/results/heldout, its summary's bar.default) picks the default
# generator and mode: the best family-weighted main score among the generators, alone or with the description
# in the prompt (+desc), whose own description beats gibberish by >= 0.03; when none does, the lowest
# family-weighted reference NLL among those that take the description (eval.stats.bar). tests/test_shipped.py
# holds them to it.
DEFAULT_GENERATOR = "t2l"
DEFAULT_PROMPT_DESCRIPTION = True  # the default mode: the description in the prompt as well as in the adapter
FALLBACK_GENERATOR = "mix"  # used while the default has no trained checkpoint (e.g. before one ships)
MAX_DESCRIPTION_CHARS = 4000
MAX_NEW_TOKENS = 2048  # per answer
MAX_SAMPLES = 64  # each sample is a whole adapter in memory; 10,000 would need ~50 GB
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a 64-bit seed
NON_LATIN_SHARE = 0.3  # at least this share of non-Latin letters gets the English-only warning
# Generators may keep per-call state (train/eval mode, context vars) and warnings.catch_warnings is
# process-global: one encode + generate at a time. The resident model has its own lock (activate + answer).
_GENERATE_LOCK = threading.Lock()
_LOAD_LOCK = threading.RLock()  # two threads' first calls load one model, not two (the cached loaders nest)


def generators_dir() -> Path:
    """The user's trained checkpoints: where `hypergen train` writes, and looked in before the shipped ones."""
    return paths.home() / "generators"


def shipped_generators_dir() -> Path | None:
    """The shipped checkpoints: HYPERGEN_GENERATORS, else the checkout's generators/, else None."""
    return _shipped("HYPERGEN_GENERATORS", "generators")


def checkpoint_path(name: str, checkpoint: str | Path | None = None) -> Path | None:
    """The checkpoint generator `name` loads, in one order: `checkpoint` when given, then the user's
    trained one (generators_dir()/name), then the shipped one; None when there is none."""
    if checkpoint is not None:
        return Path(checkpoint).expanduser()
    for root in (generators_dir(), shipped_generators_dir()):
        if root is not None and (root / name / "generator.json").is_file():
            return root / name
    return None


def default_generator() -> str:
    """DEFAULT_GENERATOR when it needs no checkpoint or has one, else the best baseline that needs none."""
    from hypergen.generators import get_family

    if not get_family(DEFAULT_GENERATOR).trainable or checkpoint_path(DEFAULT_GENERATOR) is not None:
        return DEFAULT_GENERATOR
    return FALLBACK_GENERATOR


def pack_generator(source: str | Path, dest: str | Path) -> Path:
    """Copy a trained generator checkpoint into a compact shippable one (int8 per-row absmax matrices)."""
    from hypergen.generators import pack_generator as pack

    return pack(source, dest)


def list_generators() -> list[str]:
    from hypergen.generators import registered

    return sorted(registered())


@functools.lru_cache(maxsize=2)
def bank(zoo_path: str | None = None, encoder_name: str = "minilm"):
    """The zoo as tensors (expert embeddings + weights), built once per process."""
    from hypergen.generators import ExpertBank

    z = zoo(zoo_path)
    b = ExpertBank.from_zoo(z, encoder(encoder_name))
    mt = z.multitask()
    if mt is not None:
        b.meta["multitask"] = mt
    return b


def get_generator(name: str | None = None, zoo_path: str | None = None, encoder_name: str = "minilm", checkpoint: str | None = None, base_model: str | None = None):
    """A ready generator: trained families load their checkpoint (checkpoint_path's order; `.checkpoint`
    says which), baselines are built on the bank. base_model: the name of the base in use, which the
    checkpoint must have been made for (None: the zoo's)."""
    from hypergen.generators import get_family

    name = name or default_generator()
    folder = None
    if get_family(name).trainable:  # unknown names list the registered ones
        folder = checkpoint_path(name, checkpoint)
        if folder is None:
            shipped = shipped_generators_dir()
            looked = f"{generators_dir() / name} or {shipped / name}" if shipped else f"{generators_dir() / name} (no shipped generators: set HYPERGEN_GENERATORS to a generators/ folder)"
            raise HypergenError(f"No trained {name} generator in {looked}; train it with `hypergen train {name}`.")
        folder = str(folder.resolve())
    return _generator(name, zoo_path, encoder_name, folder, base_model)


@functools.lru_cache(maxsize=8)
def _generator(name: str, zoo_path: str | None, encoder_name: str, folder: str | None, base_model: str | None):
    from hypergen.generators import build, load_generator

    b = bank(zoo_path, encoder_name)  # built with this encoder: load_generator refuses a checkpoint trained on another
    if folder is None:
        return build(name, b)
    return load_generator(folder, b, family=name, base_model=base_model)


def generate(
    description: str,
    generator: str | None = None,
    *,
    samples: int = 1,
    seed: int | None = None,
    out: str | Path | None = None,
    force: bool = False,
    inputs: Sequence[str] | str | None = None,
    activate: bool = True,
    zoo_path: str | None = None,
    checkpoint: str | None = None,
    base: str | None = None,
    device: str = "auto",
    encoder_name: str = "minilm",
    max_new_tokens: int = 32,
    prompt_description: bool | None = None,
):
    """Description in, adapter out (and active in the resident base). Returns a GenerationResult with
    `.answers` when inputs are given and `.checkpoint`, the checkpoint folder a trained generator loaded
    (None for baselines). Encoder, generator and base stay resident between calls.
    Safe to call from several threads: each call's inputs are answered with its own adapter.

    generator: the generator family (default: the best by evaluation; `hypergen generators` lists them).
    samples: adapters to sample, 1 to MAX_SAMPLES (64; the spread is reported; the adapter is their mean).
    seed: the sampling seed, 0 to 2**63-1. out: write the adapter there as a PEFT folder.
    force: let out replace an existing adapter folder or write into a non-empty folder (other files are kept).
    inputs: answer these with the adapter (a bare string is one input; with activate=False it is applied per row and leaves the active adapter as it was).
    activate: make the adapter active in the resident base. zoo_path: the zoo folder (default: HYPERGEN_ZOO, the
    shipped zoo/, else the cache build). checkpoint: the generator's checkpoint folder (default: the user's
    trained one in the cache, else the shipped one). base: a local Hugging Face model folder instead of
    SmolLM2. device: auto, cpu or cuda. encoder_name: the description encoder, minilm (real) or fake (tests).
    max_new_tokens: the longest answer to each input, in tokens. prompt_description: answer the inputs
    with the description in the prompt as well as in the adapter (default: the mode the held-out evaluation
    picked; `hypergen generators` shows it).
    """
    import time
    import warnings

    description = _text(description, "description").strip()
    if not description:
        raise HypergenError("Empty description: describe the task in words, e.g. \"Label each tweet as sarcastic or not.\"")
    _integer(samples, "samples", 1, MAX_SAMPLES, " (each sample is a whole adapter held in memory)")
    if seed is not None:
        _integer(seed, "seed", 0, MAX_SEED, " (2**63-1)")
    _integer(max_new_tokens, "max_new_tokens", 1, MAX_NEW_TOKENS)
    inputs = _inputs(inputs, "inputs")
    prompt_description = DEFAULT_PROMPT_DESCRIPTION if prompt_description is None else prompt_description
    notes = []
    if len(description) > MAX_DESCRIPTION_CHARS:
        notes.append(f"Description truncated from {len(description)} to {MAX_DESCRIPTION_CHARS} characters.")
        description = description[:MAX_DESCRIPTION_CHARS]
    notes += [n for n in [_script_note(description)] if n]
    if generator is None and default_generator() != DEFAULT_GENERATOR:
        notes.append(f"No trained {DEFAULT_GENERATOR} checkpoint was found, so the {FALLBACK_GENERATOR} baseline made this adapter: "
                     f"set HYPERGEN_GENERATORS to the shipped generators/ folder, or train one with `hypergen train {DEFAULT_GENERATOR}`.")
    with _LOAD_LOCK:
        model = resident(base, device) if (activate or inputs) else None  # loaded once, outside the timings
        made_for = model.name if model is not None else base_name(base) if base is not None else None
        gen = get_generator(generator, zoo_path, encoder_name, checkpoint, base_model=made_for)
        enc = encoder(encoder_name)
    with _GENERATE_LOCK:
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            emb = enc.encode([description])[0]
        t1 = time.perf_counter()
        res = gen.generate(emb, description=description, samples=samples, seed=seed)
        t2 = time.perf_counter()
    notes += [str(w.message) for w in caught if "Description is" in str(w.message)]
    timings = {"encode": (t1 - t0) * 1000, "generate": (t2 - t1) * 1000}
    require_same_base(res.weights.base_model, made_for, f"The zoo at {zoo_path or default_zoo_path()}")  # made_for None: no base named
    if model is not None:
        res.weights.validate_for(model.model, model.name)  # before anything is written or activated
    # the adapter explains itself: res.weights.save() writes this beside the tensors as hypergen.json
    meta = {"generator": res.generator, "description": description, **{k: v for k, v in res.summary().items() if k in ("neighbors", "max_similarity", "in_range", "uncertainty")}}
    weights = replace(res.weights, meta=meta)
    if out is not None:
        weights.save(out, force=force)  # before activation: a refused or failed save leaves the resident model as it was
    answers = []
    if model is not None:
        prompt = description if prompt_description else None
        with model.lock:  # activate + answer as one step, or another thread's adapter answers
            if activate:
                t3 = time.perf_counter()
                model.activate(weights, name="generated")
                timings["activate"] = (time.perf_counter() - t3) * 1000
                if inputs:
                    answers = model.answer(inputs, description=prompt, max_new_tokens=max_new_tokens)
            else:  # answered through per-row weights: the resident model's active adapter stays as it was
                answers = model.answer(inputs, description=prompt, max_new_tokens=max_new_tokens, adapters=[weights] * len(inputs))
    timings["total"] = sum(timings.values())  # the call's own work, not time spent waiting for another thread
    return replace(res, weights=weights, warnings=notes + res.warnings, timings_ms=timings, answers=answers)


def train(
    name: str,
    cfg=None,
    *,
    zoo_path: str | None = None,
    out: str | Path | None = None,
    encoder_name: str = "minilm",
    base: str | None = None,
    device: str = "auto",
    init: str | Path | None = None,
    export: bool = False,
    export_last: bool = False,
    prepared: str | Path | None = None,
    **family_config,
) -> dict:
    """Train a generator family on the zoo (TrainConfig `cfg`) and write its checkpoint; returns the
    training summary. `family_config`: the family's own config fields (e.g. hidden=32).

    zoo_path: the zoo folder (default: HYPERGEN_ZOO, the shipped zoo/, else the cache build).
    out: the checkpoint folder (default: the cache's generators/NAME, which generate then finds by name;
    `--out generators/NAME` in a checkout to ship it). encoder_name: the description encoder, minilm (real)
    or fake (tests). base: the base model folder, for the sft objective. device: auto, cpu or cuda.
    init: a saved checkpoint of the same family to start from (e.g. a recon run, then the sft objective);
    its config is kept, so `family_config` must be empty then.
    export: train nothing; write the generator folder from the run's best checkpoint so far (its last
    without validation), e.g. after a long run was stopped. Give the run's own arguments; settings that
    only say how long it runs (such as --steps) may differ. export_last: with export, the run's last
    checkpoint instead of its best on validation. prepared: with --objective sft, a prepared-tasks file to
    train on as is (the path the run printed after "Prepared tasks:"), without the task files it was read from,
    e.g. one carried to a lent GPU; refused if made for another base, encoder or task settings.
    """
    from hypergen.generators import ExpertBank, build, get_family, load_generator
    from hypergen.generators.train import TrainConfig, export_run, train_generator

    if export_last and not export:
        raise HypergenError("--export-last goes with --export (it says which checkpoint to write).")
    cfg = cfg or TrainConfig()
    if prepared is not None and cfg.objective != "sft":
        raise HypergenError("--prepared holds the tasks of an sft run: it goes with --objective sft.")
    cls = get_family(name)
    if not cls.trainable:
        raise HypergenError(f"The {name} generator has nothing to train; trainable: {', '.join(n for n in list_generators() if get_family(n).trainable)}.")
    z = zoo(zoo_path)
    names = [n for n in z.names() if n not in set(cfg.val_experts)]
    unknown = sorted(set(cfg.val_experts) - set(z.names()))
    if unknown:
        raise HypergenError(f"--val-experts names unknown experts {unknown}; `hypergen zoo list` shows them.")
    if prepared is not None:  # the file's embeddings: no encoder needed where it was carried
        from hypergen.generators.sft import prepared_encoder

        enc = prepared_encoder(prepared, encoder_name, lambda: encoder(encoder_name))
    else:
        enc = encoder(encoder_name)
    b = ExpertBank.from_zoo(z, enc, names=names)
    if init is not None:
        if family_config:
            raise HypergenError(f"--init keeps the config saved in {init}; drop {sorted(family_config)}.")
        gen = load_generator(init, b, family=name, base_model=b.meta.get("base_model"))
    else:
        import torch

        with torch.random.fork_rng(devices=[]):  # the init is a function of cfg.seed, not of what loading the models drew before
            torch.manual_seed(cfg.seed)
            gen = build(name, b, **family_config)
    sft = None
    if cfg.objective == "sft":
        from hypergen.generators.sft import prepare_sft

        sft = prepare_sft(b, z, resident(base, device), cfg, encoder=enc, prepared=prepared)
    out = Path(out) if out else generators_dir() / name
    run_name = name
    if init is not None:  # a warm-started run never resumes a cold one's checkpoints (or vice versa)
        import hashlib

        run_name = f"{name}-init{hashlib.sha1(str(Path(init).resolve()).encode()).hexdigest()[:6]}"
    if export:
        summary = export_run(gen, cfg, out, sft_data=sft, run_name=run_name, last=export_last)
    else:
        summary = train_generator(gen, cfg, out, sft_data=sft, run_name=run_name)
    summary["out"] = str(out)
    if summary["global_rank"] != 0:
        return summary
    summary["init"] = str(init) if init is not None else None
    summary["zoo"] = str(z.root)
    if cfg.val_experts:
        summary["val"] = validation_error(gen, z, cfg.val_experts, encoder_name)
    (out / "train.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def validation_error(gen, z, names, encoder_name: str = "minilm") -> dict:
    """Relative L2 distance of the generated adapter to held-out experts' weights, per expert and mean.

    Measured on the full weight update dW = s * B @ A of every module (gauge-free: A and B alone are
    only defined up to an invertible r x r transform)."""

    enc = encoder(encoder_name)
    per = {}
    for n in names:
        rec = z.record(n)
        target = z.weights(n)
        got = gen.generate(enc.encode([rec.description])[0]).weights
        num = sum(float((got.delta(p) - target.delta(p)).pow(2).sum()) for p in target.modules)
        den = sum(float(target.delta(p).pow(2).sum()) for p in target.modules)
        per[n] = (num / max(den, 1e-20)) ** 0.5
    return {"rel_l2_dW": per, "mean": sum(per.values()) / max(1, len(per))}


