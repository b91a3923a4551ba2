"""A zoo keeps one config: another rank, alpha, targets or base is refused, a changed training setting
says --refresh, old manifests still load, and a corrupt manifest gets a message that says how to recover."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from hypergen.config import LoraSpec
from hypergen.errors import HypergenError
from hypergen.paths import REPO_ROOT
from hypergen.zoo import build
from hypergen.zoo.build import BuildConfig, build_multitask, build_zoo
from hypergen.zoo.expert import ExpertConfig
from hypergen.zoo.store import Zoo, ZooConfig

DEMO = str(REPO_ROOT / "data" / "demo" / "demo.jsonl")


class Trained(Exception):
    """Raised instead of training: a test that sees it knows the build got past every check."""


@pytest.fixture()
def no_training(monkeypatch):
    def refuse(*a, **k):
        raise Trained

    monkeypatch.setattr(build, "build_one", refuse)
    monkeypatch.setattr(build, "train_expert", refuse)  # build_multitask


@pytest.fixture()
def zoo_copy(tiny_zoo, tmp_path):
    return shutil.copytree(tiny_zoo.root, tmp_path / "zoo")


def same_build(tiny_path, out, lora: LoraSpec | None = None, base=None, **expert):
    """The build that made tiny_zoo (tests/conftest.py), with the changes given."""
    e = ExpertConfig(steps=8, batch_size=4, lr=1e-2, every=2, keep_last=3, warmup=2, select="last", logger="none", progress=False)
    e = replace(e, **expert, **({"lora": lora} if lora else {}))
    return BuildConfig(suite=DEMO, out=str(out), base=str(base or tiny_path), limit=None, expert=e, eval_instances=4, max_new_tokens=3)


def snapshot(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_the_zoo_records_its_config(tiny_zoo):
    assert tiny_zoo.config() == ZooConfig(8, 16.0, ("q_proj", "v_proj"), None, "tiny-llama")
    assert str(tiny_zoo.config()) == "rank-8 experts (alpha 16, q_proj/v_proj, tiny-llama)"


@pytest.mark.parametrize(
    ("lora", "base", "asks"),
    [
        (LoraSpec(rank=4, alpha=8.0), None, "rank 4, alpha 8"),
        (LoraSpec(rank=8, alpha=32.0), None, "alpha 32"),
        (LoraSpec(target_modules=("q_proj", "k_proj")), None, "q_proj/k_proj"),
        (LoraSpec(layers=(0,)), None, "layers [0]"),
        (None, "/models/another-llama", "base another-llama"),
    ],
)
def test_another_adapter_config_is_refused_before_any_training(tiny_path, zoo_copy, no_training, lora, base, asks):
    shutil.rmtree(zoo_copy / "experts" / "uppercase")  # a task still to build, as when a zoo grows
    Zoo(zoo_copy, create=True)  # reconciled: uppercase is gone from the manifest
    before = snapshot(zoo_copy)
    with pytest.raises(HypergenError) as e:
        build_zoo(same_build(tiny_path, zoo_copy, lora=lora, base=base))
    msg = str(e.value)
    assert f"zoo at {zoo_copy} holds rank-8 experts (alpha 16, q_proj/v_proj, tiny-llama)" in msg
    assert f"this build asks for {asks}: build into another --out" in msg and "\n" not in msg
    assert snapshot(zoo_copy) == before  # nothing written, nothing trained (no_training)
    with pytest.raises(HypergenError, match="this build asks for"):
        build_multitask(same_build(tiny_path, zoo_copy, lora=lora, base=base), steps=2, per_task=2)


def test_a_seed_zoo_with_another_config_is_refused(tiny_path, zoo_copy, tmp_path, no_training):
    cfg = replace(same_build(tiny_path, tmp_path / "fresh", lora=LoraSpec(rank=4, alpha=8.0)), seed_from=str(zoo_copy))
    with pytest.raises(HypergenError, match=rf"The zoo at {zoo_copy} holds rank-8 .* asks for rank 4, alpha 8: it cannot seed this build"):
        build_zoo(cfg)
    assert Zoo(tmp_path / "fresh").names() == []


def test_another_rank_from_the_cli_exits_1_with_one_line(tiny_path, zoo_copy, no_training):
    from hypergen.cli import app

    before = snapshot(zoo_copy)
    args = ["zoo", "build", "--suite", DEMO, "--out", str(zoo_copy), "--base", str(tiny_path), "--rank", "4", "--logger", "none", "--limit", "4"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1, r.output
    assert r.stderr.strip().splitlines() == [f"error: The zoo at {zoo_copy} holds rank-8 experts (alpha 16, q_proj/v_proj, tiny-llama); this build asks for rank 4, alpha 8: build into another --out."]
    assert snapshot(zoo_copy) == before


def test_a_changed_training_setting_says_refresh_and_a_plain_rerun_resumes(tiny_path, zoo_copy, no_training):
    before = snapshot(zoo_copy)
    assert build_zoo(same_build(tiny_path, zoo_copy)).names() == ["antonyms", "review_sentiment", "reverse_words", "uppercase"]
    assert snapshot(zoo_copy) == before  # identical settings: silent resume, nothing to do, nothing rewritten

    with pytest.raises(HypergenError) as e:
        build_zoo(same_build(tiny_path, zoo_copy, lr=2e-2, steps=5))
    msg = str(e.value)
    assert "4 experts this build would keep" in msg and "antonyms, review_sentiment, reverse_words, uppercase (steps 8 -> 5, lr 0.01 -> 0.02)" in msg
    assert "Use --refresh to retrain them" in msg and "\n" not in msg
    assert snapshot(zoo_copy) == before

    # only the experts the build would keep count: a build of other tasks goes ahead
    shutil.rmtree(zoo_copy / "experts" / "uppercase")
    with pytest.raises(Trained):
        build_zoo(replace(same_build(tiny_path, zoo_copy, lr=2e-2), tasks=["uppercase"]))
    with pytest.raises(HypergenError, match=r"3 experts .*antonyms, review_sentiment, reverse_words \(lr 0.01 -> 0.02\)"):
        build_zoo(same_build(tiny_path, zoo_copy, lr=2e-2))
    with pytest.raises(Trained):  # --refresh retrains them
        build_zoo(replace(same_build(tiny_path, zoo_copy, lr=2e-2), refresh=True))


def test_settings_a_record_predates_do_not_block_a_rerun(tiny_path, zoo_copy, no_training):
    """26 shipped experts were recorded before "select" existed: a plain rerun resumes them, --refresh
    still retrains them as "last" experts."""
    m = json.loads((zoo_copy / "manifest.json").read_text())
    for r in m["experts"]:
        del r["config"]["select"]
        (zoo_copy / "experts" / r["name"].replace("/", "__") / "expert.json").write_text(json.dumps(r))  # the folder's record too
    (zoo_copy / "manifest.json").write_text(json.dumps(m))
    build_zoo(same_build(tiny_path, zoo_copy, select="val_loss"))  # nothing to train
    with pytest.raises(Trained):
        build_zoo(replace(same_build(tiny_path, zoo_copy, select="val_loss"), refresh=True))


def test_a_manifest_without_a_config_block_still_works(tiny_path, tiny_zoo, zoo_copy, no_training):
    m = json.loads((zoo_copy / "manifest.json").read_text())
    old = {"version": 1, "experts": m["experts"]}  # before zoos recorded their config
    (zoo_copy / "manifest.json").write_text(json.dumps(old))
    assert Zoo(zoo_copy).config() == tiny_zoo.config()  # from the records and the first adapter_config.json
    for r in old["experts"]:
        del r["config"]  # older still: only the adapter files say
    (zoo_copy / "manifest.json").write_text(json.dumps(old))
    assert Zoo(zoo_copy).config() == tiny_zoo.config()
    assert len(Zoo(zoo_copy).records()) == 4 and json.loads((zoo_copy / "manifest.json").read_text()) == old  # reading rewrites nothing
    with pytest.raises(HypergenError, match="holds rank-8 experts .* asks for rank 4"):
        build_zoo(same_build(tiny_path, zoo_copy, lora=LoraSpec(rank=4, alpha=8.0)))
    build_zoo(same_build(tiny_path, zoo_copy))  # the same config: resumes, and the manifest now records it
    assert Zoo(zoo_copy).meta["lora"]["rank"] == 8 and Zoo(zoo_copy).meta["base_model"] == "tiny-llama"
    assert list(json.loads((zoo_copy / "manifest.json").read_text()))[-1] == "experts"


def test_the_shipped_zoo_loads_and_is_not_rewritten(tmp_path):
    shipped = REPO_ROOT / "zoo"
    before = (shipped / "manifest.json").read_bytes()
    zoo = Zoo(shipped)
    assert zoo.config() == ZooConfig(8, 16.0, ("q_proj", "v_proj"), None, "SmolLM2-135M-Instruct")
    assert str(zoo.config()) == "rank-8 experts (alpha 16, q_proj/v_proj, SmolLM2-135M-Instruct)"
    assert len(zoo.records()) == 60
    # the same manifest without its config block, as an older hypergen wrote it
    m = json.loads(before)
    first = zoo.folder(m["experts"][0]["name"])
    (tmp_path / "old" / "experts" / first.name).mkdir(parents=True)
    shutil.copy(first / "adapter_config.json", tmp_path / "old" / "experts" / first.name)
    (tmp_path / "old" / "manifest.json").write_text(json.dumps({"version": 1, "experts": m["experts"]}))
    assert Zoo(tmp_path / "old").config() == zoo.config()
    assert (shipped / "manifest.json").read_bytes() == before


CORRUPT = {
    "invalid JSON": '{"version": 1, "experts": [',
    "a JSON list": "[]",
    "no experts": '{"version": 1}',
    "experts not a list": '{"version": 1, "experts": {}}',
    "a record missing keys": '{"version": 1, "experts": [{"name": "antonyms"}]}',
    "a record that is not an object": '{"version": 1, "experts": [1]}',
    "empty file": "",
    "a config that is not an object": '{"version": 1, "lora": 5, "experts": []}',
    "a config missing keys": '{"version": 1, "lora": {"rank": 8}, "experts": []}',
}


@pytest.mark.parametrize("text", CORRUPT.values(), ids=CORRUPT.keys())
def test_a_corrupt_manifest_says_how_to_recover(zoo_copy, tiny_path, text, no_training):
    from hypergen.cli import app

    (zoo_copy / "manifest.json").write_text(text)
    for open_it in (lambda: Zoo(zoo_copy), lambda: build_zoo(same_build(tiny_path, zoo_copy))):
        with pytest.raises(HypergenError) as e:
            open_it()
        msg = str(e.value)
        assert msg.startswith(f"{zoo_copy / 'manifest.json'} is corrupt (") and "\n" not in msg
        assert "git checkout zoo/manifest.json" in msg and f"hypergen zoo build --out {zoo_copy}" in msg
    r = CliRunner().invoke(app, ["zoo", "list", "--zoo", str(zoo_copy)])
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1 and "is corrupt" in r.stderr and "Traceback" not in r.output
    assert (zoo_copy / "manifest.json").read_text() == text  # left for the user to restore


def test_deleting_a_corrupt_manifest_and_rebuilding_readopts_every_expert(tiny_path, tiny_zoo, zoo_copy, no_training):
    """What the corrupt-manifest message promises: the finished experts are kept, nothing retrains."""
    (zoo_copy / "manifest.json").unlink()
    with pytest.raises(HypergenError, match="holds rank-8 experts .* asks for rank 4"):  # the experts' config, not the build's
        build_zoo(same_build(tiny_path, zoo_copy, lora=LoraSpec(rank=4, alpha=8.0)))
    zoo = build_zoo(same_build(tiny_path, zoo_copy))
    seconds = {r.name: r.seconds for r in tiny_zoo.records()}  # adopted in folder-name order
    assert {r.name: r.seconds for r in zoo.records()} == seconds and len(zoo) == len(seconds)
    assert zoo.meta["lora"] == tiny_zoo.meta["lora"]


def test_a_bigbench_zoo_readopted_without_its_manifest_keeps_its_reader_version(tiny_path, zoo_copy):
    """The corrupt-manifest recovery (delete it, rebuild) adopts the folders without the build's meta: the
    reader version comes from the experts' records, so a reader-2 zoo is not taken for a version-1 one."""
    from hypergen.tasks.bigbench import READER_VERSION

    def mark(readers):  # the copy's experts as BIG-bench experts with these recorded reader versions, manifest lost
        for f, v in zip(sorted((zoo_copy / "experts").glob("*/expert.json")), readers):
            rec = {**json.loads(f.read_text()), "source": "bigbench"}
            rec["config"] = {k: x for k, x in rec["config"].items() if k != "bigbench_reader"} | ({"bigbench_reader": v} if v else {})
            f.write_text(json.dumps(rec))
        (zoo_copy / "manifest.json").unlink(missing_ok=True)

    cfg = replace(same_build(tiny_path, zoo_copy), suite="bigbench")
    mark([READER_VERSION] * 4)
    build._refuse_another_config(Zoo(zoo_copy, create=True), cfg, "x")  # adopted as what it is: no refusal
    mark([READER_VERSION, None, READER_VERSION, READER_VERSION])
    with pytest.raises(HypergenError, match="mixes experts trained on BIG-bench reader versions"):
        build._refuse_another_config(Zoo(zoo_copy, create=True), cfg, "x")
    mark([None] * 4)  # records from before experts kept it: version 1's prompts
    with pytest.raises(HypergenError, match="reader version 1; this build reads version"):
        build._refuse_another_config(Zoo(zoo_copy, create=True), cfg, "x")


