"""hypergen: describe a task, get a LoRA adapter. A thin page over hypergen.api; serve it with `hypergen app`.

HYPERGEN_APP_ZOO / _BASE / _ENCODER / _GENERATOR / _DEVICE choose the zoo, base model, encoder, the
generator selected at start and the device (hypergen.app_cli.AppSettings; tests point them at the tiny
model and the fake encoder).
"""

from __future__ import annotations

import logging
import tempfile

import pandas as pd
import streamlit as st
from app_support import MAX_INPUT_TOKENS, MAX_INPUTS, SessionAdapters, description_map, generate_adapter, input_limit_error, zip_folder, zoo_chart

from hypergen import api
from hypergen.app_cli import AppSettings
from hypergen.errors import HypergenError
from hypergen.identity import base_name

log = logging.getLogger("hypergen.app")
SETTINGS = AppSettings.from_env()  # what `hypergen app` (or a test) set; unset ones keep api.generate's defaults
DEFAULT = SETTINGS.generator or api.default_generator()


@st.cache_resource(show_spinner="Loading the base model...")
def sessions(base: str | None, device: str) -> SessionAdapters:
    """One resident base model for every session of this server; each session has its own slot."""
    return SessionAdapters(api.resident(base, device))


def call(what: str, fn, *args, **kwargs):
    """fn(*args, **kwargs), or None after an error box; tracebacks go to the server log only."""
    try:
        return fn(*args, **kwargs)
    except HypergenError as e:
        st.error(str(e))
    except Exception as e:
        log.exception("%s failed", what)
        st.error(f"{what} failed ({type(e).__name__}); the server log has the details.")
    return None


def generate(description: str, generator: str, samples: int):
    """Generate into a temporary PEFT folder, keep the result, its zoo map and the folder as a zip in the session."""
    with st.spinner("Generating..."), tempfile.TemporaryDirectory() as tmp:
        res = call("Generation", generate_adapter, description, generator, samples=samples, activate=False, out=tmp, zoo_path=SETTINGS.zoo, encoder_name=SETTINGS.encoder, base=SETTINGS.base)
        points = call("Zoo map", description_map, res.description, SETTINGS.zoo, SETTINGS.encoder) if res else None
        state.update(result=res, zoo_map=points, zip=zip_folder(tmp) if res else None, answers=None)


def within_limits(texts: list[str]) -> bool:
    """Whether `texts` asks no more of the shared model than one request may; else an error box says why."""
    problem = call("Checking the inputs", lambda: input_limit_error(texts, sessions(SETTINGS.base, SETTINGS.device).count_tokens) or "")
    if problem:
        st.error(problem)
    return problem == ""  # None: the check itself failed, and call() has shown why


def answer(texts: list[str], max_new_tokens: int, prompt_description: bool):
    res = state.result
    desc = res.description if prompt_description else None
    with st.spinner("Answering with the base model and with the adapter..."):
        out = call("Answering", lambda: sessions(SETTINGS.base, SETTINGS.device).answer(state.slot, res.weights, texts, max_new_tokens, description=desc))
    base, adapted = ([a or "(empty)" for a in col] for col in out) if out else ([], [])
    cols = ("base + description", "adapted + description") if desc else ("base", "adapted")
    state.answers = pd.DataFrame(dict(zip(cols, (base, adapted))), index=pd.Index(texts, name="input")) if out else None


