"""Can a generator make a better adapter for an unseen task than its description gets? Its adapters for the
training families' descriptions, scored on every held-out task.

    .venv/bin/python bench/generator_reach.py [--generator t2l] [--checkpoint DIR] [--instances 4]
        [--prompt-description] [--prepared FILE] [--out docs/results/generator_reach.json]

bench/transfer_probe.py asked this of the zoo's 60 experts; this asks it of a trained generator, over the
tasks it trained on. For each training family (in the prepared-tasks file a `hypergen train ... --tasks
descriptions` run made, default: the newest in the cache), one description: its first task's `reader`
description (the kind the evaluation gives a held-out task), else its first. The generator makes one adapter
from each, and one from each held-out task's own description, another task's and gibberish (the evaluation's
controls). Every adapter is scored on every held-out task (the evaluation's 31 tasks and descriptions, the
first N test instances in the split's order, as bench/heldout_controls.py): reference-answer NLL per token,
each half of the instances apart. Gain = base NLL - adapter NLL (with `--prompt-description`, the default
mode: the task's description in every prompt, the base's included). Family-weighted, in nats:
- `own`, `other`, `gibberish`: the adapters the evaluation's rows use;
- `mean`: a training family's adapter drawn at random; `nearest`: the one whose description MiniLM puts nearest;
- `best, chosen on the other half`: for each task, the training family's adapter best on one half of the
  instances, scored on the other half (both ways, averaged): what the best reachable adapter gains, honestly;
  `best, in hindsight` is the same chosen and scored on all (biased upwards by the choice);
- `fixed, chosen on the other half`: one training family's adapter for every task, chosen the same way.
- `spearman`: rank correlation over training families of description similarity and gain (mean over tasks).
Reading: if `best` is well above `own` and `mean`, the generator can reach adapters that help unseen tasks and
the description does not lead to them; if `best` is near `mean`, its adapters are mostly one generic adapter.
The NLL matrix is the slow part (about 4-6 rows a second on a 2-core CPU: 274 families x 31 tasks x 4 instances
is ~1.5 h alone, ~2 h with the description in the prompt; `--every 2` halves it); it is kept in the JSON.
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
from transfer_probe import spearman, weighted

from hypergen import api, paths
from hypergen.eval.protocol import GIBBERISH, EvalConfig, plan
from hypergen.scoring import _nll
from hypergen.errors import HypergenError
from hypergen.tasks.descriptions import DEFAULT_PATH, load_descriptions

DATA = Path(DEFAULT_PATH).parent


def family_descriptions(prepared: Path) -> dict[str, tuple[str, str, torch.Tensor]]:
    """{family: (task, description text, its embedding)} from a prepared-tasks file (no encoder needed)."""
    data = torch.load(prepared, map_location="cpu", weights_only=True)
    sources = {}
    for path in sorted(DATA.glob("*.json")):  # bigbench.json, openai_evals.json; templated.json is not a descriptions file
        try:
            sources |= {n: [d.source for d in ds] for n, ds in load_descriptions(path).items()}
        except HypergenError:
            pass
    out = {}
    for t in sorted(data["tasks"], key=lambda t: t["name"]):
        fam = t["name"].split("/", 1)[0]
        if fam in out:
            continue
        src = sources.get(t["name"], [])
        k = src.index("reader") if "reader" in src and src.index("reader") < len(t["descriptions"]) else 0
        out[fam] = (t["name"], t["descriptions"][k], t["cond"][k])
    return out


def dump(record: dict) -> str:
    """JSON with the NLL matrix one task a line (the rest indented)."""
    head = json.dumps({k: v for k, v in record.items() if k != "nll"}, indent=1)[:-2]
    rows = ",\n".join(f"  {json.dumps(t)}: {json.dumps(r, separators=(',', ':'))}" for t, r in record["nll"].items())
    return head + ',\n "nll": {\n' + rows + "\n }\n}\n"


def unit_embeddings(fams: dict, train: list[str], enc, task_descriptions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The training families' description embeddings (in `train`'s order) and the held-out tasks', unit length."""
    fam_emb = torch.stack([fams[n.removeprefix("train:")][2] for n in train]).float()
    task_emb = enc.encode(task_descriptions).float()
    return torch.nn.functional.normalize(fam_emb, dim=-1), torch.nn.functional.normalize(task_emb, dim=-1)


def newest_prepared() -> Path:
    files = sorted((paths.home() / "cache" / "sft").glob("*.pt"), key=lambda p: p.stat().st_mtime)
    if not files:
        sys.exit("No prepared-tasks file in the cache: run the sft training command once (it prints the file's path), or pass --prepared.")
    return files[-1]


