"""The resident base model: loaded once, adapters swapped in and out without reloading it.

ResidentModel wraps one causal LM with peft adapter slots. Activating an adapter whose rank and
modules match an existing slot copies its tensors into that slot in place (a hot swap: no new modules,
no reload); otherwise a slot is added once. Adapters stay unmerged so a swap is a handful of small copies.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from hypergen.errors import HypergenError
from hypergen.lora import LoraWeights
from hypergen.tasks.prompt import format_prompt

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub is reachable: never let transformers try
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

BASE = "__base__"  # peft's name for "no adapter" in per-row adapter_names
CANDIDATE_TOKENS_PER_ROW = 128  # answer_and_score: a batch's memory, in candidate-token logits, per row of batch_size
SHARED_MIN = 4  # answer_and_score: the fewest common first tokens worth a shared prefix cache


def machine() -> str:
    """One line naming this machine for benchmark and evaluation reports: CPU model, cores, torch, GPU."""
    import platform

    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = f"{torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), {dev}, {platform.system()} {platform.machine()}"


def check_base_folder(path: str | Path) -> Path:
    """`--base PATH` as a Path, refused unless it is a Hugging Face model folder."""
    path = Path(path).expanduser()
    if not (path / "config.json").is_file():
        raise HypergenError(f"{path} is not a Hugging Face model folder (no config.json); pass a folder saved with save_pretrained.")
    return path


def pick_device(device: str = "auto") -> torch.device:
    """cuda when present, else cpu; `device` overrides ("cpu", "cuda", "cuda:1")."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise HypergenError(f"Unknown device {device!r}: use auto, cpu, cuda or cuda:N.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HypergenError(f"device={device!r} was asked for but CUDA is not available here; use --device cpu or auto.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise HypergenError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}.")
    return dev


@dataclass
class _Slot:
    """One peft adapter slot and direct handles on its tensors, for in-place swaps."""

    rank: int
    paths: tuple[str, ...]
    params: dict[str, tuple[torch.nn.Parameter, torch.nn.Parameter]]
    layers: dict[str, torch.nn.Module]


