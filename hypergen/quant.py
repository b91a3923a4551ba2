"""int8 per-row absmax quantisation, the storage of shipped artifacts (packed zoos, packed generators):
each row of a 2-D tensor is scaled by its largest magnitude / 127 and rounded; the fp16 scale is kept
beside it. Half the bytes of fp16, a relative error of at most 1/254 of the row's largest entry."""

from __future__ import annotations

import torch


def quantize_rows(t: torch.Tensor, scale_dtype: torch.dtype = torch.float16) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values, scale of shape (rows, 1)) of a 2-D tensor. An fp16 scale (packed zoos) adds up to
    2**-11 of relative error, more for rows below ~0.008 (subnormal scales); float32 adds none."""
    t = t.float()
    scale = (t.abs().amax(1, keepdim=True).clamp_min(1e-12) / 127).to(scale_dtype)
    return torch.round(t / scale.float()).clamp(-127, 127).to(torch.int8).contiguous(), scale.contiguous()


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale.float()
