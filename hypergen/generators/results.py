"""What generators hand back: Sampled (a family's raw output) and GenerationResult (what users get)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from hypergen.lora import LoraWeights


@dataclass
class Sampled:
    """What a family's sample() returns: flat adapters plus optional method-specific facts."""

    flat: torch.Tensor  # (n, P)
    neighbor_weights: dict[int, float] | None = None  # expert index -> weight, for methods that mix
    variance: torch.Tensor | None = None  # (P,) the method's own predictive variance, if it has one
    # an adapter the method builds itself, exactly, outside the Layout (mix: rank K*r); generate()
    # returns it instead of unflattening `flat`, which then only measures the spread over samples
    adapter: LoraWeights | None = None


@dataclass
class Neighbor:
    name: str
    similarity: float
    weight: float | None = None  # the weight the method gave this expert, where it mixes experts


@dataclass
class GenerationResult:
    """What generate() returns: the adapter and everything a user needs to judge it."""

    weights: LoraWeights
    generator: str
    description: str
    neighbors: list[Neighbor]
    max_similarity: float
    in_range: bool
    samples: list[LoraWeights] = field(default_factory=list)
    uncertainty: dict | None = None  # spread over samples (and the method's own variance, where it has one)
    timings_ms: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    checkpoint: Path | None = None  # the folder a trained family was loaded from; None for baselines
    answers: list[str] = field(default_factory=list)  # api.generate(inputs=...): one per input

    def summary(self) -> dict:
        """JSON-friendly view (no tensors)."""
        return {
            "generator": self.generator,
            "description": self.description,
            "neighbors": [asdict(n) for n in self.neighbors],
            "max_similarity": round(self.max_similarity, 4),
            "in_range": self.in_range,
            "samples": max(1, len(self.samples)),
            "uncertainty": self.uncertainty,
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
            "warnings": self.warnings,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "rank": self.weights.rank,
            "params": self.weights.num_params(),
        }
