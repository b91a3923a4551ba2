"""Which checkpoint `generate` loads: an explicit --checkpoint, then the user's trained one in the cache
(HYPERGEN_HOME/generators/NAME), then the shipped one (HYPERGEN_GENERATORS/NAME or the checkout's
generators/NAME). And where the shipped zoo and generators are looked for outside a source checkout."""

from __future__ import annotations

import json
import shutil

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

    assert api.checkpoint_path("sg") is None and api.default_generator() == api.FALLBACK_GENERATOR
    make(where["shipped"], "sg")
    assert api.checkpoint_path("sg") == where["shipped"] / "sg" and api.default_generator() == "sg"
    make(where["user"], "sg")
    assert api.checkpoint_path("sg") == where["user"] / "sg"
    assert api.checkpoint_path("sg", "/some/folder") == __import__("pathlib").Path("/some/folder")
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
    assert any("No trained sg checkpoint" in w and "HYPERGEN_GENERATORS" in w for w in res.warnings)