def test_opening_a_zoo_to_build_trusts_the_folders_and_sweeps_what_kills_left(zoo_copy):
    """A retrain killed between its folder's rename and the manifest update: the folder's record wins. Temp
    files of killed manifest writes and half-written or set-aside folders are removed."""
    name = Zoo(zoo_copy).names()[0]
    record = zoo_copy / "experts" / name.replace("/", "__") / "expert.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "seconds": 12345.0}))
    junk = [zoo_copy / ".manifest.json-x1", zoo_copy / ".multitask-x2", zoo_copy / ".multitask-x3-old", zoo_copy / "experts" / ".a-x4-old"]
    junk[0].write_text("{")
    for d in junk[1:]:
        d.mkdir()
    assert Zoo(zoo_copy).record(name).seconds != 12345.0  # a reader opens the manifest as it is
    assert Zoo(zoo_copy, create=True).record(name).seconds == 12345.0 and not any(p.exists() for p in junk)


def test_atomic_folder_replaces_whole_or_not_at_all(tmp_path):
    from hypergen.paths import atomic_folder

    final = tmp_path / "f"
    with atomic_folder(final) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError), atomic_folder(final) as tmp:
        (tmp / "a").write_text("2")
        raise RuntimeError("killed mid-write")
    assert (final / "a").read_text() == "1"
    with atomic_folder(final) as tmp:
        (tmp / "b").write_text("3")
    assert sorted(p.name for p in final.iterdir()) == ["b"] and [p.name for p in tmp_path.iterdir()] == ["f"]  # nothing set aside is left


