"""The Streamlit app (AppTest, in-process) on the tiny zoo/model and the fake encoder, its session
isolation under concurrency, and the `hypergen app` command line."""

from __future__ import annotations

import io
import sys
import threading
import zipfile

import pytest
import torch

from hypergen import api
from hypergen.generators import get_family
from hypergen.paths import REPO_ROOT

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

sys.path.insert(0, str(REPO_ROOT / "app"))
import app_support  # noqa: E402
from app_support import MAX_INPUT_CHARS, MAX_INPUT_TOKENS, MAX_INPUTS, SessionAdapters, generate_adapter, input_limit_error, zoo_map  # noqa: E402

TRAINED = [n for n in api.list_generators() if get_family(n).trainable]
SCRIPT = str(REPO_ROOT / "app" / "streamlit_app.py")
ANTONYM = "Give the antonym of the word: the word with the opposite meaning."
DESCRIPTIONS = [
    ANTONYM,
    "Translate the English word into French.",
    "Answer the arithmetic question with a number.",
    "Say whether the sentence is sarcastic or not.",
    "Classify the sentiment of the movie review as positive or negative.",
    "Give the plural form of the noun.",
    "Name the capital city of the country.",
    "Correct the spelling mistakes in the sentence.",
]


@pytest.fixture()
def app(tiny_zoo, tiny_path, monkeypatch):
    """The app pointed at the tiny zoo and model, the fake encoder and a baseline generator."""
    monkeypatch.setenv("HYPERGEN_APP_ZOO", str(tiny_zoo.root))
    monkeypatch.setenv("HYPERGEN_APP_BASE", str(tiny_path))
    monkeypatch.setenv("HYPERGEN_APP_ENCODER", "fake")
    monkeypatch.setenv("HYPERGEN_APP_GENERATOR", "mix")
    monkeypatch.setenv("HYPERGEN_APP_DEVICE", "cpu")
    return AppTest.from_file(SCRIPT, default_timeout=120).run()


def submit(at, description="", inputs="", button="Generate adapter"):
    at.text_area[0].input(description)
    at.text_area[1].input(inputs)
    next(b for b in at.button if b.label == button).click()
    return at.run()


