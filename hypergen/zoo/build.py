"""Building a zoo: one expert per task, resumable, optionally sharded across devices.

For each task not yet in the zoo: score the base on the task's test instances, train the expert on
its train instances, score the expert, write the expert folder atomically. A rerun after a crash or a
SIGKILL skips finished experts. With devices > 1, Lightning Fabric launches one process per device and
each rank builds every world_size-th task (the experts are independent, so nothing else is shared).
With parallel > 1, each process trains its tasks `parallel` at a time in one run (zoo/batched.py) and
writes each expert as soon as it is scored; a group killed midway is retrained on the next run.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hypergen import paths
from hypergen.errors import HypergenError
from hypergen.identity import base_name
from hypergen.zoo.expert import ExpertConfig, train_expert
from hypergen.zoo.store import ExpertRecord, Zoo, ZooConfig, safe_name


@dataclass
class BuildConfig:
    """What to build.

    suite: 'bigbench' (the cache) or a path load_suite reads: a BIG-bench task.json tree, an SNI folder,
    a JSONL file. split: the split file (default data/splits/bigbench.json for bigbench); its zoo list
    gives the tasks and their train/test instances (tasks missing from it get a deterministic split).
    tasks: task names (default: the split's zoo list). limit: build the first N of those.
    out: the zoo folder. expert: how each expert is trained (ExpertConfig).
    eval_instances: test instances scored per task (base and expert). max_new_tokens: answer length
    when scoring. base: a local Hugging Face model folder instead of SmolLM2. device: auto, cpu or cuda.
    devices: processes to shard the tasks across (a Lightning Fabric launch). parallel: experts trained
    together in one run, each batch holding batch_size rows of each task, every row through its own
    expert's LoRA (the same experts as one at a time, up to float rounding; a GPU's gain, about the
    same time on a CPU); 1 = one after another. strategy: the launch
    strategy for devices > 1, e.g. ddp, ddp_spawn. accelerator: the Fabric accelerator (auto, cpu, gpu).
    oracle: build the held-out tasks' experts, the evaluation's upper reference, into an "oracle zoo"
    kept apart from the zoo that generators learn from (default folder ~/.cache/hypergen/zoo/oracle).
    seed_from: a packed zoo (e.g. zoo/) whose experts count as built: continue it on a fresh machine.
    refresh: also retrain built experts trained with another config (choose them by naming their tasks).
    """

    suite: str = "bigbench"
    split: str | None = None
    tasks: list[str] | None = None
    limit: int | None = 60
    out: str = field(default_factory=lambda: str(paths.home() / "zoo" / "bigbench"))
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    eval_instances: int = 50
    max_new_tokens: int = 16
    base: str | None = None
    device: str = "auto"
    devices: int = 1
    strategy: str = "ddp"
    accelerator: str = "auto"
    oracle: bool = False
    seed_from: str | None = None
    refresh: bool = False
    parallel: int = 1

    def __post_init__(self):
        if isinstance(self.expert, dict):
            self.expert = ExpertConfig(**self.expert)
        if self.limit is not None and self.limit < 1:
            raise HypergenError(f"--limit must be >= 1; got {self.limit}.")
        if self.devices < 1:
            raise HypergenError(f"--devices must be >= 1; got {self.devices}.")
        if self.parallel < 1:
            raise HypergenError(f"--parallel must be >= 1; got {self.parallel}.")
        if self.eval_instances < 1 or self.max_new_tokens < 1:  # else a task is blamed for having no test instances
            raise HypergenError(f"--eval-instances and --max-new-tokens must be >= 1; got {self.eval_instances}, {self.max_new_tokens}.")
        if self.tasks:
            self.tasks = list(dict.fromkeys(self.tasks))  # a task named twice trains once
        if self.oracle and Path(self.out) == paths.home() / "zoo" / "bigbench":
            self.out = str(paths.home() / "zoo" / "oracle")  # never mix oracle experts into the generators' zoo


def plan(cfg: BuildConfig):
    """(suite, split, task names) for this build."""
    from hypergen.tasks import load_split, load_suite

    suite = load_suite(cfg.suite)
    split = load_split(cfg.split) if cfg.split else (load_split() if cfg.suite == "bigbench" else None)
    if cfg.tasks:
        names = [suite.get(n).name for n in cfg.tasks]  # unknown names raise with close matches
        if split is not None and not cfg.oracle:
            leaked = [n for n in names if not split.may_train(n)]
            if leaked:
                raise HypergenError(f"{leaked} are held-out tasks, or of a held-out family or one built from its data: no zoo expert may train on them "
                                    "(use --oracle to build the evaluation's reference experts in a separate zoo).")
    elif split is not None:
        names = [n for n in (split.heldout if cfg.oracle else split.zoo) if n in suite]
    else:
        names = suite.names()
    if cfg.limit:
        names = names[: cfg.limit]
    if not names:
        raise HypergenError("No tasks to build: the suite is empty or no split task is in it.")
    return suite, split, names


def instances(task, split, part: str):
    """The task's instances in `part`; tasks outside the split get the same seeded rule, val kept small."""
    from hypergen.tasks.split import SplitCriteria, divide_instances

    if split is not None and task.name in split.instances:
        return split.instances_of(task, part)
    n = len(task.instances)
    idx = divide_instances(n, task.name, SplitCriteria(val_size=max(1, n // 10), min_examples=max(1, n // 10) + 2))[part]
    return [task.instances[i] for i in idx]


# training fields that make an expert: a record that differs in one of them was built another way
_TRAINING_FIELDS = ("steps", "max_epochs", "batch_size", "lr", "warmup", "weight_decay", "max_tokens", "keep_last", "every", "select", "seed", "lora")


def outdated(record, expert: ExpertConfig) -> bool:
    """Was this expert trained with another config than `expert`? Records from before a field
    existed count with that field's old behaviour (select: "last")."""
    have = {"select": "last", **record.config}
    want = json.loads(json.dumps(expert.to_dict()))
    return any(have.get(k) != want[k] for k in _TRAINING_FIELDS)


def changed_settings(record, expert: ExpertConfig) -> dict[str, tuple]:
    """{field: (recorded, asked)} for the training fields this expert was trained with otherwise. Fields
    the record predates are left out: an older hypergen set them, not a flag of this build (26 shipped
    experts have no "select"; they must keep resuming, and --refresh still retrains them)."""
    want = json.loads(json.dumps(expert.to_dict()))
    return {k: (record.config[k], want[k]) for k in _TRAINING_FIELDS if k in record.config and record.config[k] != want[k]}


def _meta(cfg: BuildConfig) -> dict:
    """What a zoo's manifest records about the build that made it."""
    from hypergen.tasks.bigbench import READER_VERSION  # which prompts the experts see; none recorded = 1

    suite = cfg.suite if cfg.suite == "bigbench" else str(Path(cfg.suite).resolve())
    return {"suite": suite, "split": cfg.split, "lora": cfg.expert.lora.to_dict(), "base_model": base_name(cfg.base),
            "bigbench_reader": READER_VERSION}  # fmt: skip


def _refuse_another_config(zoo: Zoo, cfg: BuildConfig, then: str) -> None:
    """Generators stack a zoo's experts: one of another rank or layout would crash every one of them later."""
    meta = _meta(cfg)
    have, want = zoo.config(), ZooConfig.of(meta["lora"], meta["base_model"])
    if have is not None and have.changes(want):
        raise HypergenError(f"The zoo at {zoo.root} holds {have}; this build asks for {', '.join(have.changes(want))}: {then}.")
    # experts trained on another reader's prompts must not be mixed with new ones, nor relabelled by record_meta
    reader = zoo.meta.get("bigbench_reader") or _records_reader(zoo)
    if cfg.suite == "bigbench" and len(zoo) and reader != meta["bigbench_reader"]:
        raise HypergenError(f"The zoo at {zoo.root} holds experts trained on BIG-bench prompts of reader version {reader}; this build "
                            f"reads version {meta['bigbench_reader']} (example and choice prefixes, data/README.md): {then}.")


def _records_reader(zoo: Zoo) -> int:
    """The BIG-bench reader version the experts' own records give (a manifest rebuilt by adopting folders
    has no build meta). Records made before experts kept it, and zoos before it was recorded, saw version 1."""
    versions = {r.config.get("bigbench_reader", 1) for r in zoo.records() if r.source == "bigbench"}
    if len(versions) > 1:
        raise HypergenError(f"The zoo at {zoo.root} mixes experts trained on BIG-bench reader versions {sorted(versions)}: rebuild it into another --out.")
    return versions.pop() if versions else 1


def open_zoo(cfg: BuildConfig) -> Zoo:
    """The zoo at cfg.out, made or reconciled, after checking it holds experts this build can add to."""
    zoo = Zoo(cfg.out, create=True, meta=_meta(cfg))  # reconciles a killed build before any rank writes
    _refuse_another_config(zoo, cfg, "build into another --out")
    zoo.record_meta(_meta(cfg))
    return zoo


def _refuse_changed_settings(zoo: Zoo, seed: Zoo | None, names: list[str], cfg: BuildConfig) -> None:
    """A changed --lr or --steps would otherwise skip the built experts and report success."""
    changed: dict[str, list[str]] = {}
    for n in names:
        source = zoo if zoo.has(n) else seed if seed is not None and seed.has(n) else None
        if source is None:
            continue
        diff = changed_settings(source.record(n), cfg.expert)
        if diff:
            changed.setdefault(", ".join(f"{k} {a} -> {b}" for k, (a, b) in diff.items()), []).append(n)
    if not changed:
        return
    n = sum(len(v) for v in changed.values())
    groups = "; ".join(f"{', '.join(v[:4])}{f' and {len(v) - 4} more' if len(v) > 4 else ''} ({k})" for k, v in changed.items())
    raise HypergenError(
        f"{n} experts this build would keep in {zoo.root} were trained with other settings: {groups}. "
        "Use --refresh to retrain them, rerun with their settings to resume, or pick other tasks with --tasks."
    )


def _task_data(task, split, cfg: BuildConfig):
    """(train pairs, test instances, val pairs) of one task; refuses a task that cannot make an expert."""
    train = instances(task, split, "train")
    test = instances(task, split, "test")[: cfg.eval_instances]
    if not train or not test:
        raise HypergenError(f"Task {task.name} has no train or test instances; it cannot make an expert.")
    val = [(i.input, i.targets[0]) for i in instances(task, split, "val")]
    return [(i.input, i.targets[0]) for i in train], test, val


def _score(res, test, cfg: BuildConfig, weights=None):
    """The base's (weights None) or an adapter's score on the test instances; leaves the base active."""
    from hypergen.scoring import score_instances

    if weights is None:
        res.deactivate()
        return score_instances(res, test, max_new_tokens=cfg.max_new_tokens)
    res.activate(weights, name="scored")
    score = score_instances(res, test, max_new_tokens=cfg.max_new_tokens)
    res.deactivate()
    return score


def build_one(res, task, split, cfg: BuildConfig) -> tuple[ExpertRecord, object]:
    train, test, val = _task_data(task, split, cfg)
    base = _score(res, test, cfg)
    out = train_expert(res, train, cfg.expert, run_name=safe_name(task.name), group="zoo", val_examples=val)
    return _record(task, cfg, out, base, _score(res, test, cfg, out.weights)), out


def build_group(res, tasks, split, cfg: BuildConfig) -> Iterator[tuple[ExpertRecord, object]]:
    """build_one for several tasks whose experts train together (zoo/batched.py); yields each expert as
    soon as it is scored. Its record's `seconds` is its share of the run, and config["parallel"] says so."""
    from hypergen.zoo.batched import ExpertJob, train_experts

    data = [_task_data(t, split, cfg) for t in tasks]
    bases = [_score(res, test, cfg) for _, test, _ in data]
    outs = train_experts(res, [ExpertJob(safe_name(t.name), train, val) for t, (train, _, val) in zip(tasks, data)], cfg.expert, group="zoo")
    for task, (_, test, _), base, out in zip(tasks, data, bases, outs):
        rec = _record(task, cfg, out, base, _score(res, test, cfg, out.weights))
        rec.config["parallel"] = len(tasks)
        yield rec, out


def _record(task, cfg: BuildConfig, out, base, expert) -> ExpertRecord:
    return ExpertRecord(
        name=task.name,
        family=task.family,
        descriptions=list(task.descriptions),
        categories=list(task.categories),
        source=task.source,
        metric="accuracy" if base.accuracy is not None else "rougeL",
        base_score=base.to_dict(),
        expert_score=expert.to_dict(),
        steps=len(out.losses),
        seconds=round(out.seconds, 1),
        n_train=out.n_examples,
        n_truncated=out.n_truncated,
        trajectory_steps=[s for s, _ in out.trajectory],
        config={**cfg.expert.to_dict(), "steps_run": len(out.losses), "selected_step": out.selected_step, "val_loss": out.val_losses,
                **({"bigbench_reader": _meta(cfg)["bigbench_reader"]} if task.source == "bigbench" else {})},  # kept if the manifest is lost
    )


def _work(cfg: BuildConfig, rank: int = 0, world: int = 1) -> None:
    from tqdm.auto import tqdm

    from hypergen.base import load_base

    suite, split, names = plan(cfg)
    zoo = Zoo(cfg.out)
    todo = [n for i, n in enumerate(names) if i % world == rank and (not zoo.has(n) or (cfg.refresh and outdated(zoo.record(n), cfg.expert)))]
    if not todo:
        return
    res = load_base(cfg.base, device=cfg.device)
    bar = tqdm(total=len(todo), desc=f"zoo[{rank}/{world}]", unit="expert", position=rank, file=sys.stderr)
    for at in range(0, len(todo), cfg.parallel):
        tasks = [suite.get(n) for n in todo[at : at + cfg.parallel]]
        t = time.perf_counter()  # a group's experts report the time since the group started
        built = [build_one(res, tasks[0], split, cfg)] if cfg.parallel == 1 else build_group(res, tasks, split, cfg)
        for rec, out in built:
            zoo.add(rec, out.weights, out.trajectory)
            bar.update(1)
            bar.write(
                f"[{rank}] {rec.name}: {rec.metric} base {rec.base_score['main']:.3f} -> expert {rec.expert_score['main']:.3f} "
                f"(loss {out.losses[0]:.2f} -> {out.losses[-1]:.2f}; step {out.selected_step} of {len(out.losses)} kept; "
                f"train {out.seconds:.0f} s, total {time.perf_counter() - t:.0f} s)",
                file=sys.stderr,
            )
    bar.close()


def _refuse_unusable(suite, names: list[str], cfg: BuildConfig) -> None:
    """Every task that cannot make an expert, named before any training: met during the build, one such
    task stopped it there, hours in, and every rerun stopped at it again."""
    bad = []
    for n in names:
        try:
            _task_data(suite.get(n), None, cfg)
        except HypergenError as e:
            bad.append(str(e).splitlines()[0])
    if bad:
        raise HypergenError(f"{len(bad)} task(s) cannot make an expert: {' '.join(bad[:5])} Fix them, or name the others with --tasks.")


def build_zoo(cfg: BuildConfig) -> Zoo:
    """Build (or resume) the zoo at cfg.out; returns it."""
    suite, split, names = plan(cfg)  # fail early (unknown tasks, held-out names, empty suite) before any rank starts
    zoo = open_zoo(cfg)
    seed = Zoo(cfg.seed_from) if cfg.seed_from else None
    if seed is not None:
        _refuse_another_config(seed, cfg, "it cannot seed this build")
        leaked = [r.name for r in seed.records() if split is not None and not cfg.oracle and not split.may_train(r.name)]
        if leaked:  # plan() keeps them out of a build; a seed must not bring them in
            raise HypergenError(f"The seed zoo {cfg.seed_from} holds held-out tasks' experts ({', '.join(leaked[:5])}): no zoo expert may come from them; "
                                "seed from a zoo built without --oracle.")
    if not cfg.refresh:
        _refuse_changed_settings(zoo, seed, names, cfg)  # before a seed expert is copied or any training starts
    if seed is not None:
        # continue from a shipped zoo on a fresh machine: its experts are kept (final weights only, no
        # trajectory), so only the missing tasks are trained
        for rec in seed.records():
            if not zoo.has(rec.name):
                zoo.add(rec, seed.weights(rec.name), None)
    if split is None:  # a split's tasks were checked when it was made; a suite given by path may hold any
        _refuse_unusable(suite, [n for n in names if not zoo.has(n)], cfg)
    if cfg.devices == 1:
        _work(cfg)
    else:
        from lightning_fabric import Fabric

        def shard(f) -> None:
            _work(cfg, f.global_rank, f.world_size)
            f.barrier()  # every rank's experts are in the manifest before anyone reports

        fabric = Fabric(accelerator=cfg.accelerator, devices=cfg.devices, strategy=cfg.strategy)
        fabric.launch(shard)
    return Zoo(cfg.out)


def _same_multitask(recorded: dict, asked: dict) -> bool:
    """Whether a stored multi-task LoRA was trained on these tasks with these training settings (how a run
    was logged or shown does not count)."""
    keys = (*_TRAINING_FIELDS, "tasks", "per_task")
    return all(k in recorded for k in keys) and all(recorded[k] == v for k, v in json.loads(json.dumps({k: asked[k] for k in keys})).items())


def build_multitask(cfg: BuildConfig, *, steps: int, per_task: int) -> ExpertRecord:
    """The multi-task LoRA baseline: one adapter trained on every zoo task's train data together.
    steps and per_task have no defaults here: api.zoo_multitask, the typed entry that the CLI's options
    come from, holds them (and their help). A multi-task LoRA already in the zoo, trained on the same tasks
    with the same training settings, is kept and its record returned (cfg.refresh retrains it)."""
    from hypergen.base import load_base

    suite, split, names = plan(cfg)
    zoo = open_zoo(cfg)  # the multi-task LoRA sits beside the experts: the same config
    ecfg = ExpertConfig(**{**asdict(cfg.expert), "steps": steps, "select": "last"})
    config = {**ecfg.to_dict(), "tasks": names, "per_task": per_task}
    have = zoo.multitask_record()
    if have is not None and not cfg.refresh and _same_multitask(have.config, config):
        # a rerun (e.g. of a whole rebuild) does not train the same adapter again
        print(f"multitask: {zoo.root / 'multitask'} was trained on these tasks with these settings; kept (delete it to retrain).", file=sys.stderr)
        return have
    examples = []
    for n in names:
        train = instances(suite.get(n), split, "train")[:per_task]  # balanced: big tasks must not drown small ones
        examples += [(i.input, i.targets[0]) for i in train]
    res = load_base(cfg.base, device=cfg.device)
    # no validation set here: the last step is the adapter (select="last" above), and the record says so
    out = train_expert(res, examples, ecfg, run_name="multitask", group="zoo")
    rec = ExpertRecord(
        name="multitask", family="multitask", descriptions=["All zoo tasks together."], categories=[], source=cfg.suite,
        metric="mixed", base_score={}, expert_score={}, steps=len(out.losses), seconds=round(out.seconds, 1), n_train=out.n_examples,
        n_truncated=out.n_truncated, trajectory_steps=[len(out.losses)], config=config,  # max_epochs may stop it before `steps`
    )
    zoo.set_multitask(rec, out.weights)
    return rec
