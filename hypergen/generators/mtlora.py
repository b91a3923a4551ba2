"""mtlora: one multi-task LoRA trained with the sft objective, the baseline Text-to-LoRA compares against.

    A_m, B_m   one learned pair per module of the zoo's layout, shared by every task: the same adapter
               whatever the description (uses_description = False)
    init       peft's: A_m ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming-uniform, a=sqrt(5)), B_m = 0, so the
               first adapter is the plain base; drawn in layout order from GeneratorConfig.seed

Trained by hypergen.generators.sft like every sft family: each row's adapter is this one LoRA, run
through the frozen base with the row's examples. `hypergen train mtlora --objective sft` with a t2l
run's flags therefore sees the very same rows, steps and examples (TrainBatches depends on seed, rank
and step alone): a fair multi-task baseline, unlike `multitask` (the zoo's LoRA from `hypergen zoo
multitask`, trained on the zoo's 60 tasks only). Named apart from `multitask` so both can be scored.
"""

from __future__ import annotations

import torch
from torch import nn

from hypergen.generators.base import Generator, GeneratorConfig
from hypergen.generators.registry import register_generator
from hypergen.generators.results import Sampled


class MTLora(Generator):
    uses_description = False  # one adapter for every task
    trainable = True
    objectives = ("sft",)

    def __init__(self, config: GeneratorConfig, bank):
        super().__init__(config, bank)
        L = self.layout
        self.flat = nn.Parameter(torch.zeros(L.numel))  # (P,) = [A0, B0, A1, B1, ...]
        g = torch.Generator().manual_seed(config.seed)  # the init is a function of the config alone
        with torch.no_grad():
            for a, _ in L.unflatten(self.flat.data).modules.values():  # views into flat: A in place, B stays 0
                bound = a.shape[1] ** -0.5
                a.copy_(torch.empty(a.shape).uniform_(-bound, bound, generator=g))

    def adapter_for_training(self, cond, batch):
        return self.flat[None].expand(cond.shape[0], -1), {}  # (B, P): every row the same LoRA

    def sample(self, cond, n, gen, extra=None):
        # a copy: the adapter handed out must not alias the learned parameter
        return Sampled(self.flat.detach().clone()[None].expand(n, -1))


register_generator("mtlora", GeneratorConfig, MTLora)