def test_build_settings_that_would_blame_a_task_are_refused(tiny_path, tmp_path):
    for bad in ({"eval_instances": 0}, {"max_new_tokens": 0}):
        with pytest.raises(HypergenError, match="--eval-instances and --max-new-tokens must be >= 1"):
            BuildConfig(**bad)
    assert BuildConfig(tasks=["a", "b", "a"]).tasks == ["a", "b"]  # named twice, trained once


def test_every_unusable_task_is_named_before_any_training(tiny_path, tmp_path, no_training):
    lines = [{"task": "ok", "input": f"in {i}", "output": "out", "description": "Copy it."} for i in range(20)]
    lines += [{"task": t, "input": "a", "output": "b", "description": "Too few examples."} for t in ("tiny", "small")]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    cfg = BuildConfig(suite=str(tmp_path / "s.jsonl"), out=str(tmp_path / "z"), base=str(tiny_path), limit=None)
    with pytest.raises(HypergenError, match=r"2 task\(s\) cannot make an expert: Task tiny .* Task small "):
        build_zoo(cfg)  # not Trained: refused before "ok" trained


def test_every_build_option_has_help():
    """`hypergen zoo build --help` documents every field of BuildConfig and the configs nested in it."""
    import dataclasses

    from hypergen.cli_options import docstring_fields

    for cls in (BuildConfig, ExpertConfig, LoraSpec):
        names = [f.name for f in dataclasses.fields(cls)]
        assert sorted(docstring_fields(cls.__doc__, names)) == sorted(names), cls.__name__


