"""What the page needs beside hypergen.api: per-session adapter slots on the one shared base model,
the limits on what one request may ask of it, the zoo map's 2-D projection and the adapter folder as a
zip. Plain Python, testable without Streamlit.
"""

from __future__ import annotations

import io
import threading
import uuid
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from hypergen import api
from hypergen.identity import require_same_base

# api.generate is thread-safe on its own; the page's zoo-map encode calls the encoder directly, and a
# warning it raises must not show in another session's result (warnings.catch_warnings is
# process-global). So generation and that encode take turns under one lock; each takes ms.
GENERATE_LOCK = threading.Lock()

# Per request, so that one browser session cannot hold the shared model (and its lock) for long.
MAX_INPUTS = 32  # input lines
MAX_INPUT_TOKENS = 256  # tokens of the base model's tokenizer, per line
MAX_INPUT_CHARS = 16 * MAX_INPUT_TOKENS  # per line; English runs ~4 characters a token


def generate_adapter(*args, **kwargs):
    """api.generate, one call at a time in this process."""
    with GENERATE_LOCK:
        return api.generate(*args, **kwargs)


def description_map(description: str, zoo_path: str | None, encoder_name: str) -> list[dict]:
    """zoo_map of the zoo's experts and `description`. The encode takes GENERATE_LOCK too: a warning it
    raises must not land in the warnings another session's api.generate is recording at that moment."""
    with GENERATE_LOCK:
        bank = api.bank(zoo_path, encoder_name)
        query = api.encoder(encoder_name).encode([description])[0]
    return zoo_map(bank.emb, bank.names, query)


def input_limit_error(texts: Sequence[str], count_tokens: Callable[[list[str]], list[int]]) -> str | None:
    """Why `texts` is over the per-request limits, as a message for the page; None when within them.
    count_tokens: texts -> their token counts (SessionAdapters.count_tokens)."""
    texts = list(texts)
    if len(texts) > MAX_INPUTS:
        return f"{len(texts)} input lines: at most {MAX_INPUTS} at a time, so that other sessions are not kept waiting. Remove {len(texts) - MAX_INPUTS} lines, or answer them in turns."
    # Characters first: megabytes of text are refused before the tokenizer spends the shared lock on them.
    sizes, unit, limit = [len(t) for t in texts], "characters", MAX_INPUT_CHARS
    if max(sizes, default=0) <= MAX_INPUT_CHARS:
        sizes, unit, limit = count_tokens(texts), "tokens", MAX_INPUT_TOKENS
    over = [(i, n) for i, n in enumerate(sizes, 1) if n > limit]
    if len(over) == 1:
        return f"Input line {over[0][0]} is {over[0][1]:,} {unit} long: at most {MAX_INPUT_TOKENS} tokens per line. Shorten it."
    if over:
        return f"Input lines {', '.join(str(i) for i, _ in over)} are too long: at most {MAX_INPUT_TOKENS} tokens per line. Shorten them."
    return None


