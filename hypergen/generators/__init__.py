"""Generators: description embedding -> LoRA weights. Importing this package registers every family.

    multitask, nearest, mix, lego   baselines (baselines.py)
    icm                             ICM-LoRA (icm.py)
    sg                              SG-LoRA (sg.py)
    abmll                           ABMLL (abmll.py)
    mtlora                          one multi-task LoRA trained with sft: t2l's fair baseline (mtlora.py)
    t2l                             Text-to-LoRA, sft only (t2l.py)

The modules, one job each: layout.py (LoraWeights <-> flat vectors), bank.py (the zoo as tensors),
results.py (what generate returns), base.py (GeneratorConfig, Generator and its generate template),
registry.py (the one list of families), checkpoint.py (save/load with their checks), cvae.py (the CVAE
core of icm and sg), decoder.py (shared layers), train.py and sft.py (training objectives).
A new family is one file that subclasses Generator and calls register_generator; nothing else lists it.
"""

from hypergen.generators.bank import ExpertBank
from hypergen.generators.base import OUT_OF_RANGE, Generator, GeneratorConfig
from hypergen.generators.checkpoint import TRAINING_FILE, load_generator, pack_generator, save_generator
from hypergen.generators.layout import Layout
from hypergen.generators.registry import build, get_family, register_generator, registered, unregister_generator
from hypergen.generators.results import GenerationResult, Neighbor, Sampled

# registration, in the order the eval lists the families: baselines, then the learned families
from hypergen.generators import baselines  # noqa: E402,F401  isort: skip
from hypergen.generators import icm  # noqa: E402,F401  isort: skip
from hypergen.generators import sg  # noqa: E402,F401  isort: skip
from hypergen.generators import abmll  # noqa: E402,F401  isort: skip
from hypergen.generators import mtlora  # noqa: E402,F401  isort: skip
from hypergen.generators import t2l  # noqa: E402,F401  isort: skip

__all__ = [
    "OUT_OF_RANGE", "TRAINING_FILE", "ExpertBank", "GenerationResult", "Generator", "GeneratorConfig", "Layout", "Neighbor", "Sampled",
    "build", "get_family", "load_generator", "pack_generator", "register_generator", "registered", "save_generator", "unregister_generator",
]
