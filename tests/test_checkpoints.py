"""Which checkpoint `generate` loads: an explicit --checkpoint, then the user's trained one in the cache
(HYPERGEN_HOME/generators/NAME), then the shipped one (HYPERGEN_GENERATORS/NAME or the checkout's
generators/NAME). And where the shipped zoo and generators are looked for outside a source checkout."""

from __future__ import annotations

import json
import shutil
import stat

import pytest
import torch
from typer.testing import CliRunner

from hypergen import api
from hypergen.cli import app
from hypergen.errors import HypergenError

ANTONYM = "Give the antonym of the word."


@pytest.fixture()
def where(tmp_path, monkeypatch, tiny_zoo):
    """A fresh cache (HYPERGEN_HOME) and an empty shipped folder (HYPERGEN_GENERATORS)."""
    home, shipped = tmp_path / "home", tmp_path / "shipped"
    shipped.mkdir()
    monkeypatch.setenv("HYPERGEN_HOME", str(home))
    monkeypatch.setenv("HYPERGEN_GENERATORS", str(shipped))
    return {"home": home, "shipped": shipped, "user": home / "generators"}


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def train(tiny_zoo, *extra):
    r = cli("train", "sg", "--zoo", tiny_zoo.root, "--encoder", "fake", "--steps", 2, "--batch-size", 2, "--accelerator", "cpu", "--logger", "none", "--json", *extra)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def generate(tiny_zoo, tiny_path, *extra):
    r = cli("generate", ANTONYM, "--generator", "sg", "--zoo", tiny_zoo.root, "--encoder", "fake", "--base", tiny_path, "--seed", 0, *extra)
    assert r.exit_code == 0, r.output
    return r


@pytest.fixture(scope="module")
def shipped_sg(tiny_zoo, tmp_path_factory):
    """An sg checkpoint trained with another seed than the user's: its adapters differ."""
    from hypergen.generators.train import TrainConfig

    out = tmp_path_factory.mktemp("shipped-sg") / "sg"
    api.train("sg", TrainConfig(steps=2, batch_size=2, seed=7, accelerator="cpu", logger="none", progress=False), zoo_path=str(tiny_zoo.root), out=out, encoder_name="fake")
    return out


def test_a_family_trained_by_name_generates_by_name_and_shadows_the_shipped_one(where, tiny_zoo, tiny_path, shipped_sg):
    shutil.copytree(shipped_sg, where["shipped"] / "sg")
    first = json.loads(generate(tiny_zoo, tiny_path, "--json").stdout)
    assert first["checkpoint"] == str((where["shipped"] / "sg").resolve())  # nothing trained yet: the shipped one

    summary = train(tiny_zoo)  # no --out: into the cache, where generate looks first
    assert summary["out"] == str(where["user"] / "sg")
    after = json.loads(generate(tiny_zoo, tiny_path, "--json").stdout)
    assert after["checkpoint"] == str((where["user"] / "sg").resolve())
    text = generate(tiny_zoo, tiny_path).stdout
    assert f"checkpoint: {(where['user'] / 'sg').resolve()}" in text.splitlines()

    # the two checkpoints really make different adapters: the user's is the one in use
    shipped = api.generate(ANTONYM, "sg", seed=0, activate=False, zoo_path=str(tiny_zoo.root), encoder_name="fake", checkpoint=str(where["shipped"] / "sg"))
    user = api.generate(ANTONYM, "sg", seed=0, activate=False, zoo_path=str(tiny_zoo.root), encoder_name="fake")
    assert user.checkpoint == (where["user"] / "sg").resolve()
    path = next(iter(user.weights.modules))
    assert not torch.equal(user.weights.modules[path][1], shipped.weights.modules[path][1])


def test_an_explicit_checkpoint_comes_first(where, tiny_zoo, tiny_path, shipped_sg):
    shutil.copytree(shipped_sg, where["user"] / "sg")
    shutil.copytree(shipped_sg, where["shipped"] / "sg")
    mine = where["home"].parent / "elsewhere"
    shutil.copytree(shipped_sg, mine)
    r = generate(tiny_zoo, tiny_path, "--checkpoint", mine, "--json")
    assert json.loads(r.stdout)["checkpoint"] == str(mine.resolve())