def clean(at):
    """No traceback on the page and no error box."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_page_starts_with_the_set_generator(app):
    clean(app)
    assert app.selectbox[0].value == "mix" and set(app.selectbox[0].options) == set(api.list_generators())
    assert not app.metric and not app.download_button


@pytest.mark.parametrize("checkpoint", [True, False], ids=["default-trained", "default-untrained"])
def test_page_starts_with_the_default_generator(app, monkeypatch, tmp_path, checkpoint):
    """HYPERGEN_APP_GENERATOR unset: api.default_generator() is preselected; the fallback says why."""
    monkeypatch.delenv("HYPERGEN_APP_GENERATOR")
    monkeypatch.setenv("HYPERGEN_HOME", str(tmp_path / "home"))  # no user-trained checkpoints
    shipped = tmp_path / "generators"
    shipped.mkdir()
    if checkpoint:  # the lookup needs only the file (page start loads no generator)
        (shipped / api.DEFAULT_GENERATOR).mkdir()
        (shipped / api.DEFAULT_GENERATOR / "generator.json").write_text("{}")
    monkeypatch.setenv("HYPERGEN_GENERATORS", str(shipped))
    at = AppTest.from_file(SCRIPT, default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    want = api.DEFAULT_GENERATOR if checkpoint else api.FALLBACK_GENERATOR  # t2l is not the fixture's mix
    assert api.default_generator() == want and at.selectbox[0].value == want
    fallback = [w.value for w in at.warning if "No trained" in w.value]
    assert bool(fallback) is not checkpoint, fallback
    assert not at.metric and not at.download_button


def test_generate_shows_neighbours_time_zoo_map_and_download(app):
    at = submit(app, ANTONYM)
    clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Generation time"].endswith(" ms") and metrics["In the zoo's range"] == "yes"
    charts = at.get("vega_lite_chart")
    assert len(charts) == 2  # nearest-experts bars and the zoo map
    assert "antonyms" in str(charts[0].proto) and "your description" in str(charts[1].proto)
    assert [s.value for s in at.subheader][:2] == ["Nearest experts", "Zoo map"]
    assert len(at.download_button) == 1 and at.download_button[0].proto.label.startswith("Download adapter")
    res = at.session_state["result"]
    assert res.neighbors[0].name == "antonyms" and not at.table  # no inputs: no answers


def test_download_is_a_loadable_peft_folder(app, tmp_path):
    from hypergen.lora import LoraWeights

    at = submit(app, ANTONYM)
    zipfile.ZipFile(io.BytesIO(at.session_state["zip"])).extractall(tmp_path)
    assert {"adapter_config.json", "adapter_model.safetensors", "hypergen.json"} <= {p.name for p in tmp_path.iterdir()}
    got, want = LoraWeights.load(tmp_path), at.session_state["result"].weights
    assert list(got.modules) == list(want.modules) and (got.rank, got.alpha) == (want.rank, want.alpha)
    for p, (a, b) in want.modules.items():  # every module's A and B, as generated
        assert torch.equal(got.modules[p][0], a) and torch.equal(got.modules[p][1], b), p


def test_inputs_give_base_and_adapted_answers_side_by_side(app):
    assert app.checkbox[0].value is api.DEFAULT_PROMPT_DESCRIPTION  # the evaluation's default mode
    at = submit(app.checkbox[0].uncheck().run(), ANTONYM, "hot\nbig\n\n")
    clean(at)
    table = at.table[0].value
    assert list(table.columns) == ["base", "adapted"] and list(table.index) == ["hot", "big"]
    # and later inputs, answered with the same adapter by the second button
    at = submit(at, ANTONYM, "up", button="Answer inputs")
    clean(at)
    assert list(at.table[0].value.index) == ["up"]


def test_the_description_in_the_prompt_goes_to_both_columns(app, monkeypatch):
    seen = []
    real = SessionAdapters.answer

    def spy(self, slot, weights, texts, max_new_tokens=32, description=None):
        seen.append(description)
        return real(self, slot, weights, texts, max_new_tokens, description=description)

    monkeypatch.setattr(SessionAdapters, "answer", spy)
    at = submit(app.checkbox[0].check().run(), ANTONYM, "hot")
    clean(at)
    assert list(at.table[0].value.columns) == ["base + description", "adapted + description"] and seen == [ANTONYM]


def test_empty_description_is_an_inline_message(app):
    at = submit(app, "   ")
    clean(at)
    assert "Describe the task first" in at.info[0].value and not at.metric


def test_long_description_shows_the_truncation_notice(app):
    at = submit(app, "antonym opposite word " * 400)
    clean(at)
    assert any("truncated" in w.value for w in at.warning) and at.metric


def test_too_many_input_lines_is_an_error_box_and_nothing_runs(app):
    at = submit(app, ANTONYM, "\n".join(f"word{i}" for i in range(MAX_INPUTS + 1)))
    assert not at.exception and f"at most {MAX_INPUTS}" in at.error[0].value
    assert not at.metric and not at.table and at.session_state["result"] is None


def test_an_input_line_over_the_token_limit_is_an_error_box(app):
    at = submit(app, ANTONYM, "hot")
    clean(at)
    # the tiny tokenizer is byte-level: one token per character
    at = submit(at, ANTONYM, "hot\n" + "a" * (MAX_INPUT_TOKENS + 1), button="Answer inputs")
    assert not at.exception and at.error[0].value.startswith(f"Input line 2 is {MAX_INPUT_TOKENS + 1} tokens long")
    assert not at.table  # and the answers to "hot" are gone: they would read as answers to these inputs
    at = submit(at, ANTONYM, "a" * MAX_INPUT_TOKENS, button="Answer inputs")  # exactly at the limit runs
    clean(at)
    assert list(at.table[0].value.index) == ["a" * MAX_INPUT_TOKENS]


def test_the_zoo_map_encodes_under_the_generation_lock(app, monkeypatch):
    from hypergen.text import FakeEncoder

    held, encode = [], FakeEncoder.encode

    def spy(self, texts):
        held.append(app_support.GENERATE_LOCK.locked())  # nothing else runs here: locked means held by this call
        return encode(self, texts)

    monkeypatch.setattr(FakeEncoder, "encode", spy)
    at = submit(app, ANTONYM)
    clean(at)
    assert len(held) >= 2 and all(held), held  # generation's encode and the zoo map's
    assert "your description" in str(at.get("vega_lite_chart")[1].proto)
    held.clear()
    at = submit(at, ANTONYM, "hot", button="Answer inputs")  # a rerun draws the stored map: no encode at all
    clean(at)
    assert not held and len(at.get("vega_lite_chart")) == 2


@pytest.mark.parametrize("family", TRAINED[:1])
def test_trained_family_without_a_checkpoint_is_an_error_box(app, family):
    app.selectbox[0].select(family)
    at = submit(app, ANTONYM)
    assert not at.exception and at.error and family in at.error[0].value and not at.metric


def test_unexpected_failure_is_an_error_box_not_a_traceback(app, monkeypatch, caplog):
    def boom(*a, **k):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(api, "generate", boom)
    at = submit(app, ANTONYM)
    assert not at.exception and "Generation failed (RuntimeError)" in at.error[0].value
    assert "secret internals" not in at.error[0].value  # the details go to the server log only
    assert "secret internals" in caplog.text


# ---- one resident model, one slot per session ------------------------------------------------------
TEXTS, CANDIDATES = ["hot", "big"], [["cold", "warm"], ["small", "large"]]


def reference(model, weights):
    """What a session must see: its adapter alone in a fresh slot, computed sequentially."""
    model.load_adapter("ref", weights)
    n = len(TEXTS)
    out = model.answer(TEXTS + TEXTS, adapter_names=[None] * n + ["ref"] * n, max_new_tokens=4)
    return out[:n], out[n:], model.score(TEXTS, CANDIDATES, adapter_names=["ref"] * n)


def generated(description, tiny_zoo):
    return generate_adapter(description, "mix", activate=False, zoo_path=str(tiny_zoo.root), encoder_name="fake").weights


def test_eight_concurrent_sessions_get_their_own_adapters(tiny_zoo, tiny_path):
    from hypergen.base import load_base

    ref_model = load_base(tiny_path, device="cpu")
    want = [reference(ref_model, generated(d, tiny_zoo)) for d in DESCRIPTIONS]
    assert len({round(w[2][0][0], 4) for w in want}) >= 4  # the adapters differ, so cross-talk would show

    sessions = SessionAdapters(load_base(tiny_path, device="cpu"))
    got, errors = [None] * len(DESCRIPTIONS), []
    ready = threading.Barrier(len(DESCRIPTIONS))

    def session(i):
        try:
            slot, w = SessionAdapters.new_slot(), generated(DESCRIPTIONS[i], tiny_zoo)
            sessions.load(slot, w)
            ready.wait(timeout=120)  # every session's adapter is loaded before anyone answers
            base, adapted = sessions.answer(slot, w, TEXTS, max_new_tokens=4)
            got[i] = (base, adapted, sessions.score(slot, w, TEXTS, CANDIDATES))
        except Exception as e:  # surfaced below with the thread's index
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=session, args=(i,)) for i in range(len(DESCRIPTIONS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert len(sessions.model.adapters) == len(DESCRIPTIONS)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g[0] == w[0] and g[1] == w[1], f"session {i} ({DESCRIPTIONS[i]!r}) got another session's answers"
        torch.testing.assert_close(torch.tensor(g[2]), torch.tensor(w[2]), atol=1e-5, rtol=1e-5, msg=f"session {i}: log-likelihoods differ")


def test_least_recently_used_slot_is_dropped_and_reloaded(tiny_zoo, tiny_path):
    from hypergen.base import load_base

    ref_model = load_base(tiny_path, device="cpu")
    weights = [generated(d, tiny_zoo) for d in DESCRIPTIONS[:3]]
    want = [reference(ref_model, w)[2] for w in weights]
    sessions = SessionAdapters(load_base(tiny_path, device="cpu"), max_slots=2)
    slots = [SessionAdapters.new_slot() for _ in weights]
    for _ in range(2):
        for s, w, ref in zip(slots, weights, want):
            torch.testing.assert_close(torch.tensor(sessions.score(s, w, TEXTS, CANDIDATES)), torch.tensor(ref), atol=1e-5, rtol=1e-5)
            assert len(sessions.model.adapters) <= 2


def by_chars(texts):
    return [len(t) for t in texts]


@pytest.mark.parametrize(
    "texts, message",
    [
        ([], None),
        (["hot"] * MAX_INPUTS, None),
        (["a" * MAX_INPUT_TOKENS], None),
        (["hot"] * (MAX_INPUTS + 1), f"{MAX_INPUTS + 1} input lines: at most {MAX_INPUTS} at a time"),
        (["hot", "a" * (MAX_INPUT_TOKENS + 1)], f"Input line 2 is {MAX_INPUT_TOKENS + 1} tokens long: at most {MAX_INPUT_TOKENS} tokens per line"),
        (["a" * 300, "hot", "b" * 400], "Input lines 1, 3 are too long"),
        (["hot", "a" * (MAX_INPUT_CHARS + 1)], f"Input line 2 is {MAX_INPUT_CHARS + 1:,} characters long: at most {MAX_INPUT_TOKENS} tokens"),
    ],
    ids=["none", "max-lines", "max-tokens", "too-many-lines", "long-line", "two-long-lines", "huge-line"],
)
def test_input_limits(texts, message):
    got = input_limit_error(texts, by_chars)
    assert got is None if message is None else got.startswith(message), got


def test_input_limits_count_tokens_not_characters():
    def tokens(texts):  # a tokenizer that packs 4 characters into a token
        return [-(-len(t) // 4) for t in texts]

    assert input_limit_error(["a" * (4 * MAX_INPUT_TOKENS)], tokens) is None
    assert "tokens long" in input_limit_error(["a" * (4 * MAX_INPUT_TOKENS + 1)], tokens)


def test_input_limits_refuse_a_huge_line_without_tokenizing():
    def tokenizer(texts):
        raise AssertionError("tokenized megabytes under the shared lock")

    assert "characters long" in input_limit_error(["x" * 10_000_000], tokenizer)
    assert "input lines" in input_limit_error(["x"] * 10_000, tokenizer)


def test_count_tokens_uses_the_base_models_tokenizer(resident):
    sessions = SessionAdapters(resident)
    assert sessions.count_tokens(["hot", "", "a" * 300]) == [3, 0, 300]  # byte-level: a token per byte
    assert sessions.count_tokens(["é"]) == [2]


def test_zoo_map_places_an_expert_description_on_its_expert():
    emb = torch.nn.functional.normalize(torch.randn(5, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    rows = zoo_map(emb, list("abcde"), emb[2])
    assert [r["kind"] for r in rows] == ["expert"] * 5 + ["query"]
    assert rows[-1]["x"] == pytest.approx(rows[2]["x"], abs=1e-5) and rows[-1]["y"] == pytest.approx(rows[2]["y"], abs=1e-5)
    assert len(zoo_map(emb[:1], ["a"], emb[0])) == 2  # a one-expert zoo still maps


# ---- the command line -----------------------------------------------------------------------------
def test_app_command_becomes_the_server_with_its_options(monkeypatch, capsys, tiny_path):
    import os

    from hypergen import app_cli

    seen = {}

    def fake_execve(path, cmd, env):
        seen.update(path=path, cmd=cmd, env=env)

    monkeypatch.setattr(os, "execve", fake_execve)
    app_cli.app(port=8599, zoo="/z", base=str(tiny_path), encoder="fake", generator="mix", device="cpu")  # base and device are checked
    assert "hypergen app: http://127.0.0.1:8599" in capsys.readouterr().err
    cmd = seen["cmd"]
    assert seen["path"] == sys.executable
    assert cmd[:4] == [sys.executable, "-m", "streamlit", "run"] and cmd[4].endswith("app/streamlit_app.py")
    assert cmd[cmd.index("--server.port") + 1] == "8599" and cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    env = seen["env"]
    assert (env["HYPERGEN_APP_ZOO"], env["HYPERGEN_APP_BASE"], env["HYPERGEN_APP_ENCODER"], env["HYPERGEN_APP_GENERATOR"], env["HYPERGEN_APP_DEVICE"]) == ("/z", str(tiny_path), "fake", "mix", "cpu")


def test_app_defaults_are_the_apis_and_reach_the_page_through_the_environment(monkeypatch):
    """The app's encoder and device default to api.generate's; what `hypergen app` sets is what the page reads."""
    import inspect
    import os

    from typer.testing import CliRunner

    from hypergen.app_cli import AppSettings
    from hypergen.cli import app as cli

    params = inspect.signature(api.generate).parameters
    assert (AppSettings().encoder, AppSettings().device) == (params["encoder_name"].default, params["device"].default)
    given = AppSettings(zoo="/z", encoder="fake", generator="mix", device="cpu")
    assert AppSettings.from_env(given.env()) == given and "HYPERGEN_APP_BASE" not in given.env()
    assert AppSettings.from_env({"HYPERGEN_APP_ENCODER": "", "HYPERGEN_APP_DEVICE": "cpu"}) == AppSettings(device="cpu")  # empty: the default
    shown = " ".join(CliRunner().invoke(cli, ["app", "--help"]).stdout.split())
    assert f"[default: {params['encoder_name'].default}]" in shown and f"[default: {params['device'].default}]" in shown
    seen = {}
    monkeypatch.setattr(os, "execve", lambda path, cmd, env: seen.update(env=env))
    for k in given.env():
        monkeypatch.delenv(k, raising=False)
    r = CliRunner().invoke(cli, ["app", "--port", "8598"])
    assert r.exit_code == 0, r.output
    assert AppSettings.from_env(seen["env"]) == AppSettings()
    typo = CliRunner().invoke(cli, ["app", "--generator", "t2", "--port", "8598"])
    assert typo.exit_code == 1 and "Unknown generator 't2'; available: " in typo.stderr


def test_installed_app_says_it_needs_a_checkout_without_a_site_packages_path(monkeypatch):
    """A wheel has no app/: `hypergen app` says it runs from a source checkout, not "<site-packages>/app/... is missing"."""
    import os

    from typer.testing import CliRunner

    from hypergen import paths
    from hypergen.cli import app as cli

    monkeypatch.setattr(paths, "is_checkout", lambda: False)
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("an installed copy must not start streamlit"))
    r = CliRunner().invoke(cli, ["app"])
    assert r.exit_code == 1 and "source checkout" in r.stderr and "pip install" in r.stderr
    assert str(paths.REPO_ROOT) not in r.stderr and "streamlit_app.py" not in r.stderr
