"""Text encoders: description text -> unit-length embedding (the generators' condition).

MiniLMEncoder is the real one (all-MiniLM-L6-v2, 384-d, offline from its wheel). FakeEncoder is a
deterministic hashed bag of words and character trigrams for tests: texts that share words get a
positive cosine, so similarity-based code behaves sensibly without a real model.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, runtime_checkable

import torch

from hypergen.errors import HypergenError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LONG = "the encoder reads the first"
"""In the warning for a description longer than the encoder's window."""


@contextlib.contextmanager
def one_line_for_long_descriptions() -> Iterator[None]:
    """Inside, the encoder's warning for each too-long description is held back and counted, then said in one
    line on stderr (embedding thousands of training descriptions would print one each); other warnings pass."""
    seen: list = []
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            yield
    finally:  # also when the body raises: what it warned is still said
        cut = sum(LONG in str(w.message) for w in seen)
        for w in seen:
            if LONG not in str(w.message):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if cut:
            many = "descriptions are" if cut > 1 else "description is"
            print(f"{cut} {many} longer than the encoder's window; it reads the start of each.", file=sys.stderr, flush=True)


@runtime_checkable
class TextEncoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, dim) float32, each row L2-normalised."""
        ...


class MiniLMEncoder:
    """all-MiniLM-L6-v2 through sentence-transformers, from the folder extracted out of its wheel."""

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, path=None, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

        from hypergen import assets

        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        path = path or assets.ensure_minilm()
        self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
        self.max_tokens = self.model.max_seq_length
        self.model.encode(["warm-up"], show_progress_bar=False)  # first call pays one-off setup (~0.5 s): count it as loading

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        texts = _check(texts)
        tok = self.model.tokenizer
        for t in texts:
            n = len(tok(t, add_special_tokens=True)["input_ids"])
            if n > self.max_tokens:
                warnings.warn(f"Description is {n} tokens; {LONG} {self.max_tokens} and ignores the rest.", stacklevel=2)
        with torch.inference_mode():
            emb = self.model.encode(list(texts), convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
        return emb.float().cpu()


class FakeEncoder:
    """Deterministic stand-in for tests: hashed words and character trigrams, L2-normalised."""

    name = "fake"
    dim = 384

    def __init__(self, dim: int = 384):
        self.dim = dim

    def _bucket(self, token: str) -> tuple[int, float]:
        h = hashlib.blake2b(token.encode(), digest_size=8).digest()
        return int.from_bytes(h[:4], "little") % self.dim, 1.0 if h[4] % 2 else -1.0

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        texts = _check(texts)
        out = torch.zeros(len(texts), self.dim)
        for i, t in enumerate(texts):
            words = re.findall(r"\w+", t.lower())
            grams = [w[j : j + 3] for w in words for j in range(max(1, len(w) - 2))]
            for tok, weight in [(w, 1.0) for w in words] + [(g, 0.3) for g in grams]:
                j, sign = self._bucket(tok)
                out[i, j] += sign * weight
        return torch.nn.functional.normalize(out, dim=-1)


def _check(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
        raise HypergenError("Empty description: describe the task in words, e.g. \"label each tweet as sarcastic or not\".")
    return texts


def _encoder_class(name: str) -> type:
    if name in ("minilm", MiniLMEncoder.name):
        return MiniLMEncoder
    if name == "fake":
        return FakeEncoder
    raise HypergenError(f"Unknown encoder {name!r}; use 'minilm' or 'fake'.")


def encoder_name(name: str) -> str:
    """The name an encoder records in what it embeds ('minilm' -> all-MiniLM-L6-v2), without loading it."""
    return _encoder_class(name).name


def load_encoder(name: str = "minilm", device: str = "cpu") -> TextEncoder:
    """'minilm' (the real encoder) or 'fake' (tests)."""
    cls = _encoder_class(name)
    return cls(device=device) if cls is MiniLMEncoder else cls()


class KnownEmbeddings:
    """An encoder that answers from embeddings its real encoder made before (text -> row), and loads that
    encoder (`load()`) only for a text it does not hold: e.g. with a prepared-tasks file carried to a
    machine that has no copy of the encoder."""

    def __init__(self, name: str, table: dict[str, torch.Tensor], load: Callable[[], TextEncoder]):
        self.name = name
        self.table = dict(table)
        self.dim = next(iter(self.table.values())).shape[-1] if self.table else _encoder_class(name).dim
        self._load, self._real = load, None

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        texts = _check(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in self.table]
        if missing:
            if self._real is None:
                print(f"{len(missing)} texts have no stored embedding; loading the encoder {self.name}.", file=sys.stderr, flush=True)
                self._real = self._load()
                if self._real.name != self.name:
                    raise HypergenError(f"The stored embeddings are {self.name}'s, but the encoder loaded is {self._real.name}.")
            self.table |= dict(zip(missing, self._real.encode(missing).float()))
        return torch.stack([self.table[t] for t in texts])
