"""Does description similarity say which expert helps an unseen task? Every zoo expert on every held-out task.

    .venv/bin/python bench/transfer_probe.py [--instances 4] [--prompt-description] [--out docs/results/transfer_probe.json]

A generator can carry its description to unseen tasks only if tasks described alike are helped by alike
adapters. This measures that premise directly, with no generator: for each held-out task (the evaluation's
31 tasks and descriptions, its first N test instances in the split's order, as bench/heldout_controls.py), the
reference-answer NLL per token (hypergen.scoring.reference_nll) under the base and under each of the zoo's 60
experts, alone. Gain = base NLL - expert NLL. Then, for each description encoder (MiniLM, which ships, and the
base model SmolLM2 read two ways: the mean of a layer's states over the description's tokens, and the last
token's state after a prompt that asks for the task in one word, PromptEOL), the expert whose default description is nearest the task's:
- `nearest`: its gain; `best`: the best expert's; `mean`: an expert drawn at random (the mean over experts);
- `spearman`: the rank correlation, over experts, of description similarity and gain (mean over tasks).
Beside them, with no description: `fixed`, one expert for every task, the best such on these very tasks (an
upper bound on any fixed choice, chosen with the answers).
`--prompt-description`: every score (base included) with the task's description in the prompt too, the default
mode's. Family-weighted (each held-out family counts once). The NLL matrix is the slow part (~10 min here); it is kept
in the JSON, and `--matrix F.json` reuses one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine

from hypergen import api
from hypergen.eval.protocol import EvalConfig, plan
from hypergen.eval.stats import family_means
from hypergen.scoring import reference_nll
from hypergen.text import one_line_for_long_descriptions

EOL = 'This task: "{}" means in one word: "'


@torch.no_grad()
def smollm2(texts: list[str], how: str, layers: tuple[int, ...], batch: int = 32) -> dict[int, torch.Tensor]:
    """{layer: (N, H)} unit embeddings, centred (decoder states share one large common direction)."""
    r = api.resident()
    tok, model = r.tokenizer, r.model
    tok.padding_side = "right"
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # batches of like lengths pad little
    out = {layer: torch.zeros(len(texts), model.config.hidden_size) for layer in layers}
    for i in range(0, len(order), batch):
        idx = order[i : i + batch]
        chunk = [EOL.format(texts[j]) if how == "eol" else texts[j] for j in idx]
        enc = tok(chunk, return_tensors="pt", padding=True, truncation=True, max_length=128)
        states = model(**enc, output_hidden_states=True).hidden_states
        mask = enc["attention_mask"].unsqueeze(-1).float()
        last = enc["attention_mask"].sum(1) - 1
        for layer in layers:
            h = states[layer]
            out[layer][idx] = ((h * mask).sum(1) / mask.sum(1) if how == "mean" else h[torch.arange(len(idx)), last]).float()
    return {layer: torch.nn.functional.normalize(e - e.mean(0), dim=-1) for layer, e in out.items()}


def held_out(instances: int, prompt_description: bool) -> tuple[list, dict]:
    """The evaluation's held-out tasks, and the probe's record without its NLL matrix: texts and settings."""
    tasks = plan(EvalConfig(split="heldout", instances=instances, seeds=1, methods=("base",)))
    z = api.zoo()
    return tasks, {"instances": instances, "prompt_description": prompt_description, "descriptions": {et.task.name: et.description for et in tasks},
                   "experts": {n: z.record(n).description for n in z.names()}}


def nll_matrix(tasks: list, instances: int, prompt_description: bool) -> dict[str, dict[str, float]]:
    """{task: {"base" or expert: reference-answer NLL per token}}: one swap per expert, then every task."""
    res, z = api.resident(None, "auto"), api.zoo()
    nll: dict[str, dict[str, float]] = {et.task.name: {} for et in tasks}
    t0 = time.perf_counter()
    for i, name in enumerate(["base", *z.names()]):
        if name == "base":
            res.deactivate()
        else:
            res.activate(z.weights(name), name="probe")
        for et in tasks:
            nll[et.task.name][name] = reference_nll(res, et.test[:instances], description=et.description if prompt_description else None)
        print(f"{i}/{len(z)} {name} ({time.perf_counter() - t0:.0f} s)", flush=True)
    res.deactivate()
    return nll


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    rx, ry = x.argsort().argsort().float(), y.argsort().argsort().float()
    return torch.corrcoef(torch.stack([rx, ry]))[0, 1].item()


def weighted(per_task: dict[str, float]) -> float:
    fam = family_means(per_task)
    return round(sum(fam.values()) / len(fam), 4)


def fixed(m: dict) -> dict:
    """The one expert whose gain, used for every task, is highest (family-weighted), and the next four."""
    gains = {x: weighted({t: row["base"] - row[x] for t, row in m["nll"].items()}) for x in m["experts"]}
    return dict(sorted(gains.items(), key=lambda kv: -kv[1])[:5])


def score(m: dict, task_emb: torch.Tensor, expert_emb: torch.Tensor) -> dict:
    experts = list(m["experts"])
    per = {k: {} for k in ("nearest", "best", "mean", "spearman")}
    for t, e in zip(m["descriptions"], task_emb):
        row = m["nll"][t]
        gain = torch.tensor([row["base"] - row[x] for x in experts])
        sims = expert_emb @ e
        per["nearest"][t] = gain[sims.argmax()].item()
        per["best"][t] = gain.max().item()
        per["mean"][t] = gain.mean().item()
        per["spearman"][t] = spearman(sims, gain)
    return {k: weighted(v) for k, v in per.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--instances", type=int, default=4)
    ap.add_argument("--prompt-description", action="store_true", help="the task's description in every prompt too (the default mode's)")
    ap.add_argument("--matrix", type=Path, help="a JSON this script wrote: reuse its NLL matrix")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    if a.matrix:
        m = json.loads(a.matrix.read_text())["matrix"]
    else:
        tasks, m = held_out(a.instances, a.prompt_description)
    task_texts, expert_texts = list(m["descriptions"].values()), list(m["experts"].values())
    texts = task_texts + expert_texts
    with one_line_for_long_descriptions():
        embs = {"minilm": api.encoder("minilm").encode(texts)}
    n_layers = api.resident().model.config.num_hidden_layers
    for how in ("mean", "eol"):  # before any adapter is loaded: smollm2() calls res.model itself, which applies the
        for layer, e in smollm2(texts, how, (n_layers // 2, n_layers)).items():  # last activated slot even after deactivate()
            embs[f"smollm2-{how}-layer{layer}"] = e
    if not a.matrix:
        m["nll"] = nll_matrix(tasks, a.instances, a.prompt_description)
    results = {"fixed": fixed(m)}
    print("fixed", results["fixed"], flush=True)
    for name, e in embs.items():
        results[name] = score(m, e[: len(task_texts)], e[len(task_texts) :])
        print(name, results[name], flush=True)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"machine": machine(), "seed": "none (first N instances)", "results": results, "matrix": m}, indent=1) + "\n")


if __name__ == "__main__":
    main()