def show(res):
    for w in res.warnings:
        st.warning(w)
    m = st.columns(4)
    m[0].metric("Generation time", f"{res.timings_ms.get('total', 0):.0f} ms", help=", ".join(f"{k} {v:.1f} ms" for k, v in res.timings_ms.items()))
    m[1].metric("Closest expert", f"{res.max_similarity:.2f}", help="Cosine similarity of the description to the nearest expert's.")
    m[2].metric("In the zoo's range", "yes" if res.in_range else "no")
    m[3].metric("Uncertainty", ", ".join(f"{v:.3g}" for k, v in (res.uncertainty or {}).items() if k != "samples") or "-", help=str(res.uncertainty or "Sample more than one adapter to see the spread."))
    left, right = st.columns(2)
    with left:
        st.subheader("Nearest experts")
        near = pd.DataFrame({"expert": [n.name for n in res.neighbors], "similarity": [n.similarity for n in res.neighbors]})
        st.bar_chart(near, x="expert", y="similarity", horizontal=True, sort="-similarity", height=260)
    with right:
        st.subheader("Zoo map")
        if state.zoo_map:
            st.altair_chart(zoo_chart(state.zoo_map, {n.name for n in res.neighbors}), height=260)
    st.caption(f"{res.generator}: rank {res.weights.rank}, {res.weights.num_params():,} parameters")
    st.download_button("Download adapter (PEFT folder, zip)", state.zip, file_name=f"hypergen-{res.generator}-adapter.zip", mime="application/zip")


st.set_page_config(page_title="hypergen", layout="wide")
state = st.session_state
state.setdefault("slot", SessionAdapters.new_slot())
state.setdefault("result", None)
state.setdefault("zoo_map", None)
state.setdefault("answers", None)

with st.sidebar:
    names = api.list_generators()
    generator = st.selectbox("Generator", names, index=names.index(DEFAULT) if DEFAULT in names else 0, help="Trained families need their checkpoint; baselines work on any zoo.")
    samples = st.number_input("Samples", 1, 16, 1, help="More than one: the adapter is their mean and their spread is the uncertainty.")
    max_new_tokens = st.slider("Max new tokens", 4, 256, 32)
    prompt_description = st.checkbox("Description in the prompt too", api.DEFAULT_PROMPT_DESCRIPTION,
                                     help="Answer with the description in the prompt as well as in the adapter (the default is the mode the held-out evaluation picked).")
    zoo = SETTINGS.zoo or call("Finding the zoo", api.default_zoo_path)
    st.caption(f"zoo: {zoo}  \nbase: {base_name(SETTINGS.base)}  \nencoder: {SETTINGS.encoder}")
    if not SETTINGS.generator and DEFAULT != api.DEFAULT_GENERATOR:  # as api.generate's note says when it falls back
        st.warning(f"No trained {api.DEFAULT_GENERATOR} checkpoint was found, so {DEFAULT} is preselected: set HYPERGEN_GENERATORS to the shipped generators/ folder.")

st.title("hypergen")
st.write("Describe a task in words and get a LoRA adapter for the base model, made by a generator trained on hundreds of described tasks or on a zoo of expert adapters.")
description = st.text_area("Describe the task", height=90, placeholder="Give the antonym of the word: the word with the opposite meaning.")
inputs = [t.strip() for t in st.text_area("Inputs, one per line", height=90, placeholder="hot\nlarge", help=f"At most {MAX_INPUTS} lines of {MAX_INPUT_TOKENS} tokens each.").splitlines() if t.strip()]
b1, b2, _ = st.columns([1, 1, 4])
clicked_generate = b1.button("Generate adapter", type="primary")
clicked_answer = b2.button("Answer inputs", disabled=state.result is None and not clicked_generate)

# Over the limits nothing runs, not even generation: the page says why and the inputs stay to be edited.
blocked = bool((clicked_generate or clicked_answer) and inputs and not within_limits(inputs))
if blocked:
    state.answers = None  # answers to earlier inputs would read as answers to these
if clicked_generate and not blocked:
    if description.strip():
        generate(description, generator, int(samples))
    else:
        st.info("Describe the task first, e.g. \"Give the antonym of the word.\"")
if state.result is not None:
    show(state.result)
    if not blocked and (clicked_answer or (clicked_generate and inputs)):
        if inputs:
            answer(inputs, max_new_tokens, prompt_description)
        else:
            st.info("Type one or more inputs, one per line, to compare the base model's answers with the adapted ones.")
    if state.answers is not None:
        st.subheader("Answers")
        st.table(state.answers)