class ResidentModel:
    """One base model kept in memory; LoRA adapters activated, swapped and removed in place."""

    def __init__(self, model: torch.nn.Module, tokenizer, *, name: str, path: Path | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.path = path
        self.peft = None  # a PeftModel, created with the first adapter
        self._slots: dict[str, _Slot] = {}
        self.active: str | None = None
        self._layers_on = True  # peft's LoRA layers apply their slot; kept equal to `active is not None`
        # held by callers across activate + answer: the active adapter is shared state (hypergen.api does)
        self.lock = threading.RLock()
        tokenizer.padding_side = "left"  # generation continues from the right edge
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def adapters(self) -> list[str]:
        return list(self._slots)

    # ---- adapters ------------------------------------------------------------------------------
    def load_adapter(self, name: str, weights: LoraWeights) -> None:
        """Put `weights` into slot `name`: in place when the slot has the same rank and modules."""
        if name == BASE or hasattr(torch.nn.Module, name):
            # peft stores adapters as submodules named after them: "eval", "training", ... would clash
            raise HypergenError(f"{name!r} cannot name an adapter (reserved by peft/torch); pick another name.")
        slot = self._slots.get(name)
        if slot is not None and slot.rank == weights.rank and slot.paths == tuple(weights.modules):
            if any(slot.params[p][0].shape != a.shape or slot.params[p][1].shape != b.shape for p, (a, b) in weights.modules.items()):
                weights.validate_for(self.model, self.name)  # raises, naming the module and both shapes
        else:
            weights.validate_for(self.model, self.name)
            if slot is not None:
                self.remove(name)
            slot = self._new_slot(name, weights)
        with torch.no_grad():
            for path, (a, b) in weights.modules.items():
                pa, pb = slot.params[path]
                pa.copy_(a)  # copy_ casts dtype and moves device as needed
                pb.copy_(b)
                slot.layers[path].scaling[name] = weights.scaling

    def _new_slot(self, name: str, weights: LoraWeights) -> _Slot:
        from peft import get_peft_model

        cfg = weights.peft_config()
        cfg.base_model_name_or_path = None  # in memory peft would overwrite it with a path and warn
        if self.peft is None:
            self.peft = get_peft_model(self.model, cfg, adapter_name=name)
            self.peft.eval()
        else:
            self.peft.add_adapter(name, cfg)
        layers = {p: self.model.get_submodule(p) for p in weights.modules}
        params = {p: (m.lora_A[name].weight, m.lora_B[name].weight) for p, m in layers.items()}
        for pa, pb in params.values():
            pa.requires_grad_(False)
            pb.requires_grad_(False)
        slot = _Slot(weights.rank, tuple(weights.modules), params, layers)
        self._slots[name] = slot
        if self.active is not None and self.active != name:
            self.peft.set_adapter(self.active)  # add_adapter may leave the new one active
        self._set_layers(self.active is not None, force=True)  # newly wrapped modules start enabled
        return slot

    def activate(self, adapter: LoraWeights | str, name: str = "default") -> str:
        """Make an adapter the active one. Pass LoraWeights (loaded into slot `name`) or a loaded name."""
        if isinstance(adapter, LoraWeights):
            self.load_adapter(name, adapter)
        else:
            name = adapter
            if name not in self._slots:
                raise HypergenError(f"No adapter named {name!r} is loaded; loaded: {self.adapters or 'none'}.")
        if self.active != name:
            self.peft.set_adapter(name)
            self.active = name
        self._set_layers(True)
        return name

    def deactivate(self) -> None:
        """Back to the plain base model (adapters stay loaded for a later swap): peft's LoRA layers are
        switched off, so `self.model` called directly is the base too, not only this object's own calls."""
        self.active = None
        self._set_layers(False)

    def _set_layers(self, on: bool, force: bool = False) -> None:
        """Switch every peft LoRA layer on or off (off: each returns its base Linear's output)."""
        if self.peft is None or (on == self._layers_on and not force):
            return
        tuner = self.peft.base_model  # peft's LoraModel; as in peft's own disable_adapter()
        tuner.enable_adapter_layers() if on else tuner.disable_adapter_layers()
        self._layers_on = on

    def adapters_off(self):
        """A context: peft's slots off for the block (per-row hooks, or the base alone), as before after it."""
        return self._layers(False)

    @contextmanager
    def _layers(self, on: bool):
        before = self._layers_on
        self._set_layers(on)
        try:
            yield
        finally:
            self._set_layers(before)

    def remove(self, name: str) -> None:
        if name not in self._slots:
            return
        if self.active == name:
            self.deactivate()
        others = [n for n in self._slots if n != name]
        if not others:
            # peft refuses to delete the last adapter: unwrap to the plain base instead.
            self.model = self.peft.unload()
            self.peft = None
            self._layers_on = True
        else:
            if self.peft.active_adapter == name:
                self.peft.set_adapter(others[0])
            self.peft.delete_adapter(name)
        del self._slots[name]

    def weights(self, name: str) -> LoraWeights:
        """A copy of the adapter in slot `name` (e.g. after training it in place)."""
        slot = self._slots[name]
        mods = {p: (pa.detach().float().cpu().clone(), pb.detach().float().cpu().clone()) for p, (pa, pb) in slot.params.items()}
        scaling = slot.layers[slot.paths[0]].scaling[name]
        return LoraWeights(mods, scaling * slot.rank, self.name)

    def new_trainable(self, name: str, spec) -> list[torch.nn.Parameter]:
        """A freshly initialised adapter slot (peft's init: A random, B zero) whose tensors train.

        spec is a LoraSpec. Returns the slot's parameters; everything else stays frozen.
        """
        from hypergen.config import LoraSpec

        assert isinstance(spec, LoraSpec)
        shapes = spec.shapes(self.model)
        init = LoraWeights({p: (torch.zeros(spec.rank, i), torch.zeros(o, spec.rank)) for p, (o, i) in shapes.items()}, spec.alpha, self.name)
        self.load_adapter(name, init)
        slot = self._slots[name]
        g = torch.Generator().manual_seed(spec.init_seed)
        with torch.no_grad():
            for pa, _ in slot.params.values():
                # kaiming-uniform(a=sqrt(5)) on A as peft and nn.Linear do; B stays zero so dW starts at 0
                bound = 1.0 / (pa.shape[1] ** 0.5)
                pa.copy_(torch.empty(pa.shape).uniform_(-bound, bound, generator=g))
        params = [p for pair in slot.params.values() for p in pair]
        for p in params:
            p.requires_grad_(True)
        self.activate(name)
        return params

    # ---- running -------------------------------------------------------------------------------
    def forward_model(self):
        """The module to call: the peft wrapper when adapters exist (it routes adapter_names)."""
        return self.peft if self.peft is not None else self.model

    def _context(self, adapter_names, lora=None):
        import contextlib

        if lora is not None:
            return self._row_context(lora)
        if self.peft is not None and adapter_names is not None:
            stack = contextlib.ExitStack()
            with stack:
                stack.enter_context(self._layers(True))  # peft's per-row routing runs only in enabled layers
                stack.enter_context(self._routing_guard())
                return stack.pop_all()
        return contextlib.nullcontext()  # the layers' state already follows self.active

    @contextmanager
    def _routing_guard(self):
        """peft routes adapter_names through forward pre-hooks that it removes only when the forward
        returns (peft 0.21 has no try/finally there): after an exception (out of memory, Ctrl-C) they would
        route every later call of this shared model with the old rows. This removes what the call left."""
        mods = list(self.peft.modules())
        before = [set(m._forward_pre_hooks) for m in mods]
        try:
            yield
        except BaseException:
            for m, keys in zip(mods, before):
                for k in set(m._forward_pre_hooks) - keys:
                    m._forward_pre_hooks.pop(k, None)
                    m._forward_pre_hooks_with_kwargs.pop(k, None)
            raise

    def _rows(self, adapter_names: Sequence[str | None] | None, n: int) -> dict:
        if adapter_names is None:
            return {}
        if len(adapter_names) != n:
            raise HypergenError(f"adapter_names has {len(adapter_names)} entries for {n} inputs; give one per input (None = base).")
        names = [BASE if a is None else a for a in adapter_names]
        unknown = sorted({a for a in names if a != BASE and a not in self._slots})
        if unknown:
            raise HypergenError(f"Unknown adapter(s) {unknown}; loaded: {self.adapters or 'none'}.")
        if self.peft is None:
            return {}  # every row asked for the base
        return {"adapter_names": names}

    def _check_adapters(self, adapters, adapter_names, n: int) -> None:
        """Refuse a per-row adapter list that does not fit: both kinds given, a wrong count, a wrong base."""
        if adapters is None:
            return
        if adapter_names is not None:
            raise HypergenError("Pass adapters (LoraWeights per input) or adapter_names (loaded slots per input), not both.")
        if len(adapters) != n:
            raise HypergenError(f"adapters has {len(adapters)} entries for {n} inputs; give one per input (None = base).")
        for w in {id(w): w for w in adapters if w is not None}.values():
            if not isinstance(w, LoraWeights):
                raise HypergenError(f"adapters holds a {type(w).__name__}; give LoraWeights or None per input (names of loaded slots go in adapter_names).")
            w.validate_for(self.model, self.name)

    def _stack(self, adapters: Sequence[LoraWeights | None]):
        from hypergen import rowlora

        return rowlora.stack(list(adapters), device=self.device, dtype=next(self.model.parameters()).dtype)

    def _row_context(self, lora):
        """Per-row adapters through hooks on the base Linears, with every peft slot off for the call: the
        active slot is neither applied nor changed (adapters_off restores the layers' state on exit)."""
        import contextlib

        from hypergen import rowlora

        stack = contextlib.ExitStack()
        with stack:
            stack.enter_context(self.adapters_off())
            stack.enter_context(rowlora.apply(self.model, lora))
            return stack.pop_all()

    def prompts(self, texts: Sequence[str], description: str | None = None) -> list[str]:
        if isinstance(texts, str):
            texts = [texts]
        if not texts or any(not t or not t.strip() for t in texts):
            raise HypergenError("Empty input: give at least one non-empty text to answer.")
        return [format_prompt(self.tokenizer, t, description) for t in texts]

    @torch.inference_mode()
    def answer(
        self,
        texts: Sequence[str],
        *,
        description: str | None = None,
        max_new_tokens: int = 32,
        adapter_names: Sequence[str | None] | None = None,
        batch_size: int = 16,
        adapters: Sequence[LoraWeights | None] | None = None,
    ) -> list[str]:
        """Greedy answers through the chat template. Per row: adapter_names picks a loaded slot, or
        adapters gives LoraWeights applied in one batched pass (no slot swap; the active slot is ignored)."""
        prompts = self.prompts(texts, description)
        self._check_adapters(adapters, adapter_names, len(prompts))
        rows = adapter_names if adapter_names is not None else None
        out: list[str] = []
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i : i + batch_size]
            extra = self._rows(rows[i : i + batch_size] if rows is not None else None, len(chunk))
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            lora = self._stack(adapters[i : i + batch_size]) if adapters is not None else None
            with self._context(rows, lora):
                gen = self.forward_model().generate(
                    **enc,
                    **extra,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=self.tokenizer.eos_token_id,
                )
            new = gen[:, enc["input_ids"].shape[1] :]
            out += [s.strip() for s in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        return out

    @torch.inference_mode()
    def score(
        self,
        texts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        description: str | None = None,
        adapter_names: Sequence[str | None] | None = None,
        batch_size: int = 16,
        adapters: Sequence[LoraWeights | None] | None = None,
    ) -> list[list[float]]:
        """Log-likelihood of each candidate answer (plus the end-of-turn token) after each prompt.
        adapter_names (loaded slots) or adapters (LoraWeights, one batched pass) pick an adapter per row."""
        prompts = self.prompts(texts, description)
        self._check_adapters(adapters, adapter_names, len(prompts))
        if len(candidates) != len(prompts):
            raise HypergenError(f"score needs one candidate list per input; got {len(candidates)} for {len(prompts)} inputs.")
        eos = self.tokenizer.eos_token_id
        items = []
        for p, cands in zip(prompts, candidates):
            p_ids = self.tokenizer(p, add_special_tokens=False)["input_ids"]
            items.append((p_ids, [self.tokenizer(c, add_special_tokens=False)["input_ids"] + [eos] for c in cands]))
        out: list[list[float]] = []
        for i in range(0, len(items), batch_size):
            rows = list(adapter_names[i : i + batch_size]) if adapter_names is not None else None
            lora = self._stack(adapters[i : i + batch_size]) if adapters is not None else None
            out += self._loglik_batch(items[i : i + batch_size], rows, lora)[0]
        return out

    @torch.inference_mode()
    def answer_and_score(
        self,
        texts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        descriptions: Sequence[str | None] | None = None,
        max_new_tokens: int = 32,
        adapters: Sequence[LoraWeights | None] | None = None,
        batch_size: int = 32,
    ) -> tuple[list[str] | None, list[list[float]]]:
        """answer() and score() of the same rows from one prefill of each prompt: the greedy answer
        decodes from the prompt's KV cache, which is then cropped back to the prompt for the candidates.
        Per row: the description in its prompt (None: none) and its adapter (LoraWeights through per-row
        adapters; None: the base). Rows are batched in order of prompt length, so one prompt under many
        adapters batches without padding; results come back in the given order. A batch holds at most
        batch_size rows and the memory of CANDIDATE_TOKENS_PER_ROW * batch_size padded candidate tokens'
        logits (~0.4 MB a token with SmolLM2's vocabulary), counting the prompt's KV cache that each
        candidate gets a copy of (_kv_per_logit), so many or long options, or long prompts, take fewer rows.
        Rows with the same adapter and description share their prompts' common start (the chat template's
        system turn, the description, a task's own prefix): its KV cache is computed once per such group
        (_shared_prefixes) and each row prefills only the rest (1.15x on an evaluation's scoring, whose
        prompts are short: docs/benchmarks.md).
        max_new_tokens=0: no answers (None); a row may have no candidates."""
        n = len(texts)
        descriptions = [None] * n if descriptions is None else list(descriptions)
        if len(candidates) != n or len(descriptions) != n:
            raise HypergenError(f"answer_and_score needs one candidate list and one description per input; got {len(candidates)} and {len(descriptions)} for {n} inputs.")
        prompts = [self.prompts([t], d)[0] for t, d in zip(texts, descriptions)]
        self._check_adapters(adapters, None, n)
        eos = self.tokenizer.eos_token_id
        items = [(self.tokenizer(p, add_special_tokens=False)["input_ids"], [self.tokenizer(c, add_special_tokens=False)["input_ids"] + [eos] for c in cands]) for p, cands in zip(prompts, candidates)]
        answers: list = [None] * n
        scores: list = [None] * n
        groups = [(id(adapters[k]) if adapters is not None else None, descriptions[k]) for k in range(n)]
        shared = _shared_prefixes([p for p, _ in items], groups)
        prefix = self._prefix_caches(items, groups, shared, adapters, batch_size)
        rest = [len(p) - shared[k] for k, (p, _) in enumerate(items)]
        for idx in _batches(items, batch_size, CANDIDATE_TOKENS_PER_ROW * batch_size, self._kv_per_logit(), order=rest):
            lora = self._stack([adapters[k] for k in idx]) if adapters is not None else None
            pre = [(prefix[groups[k]], shared[k]) if shared[k] else None for k in idx]
            got, new = self._loglik_batch([items[k] for k in idx], None, lora, decode=max_new_tokens, prefix=pre)
            for j, k in enumerate(idx):
                scores[k] = got[j]
            if new is not None:
                for k, text in zip(idx, self.tokenizer.batch_decode(new, skip_special_tokens=True)):
                    answers[k] = text.strip()
        return (answers if max_new_tokens else None), scores

    def _prefix_caches(self, items, groups, shared, adapters, batch_size: int) -> dict:
        """group -> its shared prefix's KV cache per layer [(keys, values)], each (1, heads, length, dim):
        the groups' prefixes run together, each under its adapter, batch_size at a time."""
        first = {}  # group -> a row of it with a shared prefix
        for k, g in enumerate(groups):
            if shared[k]:
                first.setdefault(g, k)
        out, todo = {}, list(first.items())
        model = self.forward_model()
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            ids = [items[k][0][: shared[k]] for _, k in chunk]
            p_ids, mask = _left_padded(ids, self.tokenizer.pad_token_id)
            P = p_ids.shape[1]
            lora = self._stack([adapters[k] for _, k in chunk]) if adapters is not None else None
            with self._context(None, lora):
                pos = (mask.cumsum(1) - 1).clamp_min(0)
                cache = model(input_ids=p_ids.to(self.device), attention_mask=mask.to(self.device), position_ids=pos.to(self.device), use_cache=True, logits_to_keep=1).past_key_values
            for b, (g, _) in enumerate(chunk):
                m = len(ids[b])
                out[g] = [(layer.keys[b : b + 1, :, P - m :], layer.values[b : b + 1, :, P - m :]) for layer in cache.layers]
        return out

    @staticmethod
    def _prefix_cache(prefix: list, Q: int):
        """A batch's cache of Q columns: each row's prefix (from _prefix_caches) right-aligned, zeros
        (masked) before it and in the rows that have none."""
        from transformers import DynamicCache

        some = next(p[0] for p in prefix if p is not None)
        cache = DynamicCache()
        for i, (k0, v0) in enumerate(some):
            k = k0.new_zeros((len(prefix), k0.shape[1], Q, k0.shape[3]))
            v = v0.new_zeros((len(prefix), v0.shape[1], Q, v0.shape[3]))
            for b, p in enumerate(prefix):
                if p is not None:
                    k[b, :, Q - p[1] :], v[b, :, Q - p[1] :] = p[0][i][0][0], p[0][i][1][0]
            cache.update(k, v, i)
        return cache

    def _kv_per_logit(self) -> float:
        """A prompt token's KV cache over a candidate token's logits (+ log-softmax), in bytes: ~0.12 for SmolLM2."""
        c = self.model.config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        return (2 * c.num_hidden_layers * kv_heads * head_dim) / (2 * c.vocab_size)

    def _greedy(self, model, first: torch.Tensor, cache, mask: torch.Tensor, steps: int, rows) -> torch.Tensor:
        """(B, <= steps) greedy new tokens continuing a prefilled cache, as generate(do_sample=False)
        makes them: a row that has said end-of-turn gets pad tokens after it; all stop when every row has."""
        eos, pad, dev = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id, self.device
        tok = first.argmax(-1)  # (B,)
        done, new, pos = tok == eos, [tok], mask.sum(1)
        extra = self._rows(rows, len(tok))
        for step in range(steps - 1):
            if done.all():
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            logits = model(input_ids=tok[:, None].to(dev), attention_mask=mask.to(dev), position_ids=(pos + step)[:, None].to(dev), past_key_values=cache, **extra).logits[:, -1]
            tok = torch.where(done, pad, logits.float().argmax(-1).cpu())
            done |= tok == eos
            new.append(tok)
        return torch.stack(new, 1)

    def _loglik_batch(self, items: list[tuple[list[int], list[list[int]]]], rows, lora=None, decode: int = 0, prefix=None) -> tuple[list[list[float]], torch.Tensor | None]:
        """Candidate log-likelihoods for a batch of prompts. Each prompt runs once (left-padded, last
        position only through lm_head) and its KV cache is shared by its candidates (right-padded after
        it): options are a few tokens after a long prompt, so this is ~n_options times cheaper than
        scoring prompt+option rows, and batching prompts ~2x cheaper than one at a time on a CPU.
        decode > 0: also up to that many greedy new tokens per prompt from the same cache (else None).
        prefix: per row, None or (its prompt's first tokens' KV cache per layer, their count): those
        tokens are not run again; the cache holds [left-padded prefixes | left-padded rests], the mask's
        holes between them hide the padding."""
        B, dev = len(items), self.device
        prefix = prefix or [None] * B
        skip = [p[1] if p is not None else 0 for p in prefix]
        Q = max(skip)  # the cache's prefix columns
        n = max(len(c) for _, c in items)
        T = max((len(x) for _, c in items for x in c), default=0)
        pad = self.tokenizer.pad_token_id
        p_ids, rest_mask = _left_padded([p[s:] for (p, _), s in zip(items, skip)], pad)
        q_mask = torch.zeros((B, Q), dtype=torch.long)
        for b, s in enumerate(skip):
            q_mask[b, Q - s :] = 1  # the row's prefix, right-aligned in the cache's first Q columns
        p_mask = torch.cat([q_mask, rest_mask], 1)
        P = p_mask.shape[1]
        lens = p_mask.sum(1)
        c_ids = torch.full((B, n, T), pad, dtype=torch.long)
        c_len = torch.zeros((B, n), dtype=torch.long)
        for b, (_, cands) in enumerate(items):
            for k, c in enumerate(cands):
                c_ids[b, k, : len(c)] = torch.tensor(c)
                c_len[b, k] = len(c)
        model = self.forward_model()
        # a RowLora's row b also serves the n candidate rows b*n .. b*n+n-1 that share its repeated cache
        with self._context(rows, lora):
            pos = (p_mask.cumsum(1) - 1).clamp_min(0)[:, Q:]
            cache = self._prefix_cache(prefix, Q) if Q else None
            pre = model(input_ids=p_ids.to(dev), attention_mask=p_mask.to(dev), position_ids=pos.to(dev), past_key_values=cache, use_cache=True, logits_to_keep=1, **self._rows(rows, B))
            first = torch.log_softmax(pre.logits[:, -1].float(), -1).cpu()  # (B, V): next token after each prompt
            cache = pre.past_key_values
            new = self._greedy(model, first, cache, p_mask, decode, rows) if decode else None
            if not n:  # answers only
                return [[] for _ in items], new
            if cache.get_seq_length() > P:  # back to the prompts: decoding appended to it
                cache.crop(P - cache.get_seq_length())
            cache.batch_repeat_interleave(n)
            ids = c_ids.view(B * n, T)
            c_mask = (torch.arange(T)[None] < c_len.view(-1, 1)).long()
            mask = torch.cat([p_mask.repeat_interleave(n, 0), c_mask], 1)
            c_pos = lens.repeat_interleave(n)[:, None] + torch.arange(T)[None]
            extra = self._rows([r for r in rows for _ in range(n)] if rows is not None else None, B * n)
            logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=c_pos.to(dev), past_key_values=cache, **extra).logits.float().cpu()
        logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0].view(B, n, T - 1)
        out = []
        for b, (_, cands) in enumerate(items):
            out.append([float(first[b, c[0]]) + float(logp[b, k, : len(c) - 1].sum()) for k, c in enumerate(cands)])
        return out, new