def test_lookup_order_and_the_default_generator(where, monkeypatch):
    def make(root, name):
        (root / name).mkdir(parents=True)
        (root / name / "generator.json").write_text("{}")

    d = api.DEFAULT_GENERATOR
    assert api.checkpoint_path(d) is None and api.default_generator() == api.FALLBACK_GENERATOR
    make(where["shipped"], d)
    assert api.checkpoint_path(d) == where["shipped"] / d and api.default_generator() == d
    make(where["user"], d)
    assert api.checkpoint_path(d) == where["user"] / d
    assert api.checkpoint_path(d, "/some/folder") == __import__("pathlib").Path("/some/folder")
    monkeypatch.setenv("HYPERGEN_GENERATORS", str(where["home"] / "no-such-folder"))
    with pytest.raises(HypergenError, match="HYPERGEN_GENERATORS=.* is not a folder"):
        api.checkpoint_path("abmll")


def test_no_checkpoint_names_where_it_looked(where, tiny_zoo, tiny_path):
    r = cli("generate", ANTONYM, "--generator", "sg", "--zoo", tiny_zoo.root, "--encoder", "fake")
    assert r.exit_code == 1 and r.stderr.startswith("error: No trained sg generator in ")
    assert str(where["user"] / "sg") in r.stderr and str(where["shipped"] / "sg") in r.stderr and "hypergen train sg" in r.stderr


@pytest.mark.parametrize(
    "field, value, message",
    [("encoder", "all-MiniLM-L6-v2", "description embeddings, but the encoder in use is"), ("base_model", "SmolLM2-360M-Instruct", "made for base model 'SmolLM2-360M-Instruct'")],
)
def test_a_checkpoint_for_another_encoder_or_base_is_refused(where, tiny_zoo, tiny_path, shipped_sg, field, value, message):
    folder = where["user"] / "sg"
    shutil.copytree(shipped_sg, folder)
    meta = json.loads((folder / "generator.json").read_text())
    assert meta[field] and meta[field] != value  # the checkpoint records what it was made with
    (folder / "generator.json").write_text(json.dumps({**meta, field: value}))
    r = cli("generate", ANTONYM, "--generator", "sg", "--zoo", tiny_zoo.root, "--encoder", "fake", "--base", tiny_path)
    assert r.exit_code == 1 and r.stderr.startswith("error: ") and message in r.stderr, r.output


def test_an_installed_copy_says_where_the_zoo_is_expected(where, monkeypatch, tiny_zoo):
    monkeypatch.setattr(api, "_checkout", lambda: None)  # as in a `pip install .`: no repo beside the package
    monkeypatch.delenv("HYPERGEN_ZOO", raising=False)
    monkeypatch.delenv("HYPERGEN_GENERATORS")
    with pytest.raises(HypergenError, match="No zoo: .*installed copy.*HYPERGEN_ZOO"):
        api.default_zoo_path()
    assert api.shipped_generators_dir() is None and api.default_generator() == api.FALLBACK_GENERATOR
    r = cli("zoo", "list")
    assert r.exit_code == 1 and "HYPERGEN_ZOO" in r.stderr and r.stderr.count("\n") == 1
    monkeypatch.setenv("HYPERGEN_ZOO", str(tiny_zoo.root))
    assert api.default_zoo_path() == tiny_zoo.root
    r = cli("zoo", "list", "--json")
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == len(tiny_zoo)


def test_generate_says_when_the_default_falls_back_to_a_baseline(where, tiny_zoo):
    res = api.generate(ANTONYM, activate=False, zoo_path=str(tiny_zoo.root), encoder_name="fake")
    assert res.generator == api.FALLBACK_GENERATOR and res.checkpoint is None
    assert any(f"No trained {api.DEFAULT_GENERATOR} checkpoint" in w and "HYPERGEN_GENERATORS" in w for w in res.warnings)