def test_multitask_defaults_live_in_the_api_only():
    """build_multitask takes steps and per_task from its caller: api.zoo_multitask, whose signature the CLI's
    options come from, holds their defaults, so they are written once."""
    import inspect

    from hypergen import api

    empty = inspect.Parameter.empty
    build_params, api_params = inspect.signature(build_multitask).parameters, inspect.signature(api.zoo_multitask).parameters
    for name in ("steps", "per_task"):
        assert build_params[name].default is empty and api_params[name].default is not empty, name


def test_a_zoo_of_older_bigbench_prompts_is_not_extended_or_relabelled(tmp_path, no_training):
    """A zoo that predates the reader's prefixes (no bigbench_reader = version 1): a bigbench build
    into it, or seeded from it, is refused before anything is written."""
    shipped = REPO_ROOT / "zoo"
    old = shutil.copytree(shipped, tmp_path / "old")
    m = json.loads((old / "manifest.json").read_text())  # the shipped zoo is reader 2 since 2026-12-01: made version 1 here
    m.pop("bigbench_reader", None)
    for e in m["experts"]:
        e.get("config", {}).pop("bigbench_reader", None)
        e.pop("bigbench_reader", None)
    (old / "manifest.json").write_text(json.dumps(m))
    for f in (old / "experts").glob("*/expert.json"):
        r = json.loads(f.read_text())
        r.pop("bigbench_reader", None)
        r.get("config", {}).pop("bigbench_reader", None)
        f.write_text(json.dumps(r))
    before = snapshot(old)
    cfg = BuildConfig(out=str(old), limit=1, expert=ExpertConfig(logger="none", progress=False))
    with pytest.raises(HypergenError, match="reader version 1; this build reads version 2"):
        build_zoo(cfg)
    assert snapshot(old) == before
    with pytest.raises(HypergenError, match="reader version 1"):
        build_zoo(replace(cfg, out=str(tmp_path / "new"), seed_from=str(old)))
