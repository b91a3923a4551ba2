"""LoraWeights on disk, hardened (issue 16): save never loses a file or leaves half an adapter, and load
refuses broken adapters with one line naming the file and the field."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from conftest import random_lora
from safetensors.torch import load_file, save_file

from hypergen.errors import HypergenError
from hypergen.lora import CONFIG_NAME, META_NAME, WEIGHTS_NAME, LoraWeights


@pytest.fixture(scope="module")
def model(tiny_path):
    from hypergen.base import load_base

    return load_base(tiny_path, device="cpu").model


@pytest.fixture()
def adapter(model):
    return random_lora(model, seed=1)


def snapshot(root):
    """Every file and folder under root with its bytes and mode: what 'nothing on disk changed' compares."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (p.read_bytes() if p.is_file() else None, stat.S_IMODE(st.st_mode))
    return out


def raises_one_line(fn, *fragments):
    with pytest.raises(HypergenError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    return msg


def same_weights(a: LoraWeights, b: LoraWeights) -> bool:
    return list(a.modules) == list(b.modules) and all(torch.equal(x, y) for p in a.modules for x, y in zip(a.modules[p], b.modules[p]))


# ---- load: a table of broken folders ---------------------------------------------------------------
A0 = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
B1 = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"


def edit_config(**changes):
    def go(folder):
        cfg = json.loads((folder / CONFIG_NAME).read_text())
        (folder / CONFIG_NAME).write_text(json.dumps({**cfg, **changes}))

    return go


def edit_tensors(fn):
    def go(folder):
        t = load_file(str(folder / WEIGHTS_NAME))
        fn(t)
        save_file(t, str(folder / WEIGHTS_NAME))

    return go


def write(name, text):
    return lambda folder: (folder / name).write_text(text)


def set_tensor(key, value):
    return edit_tensors(lambda t: t.__setitem__(key, value(t[key])))


def nan_at(t):
    t = t.clone()
    t[0, 0] = float("nan")
    return t


def inf_at(t):
    t = t.clone()
    t[-1, -1] = float("-inf")
    return t


BROKEN = [
    # id, breakage, file named in the message, fragment naming the field
    ("nan_in_A", set_tensor(A0, nan_at), WEIGHTS_NAME, f"{A0!r} holds NaN or inf"),
    ("inf_in_B", set_tensor(B1, inf_at), WEIGHTS_NAME, f"{B1!r} holds NaN or inf"),
    ("int_tensor", set_tensor(A0, lambda t: t.round().to(torch.int32)), WEIGHTS_NAME, f"{A0!r} is torch.int32; LoRA weights must be floating point"),
    ("1d_tensor", set_tensor(A0, lambda t: t.flatten()), WEIGHTS_NAME, f"{A0!r} has shape"),
    ("no_tensors", edit_tensors(lambda t: t.clear()), WEIGHTS_NAME, "holds no LoRA tensors"),
    ("config_r_16_over_rank_8", edit_config(r=16), CONFIG_NAME, "field 'r' is 16 but the tensors in adapter_model.safetensors have rank 8"),
    ("config_r_string", edit_config(r="8"), CONFIG_NAME, "field 'r' is '8'"),
    ("alpha_string", edit_config(lora_alpha="16"), CONFIG_NAME, "field 'lora_alpha' is '16'; it must be a finite positive number"),
    ("alpha_bool", edit_config(lora_alpha=True), CONFIG_NAME, "field 'lora_alpha' is True"),
    ("alpha_nan", edit_config(lora_alpha=float("nan")), CONFIG_NAME, "field 'lora_alpha' is nan"),
    ("alpha_inf", edit_config(lora_alpha=float("inf")), CONFIG_NAME, "field 'lora_alpha' is inf"),
    ("alpha_zero", edit_config(lora_alpha=0), CONFIG_NAME, "field 'lora_alpha' is 0"),
    ("alpha_negative", edit_config(lora_alpha=-16), CONFIG_NAME, "field 'lora_alpha' is -16"),
    ("alpha_1e30", edit_config(lora_alpha=1e30), CONFIG_NAME, "field 'lora_alpha' is 1e+30, a scale alpha/r of 1.25e+29: not a plausible LoRA scale"),
    ("rank_pattern", edit_config(rank_pattern={"q_proj": 4}), CONFIG_NAME, "field 'rank_pattern' is set"),
    ("alpha_pattern", edit_config(alpha_pattern={"q_proj": 64}), CONFIG_NAME, "field 'alpha_pattern' is set"),
    ("config_json_list", write(CONFIG_NAME, '[{"r": 8}]'), CONFIG_NAME, "holds an array, not a JSON object"),
    ("config_json_string", write(CONFIG_NAME, '"LORA"'), CONFIG_NAME, "holds a string, not a JSON object"),
    ("config_not_utf8", lambda f: (f / CONFIG_NAME).write_bytes(b"\xff\xfe{"), CONFIG_NAME, "cannot be read as JSON text"),
    ("meta_invalid_json", write(META_NAME, '{"generator": "sg",'), META_NAME, "is not valid JSON"),
    ("meta_json_list", write(META_NAME, '["sg"]'), META_NAME, "holds an array, not a JSON object"),
    ("meta_json_null", write(META_NAME, "null"), META_NAME, "holds null, not a JSON object"),
]


@pytest.mark.parametrize("breakage, file, fragment", [row[1:] for row in BROKEN], ids=[row[0] for row in BROKEN])
def test_load_refuses_broken_adapter(adapter, tmp_path, breakage, file, fragment):
    folder = tmp_path / "ad"
    adapter.save(folder)
    LoraWeights.load(folder)  # whole before the breakage: the row tests what it breaks, not something else
    breakage(folder)
    raises_one_line(lambda: LoraWeights.load(folder), str(folder / file), fragment)


def test_plausible_edge_cases_still_load(adapter, tmp_path):
    """The refusals must not catch real adapters: integer alpha, a large but sane scale, r missing."""
    folder = tmp_path / "ad"
    adapter.to(dtype=torch.bfloat16).save(folder)
    cfg = json.loads((folder / CONFIG_NAME).read_text())
    # lora_alpha missing: peft's default, 8 (scale 1 for this rank-8 adapter, as peft loads it)
    for changes, scaling in [({"lora_alpha": 16}, 2.0), ({"lora_alpha": 8 * 1e4}, 1e4), ({"r": None}, 2.0), ({"lora_alpha": None}, 1.0)]:
        (folder / CONFIG_NAME).write_text(json.dumps({k: v for k, v in {**cfg, **changes}.items() if v is not None}))
        assert LoraWeights.load(folder).scaling == pytest.approx(scaling)


# ---- save: new, empty, refused, forced ------------------------------------------------------------
def test_save_new_folder_is_0644_whatever_the_umask(adapter, tmp_path):
    old = os.umask(0o077)  # what safetensors and tempfile honour: without explicit modes the files are 0600
    try:
        adapter.save(tmp_path / "deep/er/ad")
    finally:
        os.umask(old)
    folder = tmp_path / "deep/er/ad"
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {WEIGHTS_NAME: 0o644, CONFIG_NAME: 0o644}
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert os.listdir(folder.parent) == ["ad"]  # no temporary sibling left
    assert same_weights(LoraWeights.load(folder), adapter)


def test_save_into_an_empty_folder_needs_no_force(adapter, tmp_path):
    (tmp_path / "ad").mkdir()
    adapter.save(tmp_path / "ad")
    assert sorted(os.listdir(tmp_path / "ad")) == [CONFIG_NAME, WEIGHTS_NAME]
    assert same_weights(LoraWeights.load(tmp_path / "ad"), adapter)


@pytest.mark.parametrize("kind", ["user_folder", "adapter_folder"])
def test_non_empty_folder_is_refused_without_force(adapter, model, tmp_path, kind):
    folder = tmp_path / "out"
    if kind == "adapter_folder":
        random_lora(model, seed=9).save(folder)
        want = "holds an adapter: pass --force"
    else:
        folder.mkdir()
        (folder / "adapter_config.json.bak").write_text("my notes")
        want = "is not empty and is not an adapter folder: pass --force"
    before = snapshot(tmp_path)
    raises_one_line(lambda: adapter.save(folder), str(folder), want)
    assert snapshot(tmp_path) == before


def test_force_replaces_an_adapter_and_keeps_other_files(adapter, model, tmp_path):
    folder = tmp_path / "ad"
    old = random_lora(model, seed=9)
    old.meta = {"generator": "sg", "description": "an old one"}
    old.save(folder)
    (folder / "README.md").write_text("my notes")
    adapter.save(folder, force=True)
    assert same_weights(LoraWeights.load(folder), adapter)
    assert LoraWeights.load(folder).meta == {}  # the old adapter's hypergen.json would describe the wrong adapter
    assert sorted(os.listdir(folder)) == ["README.md", CONFIG_NAME, WEIGHTS_NAME]  # no temporary files either
    assert (folder / "README.md").read_text() == "my notes"
    assert all(stat.S_IMODE((folder / n).stat().st_mode) == 0o644 for n in (CONFIG_NAME, WEIGHTS_NAME))


def test_force_adds_an_adapter_to_a_user_folder(adapter, tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "data.csv").write_text("a,b\n")
    adapter.meta = {"generator": "nearest"}
    adapter.save(folder, force=True)
    assert sorted(os.listdir(folder)) == [CONFIG_NAME, WEIGHTS_NAME, "data.csv", META_NAME]
    assert (folder / "data.csv").read_text() == "a,b\n"
    assert LoraWeights.load(folder).meta == {"generator": "nearest"}


# ---- save: failures leave everything as it was ----------------------------------------------------
def fail_in(monkeypatch, step):
    """Make one file's writer fail after it has begun writing (a full disk, a kill signal turned error)."""

    def half_written(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"\x00" * 10)
        raise OSError(28, "No space left on device")

    def broken_config(self):
        raise RuntimeError("boom")

    if step == "weights":
        monkeypatch.setattr("safetensors.torch.save_file", half_written)
    else:  # the weights are staged by then; the config, written last, fails
        monkeypatch.setattr(LoraWeights, "config_json", broken_config)


@pytest.mark.parametrize("step", ["weights", "config"])
def test_failed_overwrite_leaves_the_previous_adapter_intact(adapter, model, tmp_path, monkeypatch, step):
    folder = tmp_path / "ad"
    random_lora(model, seed=9).save(folder)
    before = snapshot(tmp_path)
    fail_in(monkeypatch, step)
    with pytest.raises((HypergenError, RuntimeError)):
        adapter.save(folder, force=True)
    assert snapshot(tmp_path) == before  # same files, same bytes, no temporary files


@pytest.mark.parametrize("step", ["weights", "config"])
def test_failed_new_save_leaves_nothing(adapter, tmp_path, monkeypatch, step):
    (tmp_path / "keep").mkdir()
    before = snapshot(tmp_path)
    fail_in(monkeypatch, step)
    with pytest.raises((HypergenError, RuntimeError)):
        adapter.save(tmp_path / "keep/new/parents/ad")
    assert snapshot(tmp_path) == before  # no folder, no temporary sibling, no parent it created


def test_disk_errors_are_one_line(adapter, tmp_path, monkeypatch):
    fail_in(monkeypatch, "weights")
    raises_one_line(lambda: adapter.save(tmp_path / "ad"), f"Cannot write the adapter to {tmp_path / 'ad'}: No space left on device")


# ---- save: paths that cannot be an adapter folder -------------------------------------------------
def test_existing_file_is_refused(adapter, tmp_path):
    (tmp_path / "ad").write_text("not a folder")
    before = snapshot(tmp_path)
    raises_one_line(lambda: adapter.save(tmp_path / "ad", force=True), f"{tmp_path / 'ad'} exists and is not a folder")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("under", ["ad", "ad/deeper"])
def test_path_under_a_file_is_refused(adapter, tmp_path, under):
    (tmp_path / "file.txt").write_text("x")
    target = tmp_path / "file.txt" / under
    before = snapshot(tmp_path)
    raises_one_line(lambda: adapter.save(target), f"Cannot write the adapter to {target}: {tmp_path / 'file.txt'} is not a folder")
    assert snapshot(tmp_path) == before


def test_unwritable_parent_is_refused(adapter, tmp_path, monkeypatch):
    """A folder that refuses new entries: one line naming the target and the OS's reason, nothing left in it."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores 0500: refuse creating anything in it as the OS does for anyone else
            mkdir = os.mkdir

            def refusing_mkdir(path, *a, **kw):
                if os.path.dirname(os.path.abspath(path)) == str(locked):
                    raise PermissionError(13, "Permission denied", str(path))
                return mkdir(path, *a, **kw)

            monkeypatch.setattr(os, "mkdir", refusing_mkdir)  # Path.mkdir and tempfile.mkdtemp both create through it
        raises_one_line(lambda: adapter.save(locked / "ad"), f"Cannot write the adapter to {locked / 'ad'}: Permission denied")
        assert os.listdir(locked) == []
    finally:
        locked.chmod(0o700)