def test_a_packed_generator_loads_as_the_fp16_one_within_int8_rounding(tmp_path, tiny_zoo, monkeypatch):
    """`hypergen generator-pack`: large matrices in int8 per row (half the bytes), the rest as it was;
    the copy loads through the same lookup and its tensors are the source's within half a quantisation step."""
    from safetensors import safe_open

    from hypergen.generators import build, checkpoint, load_generator

    monkeypatch.setattr(checkpoint, "PACK_MIN", 64)  # the tiny model's matrices are small
    bank = api.bank(str(tiny_zoo.root), "fake")
    torch.manual_seed(0)
    build("t2l", bank).save(tmp_path / "fp16")
    r = cli("generator-pack", tmp_path / "fp16", tmp_path / "q8")
    assert r.exit_code == 0, r.output
    with safe_open(str(tmp_path / "q8" / checkpoint.WEIGHTS_FILE), "pt") as f:
        packed = [k for k in f.keys() if k.endswith(checkpoint.Q8)]
        assert packed and all(f.get_tensor(k).dtype == torch.int8 for k in packed)
    assert (tmp_path / "q8" / checkpoint.WEIGHTS_FILE).stat().st_size < 0.7 * (tmp_path / "fp16" / checkpoint.WEIGHTS_FILE).stat().st_size
    # readable by others, like every file hypergen writes (safetensors alone leaves 0600)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for d in ("fp16", "q8") for p in (tmp_path / d).iterdir())
    src, got = (load_generator(tmp_path / d, bank, family="t2l").state_dict() for d in ("fp16", "q8"))
    assert src.keys() == got.keys()
    for k in packed:
        name = k[: -len(checkpoint.Q8)]
        step = src[name].abs().amax(1, keepdim=True) / 127
        assert ((got[name] - src[name]).abs() <= 0.5 * step + 1e-3 * step + 1e-6).all(), name
    assert all(torch.equal(got[k], src[k]) for k in src if k + checkpoint.Q8 not in packed)
    again = cli("generator-pack", tmp_path / "fp16", tmp_path / "q8")
    assert again.exit_code != 0 and "not empty" in again.output
    nothing = cli("generator-pack", tmp_path, tmp_path / "other")
    assert nothing.exit_code != 0 and "not a generator checkpoint" in nothing.output
    twice = cli("generator-pack", tmp_path / "q8", tmp_path / "q8q8")  # its float32 row scales would go fp16
    assert twice.exit_code != 0 and "packed already" in twice.output


def test_a_checkpoint_without_its_weights_or_for_another_alpha_is_refused(tmp_path, tiny_zoo):
    """Loaded anyway, the first would answer untrained, the second make every dW at the wrong scale."""
    from hypergen.generators import build, checkpoint, load_generator

    bank = api.bank(str(tiny_zoo.root), "fake")
    build("t2l", bank).save(tmp_path / "g")
    shutil.copytree(tmp_path / "g", tmp_path / "no_weights")
    (tmp_path / "no_weights" / checkpoint.WEIGHTS_FILE).unlink()
    with pytest.raises(HypergenError, match="no generator.safetensors"):
        load_generator(tmp_path / "no_weights", bank)
    meta = json.loads((tmp_path / "g" / "generator.json").read_text())
    meta["layout"]["alpha"] *= 2
    (tmp_path / "g" / "generator.json").write_text(json.dumps(meta))
    with pytest.raises(HypergenError, match="another LoRA layout"):
        load_generator(tmp_path / "g", bank)


def test_each_runs_logs_lie_in_its_own_run_folder(tiny_zoo, tmp_path):
    """Two runs of one family (other seeds) log beside their own checkpoints, not into one shared folder."""
    from hypergen import paths
    from hypergen.generators.train import TrainConfig

    for seed in (0, 1):
        api.train("sg", TrainConfig(steps=2, batch_size=2, seed=seed, accelerator="cpu", logger="csv", log_every=1, progress=False),
                  zoo_path=str(tiny_zoo.root), out=tmp_path / f"sg{seed}", encoder_name="fake")
    logs = sorted(paths.runs_dir().glob("generators/*/version_*/metrics.csv"))
    assert len(logs) == 2 and len({p.parents[1] for p in logs}) == 2
    assert all((p.parents[1] / "ckpt" / "last.ckpt").is_file() for p in logs)
