"""Shared fixtures: a random tiny Llama (same module names as SmolLM2) and a deterministic fake encoder.

Integration tests (marker `integration`) use the real SmolLM2 + MiniLM from the cache. Locally they
skip when `make setup` has not run; with HYPERGEN_REQUIRE_REAL=1 (CI) a missing model is a failure.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ["WANDB_MODE"] = "disabled"  # never log to W&B from tests
os.environ["HYPERGEN_RUNS"] = tempfile.mkdtemp(prefix="hypergen-test-runs-")  # training runs never land in the user's cache
atexit.register(shutil.rmtree, os.environ["HYPERGEN_RUNS"], ignore_errors=True)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from hypergen.config import LoraSpec
from hypergen.lora import LoraWeights
from hypergen.text import FakeEncoder


@pytest.fixture(autouse=True)
def own_runs_folder(tmp_path_factory, monkeypatch):
    """Each test trains into a runs folder of its own: a run's identity leaves out where its generator is
    written, so two tests training the same config would otherwise share (and resume) one run."""
    monkeypatch.setenv("HYPERGEN_RUNS", str(tmp_path_factory.mktemp("runs")))


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory):
    from hypergen.testing import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture()
def resident(tiny_path):
    from hypergen.base import load_base

    return load_base(tiny_path, device="cpu")


@pytest.fixture()
def fake_encoder():
    return FakeEncoder()


def random_lora(model, *, seed: int = 0, rank: int = 8, alpha: float = 16.0, scale: float = 0.5, name: str = "tiny-llama", targets=("q_proj", "v_proj")) -> LoraWeights:
    """A random adapter for `model` whose B is non-zero, so it visibly changes outputs."""
    g = torch.Generator().manual_seed(seed)
    shapes = LoraSpec(rank=rank, alpha=alpha, target_modules=targets).shapes(model)
    mods = {p: (scale * torch.randn(rank, i, generator=g), scale * torch.randn(o, rank, generator=g)) for p, (o, i) in shapes.items()}
    return LoraWeights(mods, alpha, name)


@pytest.fixture(scope="session")
def real_resident():
    from hypergen import assets

    if not (assets.smollm2_path() / ".complete").is_file():
        if os.environ.get("HYPERGEN_REQUIRE_REAL") == "1":
            pytest.fail("SmolLM2 is not in the cache; `make setup` must run before the tests in CI.")
        pytest.skip("real SmolLM2 not in the cache: run `make setup`")
    from hypergen.base import load_base

    return load_base(device="cpu")


@pytest.fixture(scope="session")
def real_encoder():
    from hypergen import assets

    if not (assets.minilm_path() / ".complete").is_file():
        if os.environ.get("HYPERGEN_REQUIRE_REAL") == "1":
            pytest.fail("MiniLM is not in the cache; `make setup` must run before the tests in CI.")
        pytest.skip("real MiniLM not in the cache: run `make setup`")
    from hypergen.text import MiniLMEncoder

    return MiniLMEncoder()


@pytest.fixture(scope="session")
def tiny_zoo(tiny_path, tmp_path_factory):
    """A 4-expert zoo (data/demo tasks) with trajectories and a multitask LoRA, on the tiny model."""
    from hypergen.paths import REPO_ROOT
    from hypergen.zoo.build import BuildConfig, build_multitask, build_zoo
    from hypergen.zoo.expert import ExpertConfig

    # select="last": every expert keeps 3 trajectory checkpoints, which the generator tests rely on
    expert = ExpertConfig(steps=8, batch_size=4, lr=1e-2, every=2, keep_last=3, warmup=2, select="last", logger="none", progress=False)
    cfg = BuildConfig(suite=str(REPO_ROOT / "data/demo/demo.jsonl"), out=str(tmp_path_factory.mktemp("zoo") / "zoo"), base=str(tiny_path), limit=None, expert=expert, eval_instances=4, max_new_tokens=3)
    zoo = build_zoo(cfg)
    build_multitask(cfg, steps=4, per_task=8)
    return zoo


@pytest.fixture(scope="session")
def tiny_bank(tiny_zoo):
    from hypergen.generators import ExpertBank

    bank = ExpertBank.from_zoo(tiny_zoo, FakeEncoder())
    bank.meta["multitask"] = tiny_zoo.multitask()
    return bank
