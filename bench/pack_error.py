"""How much packing a generator (`hypergen generator-pack`, int8 matrices) changes the adapters it makes.

    .venv/bin/python bench/pack_error.py SOURCE_FOLDER PACKED_FOLDER

Loads both checkpoints on the default zoo's bank with the real MiniLM encoder and prints, for a few
descriptions, the relative error ||dW_packed - dW_source|| / ||dW_source|| per adapted module (max, mean).
"""

from __future__ import annotations

import argparse

DESCRIPTIONS = ["Rewrite each sentence in the past tense.", "Label each tweet as sarcastic or not.", "Translate the English sentence into French."]


def main() -> None:
    from hypergen import api
    from hypergen.generators import load_generator

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source")
    ap.add_argument("packed")
    args = ap.parse_args()
    bank, enc = api.bank(None, "minilm"), api.encoder("minilm")
    src, packed = (load_generator(f, bank) for f in (args.source, args.packed))
    for d in DESCRIPTIONS:
        e = enc.encode([d])[0]
        a, b = src.generate(e, seed=0).weights, packed.generate(e, seed=0).weights
        errs = [float((b.delta(p) - a.delta(p)).norm() / a.delta(p).norm().clamp_min(1e-12)) for p in a.modules]
        print(f"{d[:50]:50}  relative dW error: max {max(errs):.4f}, mean {sum(errs) / len(errs):.4f}")


if __name__ == "__main__":
    main()