def nll_matrix(res, tasks, adapters: dict, instances: int, prompt_description: bool, batch: int, t0: float) -> dict:
    """{task: {"base" or adapter name: [NLL per token on the first half of the instances, on the second]}}.
    A held-out task's own controls ("own:<task>" ...) are scored on that task only. Rows = (adapter, instance),
    many adapters in one batched pass (per-row adapters, no swaps)."""
    half, nll = instances // 2, {}
    for j, et in enumerate(tasks):
        test, desc = et.test[:instances], (et.description if prompt_description else None)
        mine = ["base"] + [n for n in adapters if n.startswith("train:") or n.partition(":")[2] == et.task.name]
        nll[et.task.name] = {}
        per_pass = max(1, batch // len(test))
        for i in range(0, len(mine), per_pass):
            chunk = mine[i : i + per_pass]
            rows = [(n, x) for n in chunk for x in test]
            logp = res.score([x.input for _, x in rows], [[x.targets[0]] for _, x in rows], description=desc, batch_size=batch,
                             adapters=[adapters.get(n) for n, _ in rows])
            for k, n in enumerate(chunk):
                lp = [s[0] for s in logp[k * len(test) : (k + 1) * len(test)]]
                nll[et.task.name][n] = [round(_nll(res.tokenizer, test[:half], lp[:half]), 4), round(_nll(res.tokenizer, test[half:], lp[half:]), 4)]
        print(f"{j + 1}/{len(tasks)} {et.task.name} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return nll


def summary(nll: dict, train: list[str], fam_emb: torch.Tensor, task_emb: torch.Tensor) -> dict:
    """The family-weighted gains the module doc lists (a gain on all instances = the mean of the two halves')."""
    per = {k: {} for k in ("own", "other", "gibberish", "mean", "nearest", "best, chosen on the other half", "best, in hindsight", "spearman")}
    for (t, row), e in zip(nll.items(), task_emb):
        def gain(n, h=None):
            return row["base"][h] - row[n][h] if h is not None else (sum(row["base"]) - sum(row[n])) / 2

        for c in ("own", "other", "gibberish"):
            per[c][t] = gain(f"{c}:{t}")
        gains = torch.tensor([gain(n) for n in train])
        h0, h1 = (torch.tensor([gain(n, h) for n in train]) for h in (0, 1))
        sims = fam_emb @ e
        per["mean"][t] = gains.mean().item()
        per["nearest"][t] = gains[sims.argmax()].item()
        per["best, in hindsight"][t] = gains.max().item()
        per["best, chosen on the other half"][t] = (h1[h0.argmax()] + h0[h1.argmax()]).item() / 2
        per["spearman"][t] = spearman(sims, gains)
    out = {k: weighted(v) for k, v in per.items()}

    def fixed(h_choose: int, h_score: int) -> tuple[float, str]:
        """One training family's adapter for every task, chosen on one half (family-weighted), scored on the other."""
        by = {n: weighted({t: r["base"][h_choose] - r[n][h_choose] for t, r in nll.items()}) for n in train}
        pick = max(by, key=by.get)
        return weighted({t: r["base"][h_score] - r[pick][h_score] for t, r in nll.items()}), pick

    (f0, p0), (f1, p1) = fixed(0, 1), fixed(1, 0)
    out["fixed, chosen on the other half"], out["fixed picks"] = round((f0 + f1) / 2, 4), [p0, p1]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--generator", default="t2l")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--instances", type=int, default=4, help="first N test instances per held-out task (even: two halves)")
    ap.add_argument("--prompt-description", action="store_true", help="the task's description in every prompt too (the default mode)")
    ap.add_argument("--prepared", type=Path, default=None)
    ap.add_argument("--every", type=int, default=1, help="every K-th training family by name (K = 2: half of them, half the time)")
    ap.add_argument("--max-families", type=int, default=None, help="only the first N of those (a quick look)")
    ap.add_argument("--batch", type=int, default=32, help="rows per forward pass (adapter x instance)")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    if a.instances < 2 or a.instances % 2:
        sys.exit("--instances must be even and >= 2 (two halves).")
    t0 = time.perf_counter()
    prepared = a.prepared or newest_prepared()
    fams = family_descriptions(prepared)
    tasks = plan(EvalConfig(split="heldout", instances=a.instances, seeds=1, methods=("base",)))
    held = {et.task.name.split("/", 1)[0] for et in tasks}
    assert not held & set(fams), f"held-out families among the training ones: {sorted(held & set(fams))}"
    fams = dict(list(fams.items())[:: a.every][: a.max_families])
    res, enc = api.resident(None, "auto"), api.encoder("minilm")
    gen = api.get_generator(a.generator, checkpoint=a.checkpoint, base_model=res.name)
    adapters = {f"train:{f}": gen.generate(e).weights for f, (_, _, e) in fams.items()}
    for et in tasks:
        for c, text in (("own", et.description), ("other", et.other_description), ("gibberish", GIBBERISH)):
            adapters[f"{c}:{et.task.name}"] = gen.generate(enc.encode([text])[0]).weights
    print(f"{len(adapters)} adapters made ({time.perf_counter() - t0:.0f} s)", flush=True)
    nll = nll_matrix(res, tasks, adapters, a.instances, a.prompt_description, a.batch, t0)
    train = [n for n in adapters if n.startswith("train:")]
    fam_emb, task_emb = unit_embeddings(fams, train, enc, [et.description for et in tasks])
    results = summary(nll, train, fam_emb, task_emb)
    base = weighted({t: sum(r["base"]) / 2 for t, r in nll.items()})
    print(json.dumps({"base NLL": base, **results}, indent=1), flush=True)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(dump({
            "command": " ".join(sys.argv), "machine": machine(), "seed": "none (first N instances; the generator's single adapter)",
            "wall_s": round(time.perf_counter() - t0), "generator": a.generator, "checkpoint": str(gen.checkpoint) if getattr(gen, "checkpoint", None) else a.checkpoint,
            "prepared": prepared.name, "prompt_description": a.prompt_description, "instances": a.instances, "base_nll": base, "results": results,
            "families": {f: [t, d] for f, (t, d, _) in fams.items()}, "nll": nll}))


if __name__ == "__main__":
    main()
