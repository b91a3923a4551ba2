"""Per-row LoRA: every row of a batch runs through its own adapter in one forward pass.

For each targeted Linear, row i of the output is

    h_i = W x_i + s_i * B_i (A_i x_i)        A_i (r, in), B_i (out, r), s_i = alpha_i / r_i

computed as two batched matmuls over rows, so a batch can mix tasks (training a generator) or users
(serving) with no peft slot swap. It is differentiable with respect to the stacked A and B, so a
generator's outputs train through it. Forward hooks add the term to the plain Linear (a peft-wrapped
layer's `base_layer`), so the caller must keep peft's own adapters disabled for the call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hypergen.errors import HypergenError
from hypergen.lora import LoraWeights


@dataclass
class RowLora:
    """Stacked per-row factors: row i of every tensor is row i's adapter (zeros and scale 0 = base)."""

    modules: dict[str, tuple[torch.Tensor, torch.Tensor]]  # path -> (A (B, r, in), B (B, out, r))
    scaling: torch.Tensor  # (B,)

    @property
    def rows(self) -> int:
        return self.scaling.shape[0]


def stack(adapters: Sequence[LoraWeights | None], *, device=None, dtype=None) -> RowLora:
    """One RowLora from one adapter per row (None = the base). Ranks may differ: each is zero-padded to
    the largest, which adds nothing (the padded rows of A meet zero columns of B). Modules an adapter
    does not target get zeros for its row. Keeps the autograd graph of the inputs."""
    if not adapters:
        raise HypergenError("stack needs one entry per row (None marks a base row); got none.")
    given = [w for w in adapters if w is not None]
    if not given:  # every row is the base: nothing to add
        return RowLora({}, torch.zeros(len(adapters), device=device, dtype=dtype))
    r = max(w.rank for w in given)
    paths = sorted({p for w in given for p in w.modules})
    shapes = {}  # path -> (in, out), from the first adapter that targets it
    for w in given:
        for p, (a, b) in w.modules.items():
            shapes.setdefault(p, (a.shape[1], b.shape[0]))
    like = given[0].modules[next(iter(given[0].modules))][0]
    device, dtype = device or like.device, dtype or like.dtype
    modules = {}
    for p in paths:
        n_in, n_out = shapes[p]
        As, Bs = [], []
        for w in adapters:
            if w is None or p not in w.modules:
                As.append(torch.zeros(r, n_in, device=device, dtype=dtype))
                Bs.append(torch.zeros(n_out, r, device=device, dtype=dtype))
                continue
            a, b = w.modules[p]
            if (a.shape[1], b.shape[0]) != (n_in, n_out):
                raise HypergenError(f"{p}: adapters disagree on its shape ({(n_in, n_out)} vs {(a.shape[1], b.shape[0])}); they were made for different base models.")
            As.append(F.pad(a.to(device=device, dtype=dtype), (0, 0, 0, r - a.shape[0])))  # (r, in)
            Bs.append(F.pad(b.to(device=device, dtype=dtype), (0, r - b.shape[1])))  # (out, r)
        modules[p] = (torch.stack(As), torch.stack(Bs))  # (B, r, in), (B, out, r)
    scaling = torch.tensor([0.0 if w is None else w.scaling for w in adapters], device=device, dtype=dtype)
    return RowLora(modules, scaling)


def _hook(path: str, a: torch.Tensor, b: torch.Tensor, s: torch.Tensor):
    n = s.shape[0]

    def add_lora(module, args, out):
        x = args[0]  # (N, T, in); N = k * n when generate or a shared KV cache repeated each row k times
        if x.shape[0] % n:
            raise HypergenError(f"{path}: a batch of {x.shape[0]} rows met per-row adapters for {n} rows; give one adapter per row.")
        xb = x.reshape(n, -1, x.shape[-1])  # (n, k*T, in): repeat_interleave'd rows share their adapter
        # .to: fp32 generator outputs may meet a bf16 base; a no-op when the dtypes agree
        d = torch.bmm(torch.bmm(xb, a.to(x.dtype).transpose(1, 2)), b.to(x.dtype).transpose(1, 2))  # (n, k*T, out)
        return out + (d * s.to(x.dtype)[:, None, None]).reshape(out.shape)  # scaled last, as peft does

    return add_lora


@contextlib.contextmanager
def apply(model: torch.nn.Module, lora: RowLora):
    """Within the block, calls of `model` add row i's LoRA to row i of every targeted Linear.

    `model` is the plain base or a peft-wrapped one (then the hook sits on the wrapped `base_layer`
    and peft's adapters must be disabled for the call). Works with generate(): during decoding each
    step is (B, 1, in), and a batch repeated per row (beams, a shared prompt cache) is served too.
    """
    handles = []
    try:
        for path, (a, b) in lora.modules.items():
            try:
                mod = model.get_submodule(path)
            except AttributeError:
                raise HypergenError(f"Per-row adapter targets {path}, which the model does not have: it was made for another architecture.") from None
            mod = getattr(mod, "base_layer", mod)  # a peft-wrapped Linear keeps the original inside
            if not isinstance(mod, torch.nn.Linear) or (a.shape[2], b.shape[1]) != (mod.in_features, mod.out_features):
                has = f"Linear(in={mod.in_features}, out={mod.out_features})" if isinstance(mod, torch.nn.Linear) else type(mod).__name__
                raise HypergenError(f"Per-row adapter for {path} is (in={a.shape[2]}, out={b.shape[1]}) but the model has {has}: it was made for another base model.")
            handles.append(mod.register_forward_hook(_hook(path, a, b, lora.scaling)))
        yield lora
    finally:
        for h in handles:
            h.remove()
