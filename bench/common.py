"""Helpers shared by the benchmarks: machine line, percentiles, writing a section of a docs page."""

from __future__ import annotations

import re
import statistics
import time
from pathlib import Path

import torch

from hypergen.base import machine  # noqa: F401  (the machine line, shared with hypergen eval's report)

DOCS = Path(__file__).resolve().parent.parent / "docs"


def timeit(fn, runs: int, warmup: int = 3, sync: bool = False) -> list[float]:
    """Wall-clock milliseconds of `runs` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        if sync:
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        out.append((time.perf_counter() - t) * 1000)
    return out


def p50(xs) -> float:
    return statistics.median(xs)


def p90(xs) -> float:
    return sorted(xs)[max(0, int(round(0.9 * len(xs))) - 1)]


def write_section(page: str, key: str, body: str) -> Path:
    """Replace the text between <!-- key:begin --> and <!-- key:end --> in docs/page (append if absent)."""
    path = DOCS / page
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else ""
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
    return path
