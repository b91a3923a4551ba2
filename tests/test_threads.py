"""The Python API from several threads: each call answers with its own adapter (hypergen.api holds the
resident model's lock across activate + answer, and one lock around encode + generate)."""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from hypergen import api

INPUTS = ["hot", "big", "the cat sat on the mat"]
CALLS = 20


def test_concurrent_calls_answer_with_their_own_adapter(tiny_zoo, tiny_path, tmp_path):
    common = dict(base=str(tiny_path), device="cpu", max_new_tokens=6)
    gen = dict(zoo_path=str(tiny_zoo.root), encoder_name="fake", **common)
    tiny_zoo.weights("review_sentiment").save(tmp_path / "expert")
    jobs = {  # two generated adapters (one slot, swapped per call) and a saved one through api.answer
        "antonyms": lambda: api.generate("Give the antonym of the word.", "nearest", inputs=INPUTS, **gen).answers,
        "uppercase": lambda: api.generate("Rewrite the given word in capital letters.", "nearest", inputs=INPUTS, **gen).answers,
        "answer": lambda: api.answer(INPUTS, adapter=tmp_path / "expert", **common),
    }
    expected = {k: job() for k, job in jobs.items()}
    assert len({tuple(v) for v in expected.values()}) == len(jobs)  # the adapters answer differently, so a swap shows

    start = threading.Barrier(len(jobs))

    def worker(key):
        start.wait()
        return [jobs[key]() for _ in range(CALLS)]

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so an unguarded activate lands between another's activate and answer
    try:
        with ThreadPoolExecutor(len(jobs)) as pool:
            got = dict(zip(jobs, pool.map(worker, jobs)))
    finally:
        sys.setswitchinterval(interval)
    wrong = {k: sum(a != expected[k] for a in answers) for k, answers in got.items()}
    assert wrong == {k: 0 for k in jobs}, f"wrong answers out of {CALLS} calls per thread: {wrong}"
