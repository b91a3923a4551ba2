"""hypergen: describe a task in words, get a working LoRA adapter in milliseconds.

    import hypergen
    result = hypergen.generate("Label each tweet as sarcastic or not.")

Importing hypergen is cheap: torch, the base model, wandb and streamlit load only when used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it; resolved on first access (peft-style lazy loading)
_LAZY = {
    "answer": "hypergen.api",
    "info": "hypergen.api",
    "setup": "hypergen.api",
    "generate": "hypergen.api",
    "LoraWeights": "hypergen.lora",
    "LoraSpec": "hypergen.config",
    "ResidentModel": "hypergen.base",
    "load_base": "hypergen.base",
    "HypergenError": "hypergen.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hypergen' has no attribute {name!r}")
