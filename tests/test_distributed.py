"""Generator training really runs distributed: Lightning DDP (gloo) on 2 CPU processes, via the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hypergen.generators import ExpertBank, load_generator
from hypergen.text import FakeEncoder

ANTONYM = "Give the antonym of the word: the word with the opposite meaning."


def json_documents(text: str) -> list[dict]:
    """Every top-level JSON object printed on stdout. Under `--strategy ddp` Lightning re-runs the CLI
    in each rank, so each rank prints its own summary (and the progress bar may sit between them)."""
    dec, docs, i = json.JSONDecoder(), [], 0
    while (i := text.find("{", i)) != -1:
        if i == 0 or text[i - 1] == "\n":
            try:
                doc, end = dec.raw_decode(text, i)
                docs.append(doc)
                i = end
                continue
            except json.JSONDecodeError:
                pass
        i += 1
    return docs


@pytest.mark.slow
def test_icm_trains_with_ddp_on_two_cpu_processes(tiny_zoo, tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "HYPERGEN_HOME": str(tmp_path / "home")}

    def train(out, *extra):
        cmd = [
            sys.executable, "-m", "hypergen.cli", "train", "icm", "--zoo", str(tiny_zoo.root), "--encoder", "fake",
            "--steps", "6", "--batch-size", "2", "--accelerator", "cpu", "--logger", "none", "--out", str(out), "--json", *extra,
        ]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-4000:]
        docs = json_documents(p.stdout)
        assert len(docs) == 1 and docs[0]["family"] == "icm", p.stdout[-2000:]  # stdout is pure JSON, printed by rank 0 only
        return docs

    ddp = train(tmp_path / "ddp", "--devices", "2", "--strategy", "ddp")
    one = train(tmp_path / "one", "--devices", "1")
    assert all(d["world_size"] == 2 and d["train"]["strategy"] == "ddp" for d in ddp)
    assert all(d["world_size"] == 1 for d in one)
    assert json.loads((tmp_path / "ddp" / "train.json").read_text())["world_size"] == 2  # written by rank 0
    # each rank drew its own batches; DDP's gradient sync is what leaves both with the same weights
    assert ddp[0]["ranks_agree"] is True and len(ddp[0]["rank_fingerprints"]) == 2, ddp[0].get("rank_fingerprints")
    assert "ranks_agree" not in one[0]

    bank = ExpertBank.from_zoo(tiny_zoo, FakeEncoder())
    e = FakeEncoder().encode([ANTONYM])[0]
    got = {k: load_generator(tmp_path / k, bank, family="icm").generate(e, samples=2).weights for k in ("ddp", "one")}
    for w in got.values():
        assert list(w.modules) == list(bank.layout.paths)
    # the heads start at zero: non-zero heads in rank 0's file mean it saved trained weights, not its start
    heads = load_generator(tmp_path / "ddp", bank, family="icm").decoder.heads
    assert any(float(h.weight.abs().max()) > 0 for h in heads.values())


@pytest.mark.slow
def test_t2l_sft_trains_with_ddp_on_two_cpu_processes(tiny_zoo, tiny_path, tmp_path):
    """The sft objective under DDP: each rank draws its own batches through the frozen base, validation
    (own and another task's description) runs, and rank 0 writes a generator that loads."""
    env = {**os.environ, "WANDB_MODE": "disabled", "HYPERGEN_HOME": str(tmp_path / "home")}
    cmd = [
        sys.executable, "-m", "hypergen.cli", "train", "t2l", "--objective", "sft", "--zoo", str(tiny_zoo.root), "--encoder", "fake",
        "--base", str(tiny_path), "--steps", "4", "--batch-size", "2", "--sft-examples", "1", "--val-families", "2", "--val-every", "2",
        "--accelerator", "cpu", "--logger", "none", "--out", str(tmp_path / "ddp"), "--json", "--devices", "2", "--strategy", "ddp",
    ]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    docs = json_documents(p.stdout)
    assert len(docs) == 1 and docs[0]["world_size"] == 2 and docs[0]["steps_done"] == 4, p.stdout[-2000:]
    saved = json.loads((tmp_path / "ddp" / "train.json").read_text())
    assert saved["world_size"] == 2 and saved["sft_tasks"]["val"] == 2, saved.keys()
    assert saved["ranks_agree"] is True and len(saved["rank_fingerprints"]) == 2, saved.get("rank_fingerprints")
    logged = [h for h in saved["history"] if "val_nll" in h]
    assert len(logged) == 2 and all("val_nll_other" in h for h in logged)
    bank = ExpertBank.from_zoo(tiny_zoo, FakeEncoder())
    w = load_generator(tmp_path / "ddp", bank, family="t2l").generate(FakeEncoder().encode([ANTONYM])[0]).weights
    assert list(w.modules) == list(bank.layout.paths)