class SessionAdapters:
    """Each browser session's adapter in its own slot of one resident base model.

    peft's adapter modules and the model's routing are shared by every session, so one lock covers
    every slot change and every forward pass: a session loading its adapter never lands between
    another session's load and its generate. At most `max_slots` stay loaded; the least recently used
    is dropped and reloaded from its session's weights if that session comes back.
    """

    def __init__(self, model, max_slots: int = 32):
        self.model = model
        self.max_slots = max(1, max_slots)
        self.lock = model.lock  # the model's own (reentrant) lock: api calls in this process serialise with the sessions
        self._loaded: OrderedDict[str, object] = OrderedDict()  # slot -> the LoraWeights in it, LRU order

    @staticmethod
    def new_slot() -> str:
        # "s" + hex: never a torch.nn.Module attribute, which peft would clash with
        return "s" + uuid.uuid4().hex[:16]

    def _ensure(self, slot: str, weights) -> None:
        """Caller holds the lock."""
        if self._loaded.get(slot) is not weights:
            require_same_base(weights.base_model, self.model.name, "The generated adapter")  # shapes alone pass a same-size other base
            self.model.load_adapter(slot, weights)  # in place when the slot exists: a few small copies
            self._loaded[slot] = weights
        self._loaded.move_to_end(slot)
        while len(self._loaded) > self.max_slots:
            old, _ = self._loaded.popitem(last=False)
            self.model.remove(old)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text under the base model's tokenizer. Under the lock: a fast tokenizer that another
        thread is padding for a batch refuses a concurrent call ("Already borrowed")."""
        with self.lock:
            return [len(ids) for ids in self.model.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def load(self, slot: str, weights) -> None:
        with self.lock:
            self._ensure(slot, weights)

    def answer(self, slot: str, weights, texts: Sequence[str], max_new_tokens: int = 32, description: str | None = None) -> tuple[list[str], list[str]]:
        """(base answers, adapted answers) for `texts`, in one mixed batch routed per row. description: in
        both prompts (the base with it is what the adapter must beat)."""
        texts = list(texts)
        n = len(texts)
        with self.lock:
            self._ensure(slot, weights)
            out = self.model.answer(texts + texts, description=description, adapter_names=[None] * n + [slot] * n, max_new_tokens=max_new_tokens)
        return out[:n], out[n:]

    def score(self, slot: str | None, weights, texts: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[list[float]]:
        """Log-likelihood of each candidate answer, with the session's adapter (slot) or the base (None)."""
        with self.lock:
            if slot is not None:
                self._ensure(slot, weights)
            return self.model.score(list(texts), candidates, adapter_names=[slot] * len(texts))


def zoo_map(emb: torch.Tensor, names: Sequence[str], query: torch.Tensor, query_label: str = "your description") -> list[dict]:
    """Experts' description embeddings (N, D) on their first two principal axes, the query (D,) projected
    onto the same axes. One dict per point: name, x, y, kind ("expert" or "query")."""
    x = emb.float()
    mean = x.mean(0, keepdim=True)  # (1, D)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)  # vh: (min(N, D), D)
    axes = torch.zeros(x.shape[1], 2)
    k = min(2, vh.shape[0])
    axes[:, :k] = vh[:k].T  # (D, 2); a one-expert zoo gets a zero second axis
    pts = (x - mean) @ axes  # (N, 2)
    q = (query.float()[None] - mean) @ axes  # (1, 2)
    rows = [{"name": n, "x": float(p[0]), "y": float(p[1]), "kind": "expert"} for n, p in zip(names, pts)]
    return rows + [{"name": query_label, "x": float(q[0, 0]), "y": float(q[0, 1]), "kind": "query"}]


def zoo_chart(rows: list[dict], nearest: set[str]):
    """The zoo map as an Altair chart: experts grey, the nearest ones blue and named, the query a red diamond."""
    import altair as alt
    import pandas as pd

    pts = pd.DataFrame(rows)
    pts["group"] = ["your description" if k == "query" else "nearest" if n in nearest else "expert" for n, k in zip(pts.name, pts.kind)]
    domain = ["expert", "nearest", "your description"]
    legend = alt.Legend(orient="bottom", title=None)
    points = alt.Chart(pts).encode(x=alt.X("x", axis=None), y=alt.Y("y", axis=None), tooltip=["name", "group"])
    dots = points.mark_point(filled=True, size=130, opacity=0.9).encode(
        color=alt.Color("group", scale=alt.Scale(domain=domain, range=["#9aa5b1", "#1f77b4", "#d62728"]), legend=legend),
        shape=alt.Shape("group", scale=alt.Scale(domain=domain, range=["circle", "circle", "diamond"]), legend=legend),
    )
    names = points.mark_text(align="left", dx=9, fontSize=11, color="#1f77b4").encode(text="name").transform_filter(alt.datum.group == "nearest")
    query = points.mark_text(dy=-14, fontSize=12, fontWeight="bold", color="#d62728").encode(text="name").transform_filter(alt.datum.group == "your description")
    return dots + names + query


def zip_folder(folder: str | Path) -> bytes:
    """Every file under `folder` in an in-memory zip, paths relative to it."""
    folder = Path(folder)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(folder).as_posix())
    return buf.getvalue()