def _left_padded(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), each (len(seqs), longest): the sequences right-aligned after `pad`s."""
    L = max(map(len, seqs))
    ids = torch.full((len(seqs), L), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for b, x in enumerate(seqs):
        if x:
            ids[b, L - len(x) :], mask[b, L - len(x) :] = torch.tensor(x), 1
    return ids, mask


def _shared_prefixes(prompts: list[list[int]], groups: list) -> list[int]:
    """Per prompt, how many of its first tokens it shares with every other prompt of its group (rows of
    one adapter and description): their common start, at least SHARED_MIN tokens and never a whole
    prompt (the last token must run to give the next token's logits); 0 for a group of one."""
    members: dict = {}
    for k, g in enumerate(groups):
        members.setdefault(g, []).append(k)
    out = [0] * len(prompts)
    for ks in members.values():
        if len(ks) < 2:
            continue
        first, m = prompts[ks[0]], min(len(prompts[k]) for k in ks) - 1
        for k in ks[1:]:
            m = next((i for i, (a, b) in enumerate(zip(first[:m], prompts[k])) if a != b), m)
        if m >= SHARED_MIN:
            for k in ks:
                out[k] = m
    return out


def _batches(items: list[tuple[list[int], list[list[int]]]], rows: int, budget: float, kv_per_logit: float = 0.0, order: Sequence[int] | None = None) -> list[list[int]]:
    """Indices of items in order of prompt length (or of `order`: the prompt tokens each row still runs
    after its shared prefix), cut into batches of at most `rows` items whose memory stays within `budget`
    candidate-token logits (at least one item a batch): each item costs its batch's most candidates x (the
    longest candidate + the cache's width x kv_per_logit), since every candidate row holds the padded
    candidate's logits and a copy of the padded prompt's KV cache."""
    out: list[list[int]] = []
    cur: list[int] = []
    n = t = q = r = 0  # the current batch's most candidates, longest candidate, longest shared prefix and rest
    rest = [len(x[0]) for x in items] if order is None else list(order)
    for k in sorted(range(len(items)), key=lambda k: (rest[k], len(items[k][0]))):
        cands = items[k][1]
        # the batch's cache is [longest prefix | longest rest] wide (_loglik_batch)
        n2, t2, q2, r2 = max(n, len(cands)), max([t, *map(len, cands)]), max(q, len(items[k][0]) - rest[k]), max(r, rest[k])
        if cur and (len(cur) == rows or (len(cur) + 1) * n2 * (t2 + (q2 + r2) * kv_per_logit) > budget):
            out.append(cur)
            cur, n2, t2, q2, r2 = [], len(cands), max(map(len, cands), default=0), len(items[k][0]) - rest[k], rest[k]
        cur.append(k)
        n, t, q, r = n2, t2, q2, r2
    return out + [cur] if cur else out


def load_base(path: str | Path | None = None, *, device: str = "auto", dtype: torch.dtype | None = None) -> ResidentModel:
    """Load the default base (SmolLM2-135M-Instruct, converted on first use) or any local HF folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from hypergen import assets
    from hypergen.identity import base_name

    hf_logging.disable_progress_bar()  # a 0.5 s load needs no bar; conversion prints its own message

    name = base_name(path)  # adapters, zoos and generators record this name
    if path is None:
        path = assets.ensure_smollm2()
    else:
        path = check_base_folder(path)
    dev = pick_device(device)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32).to(dev)
    model.requires_grad_(False)  # the base is always frozen; new_trainable re-enables only its slot
    tok = AutoTokenizer.from_pretrained(path)
    if not getattr(tok, "chat_template", None):
        raise HypergenError(f"The tokenizer in {path} has no chat template; hypergen prompts through the chat template.")
    return ResidentModel(model, tok, name=name, path=Path(path))
