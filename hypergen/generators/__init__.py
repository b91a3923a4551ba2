"""Generators: description embedding -> LoRA weights. Importing this package registers every family.

    nearest, mix, lego, multitask   baselines (baselines.py)
    sg                              SG-LoRA (sg.py)
    icm                             ICM-LoRA (icm.py)
    abmll                           ABMLL (abmll.py)
"""

from hypergen.generators.base import (
    ExpertBank,
    GenerationResult,
    Generator,
    GeneratorConfig,
    Layout,
    Neighbor,
    build,
    get_family,
    load_generator,
    register_generator,
    registered,
)
from hypergen.generators import baselines, sg  # noqa: F401,E402  (registration)

for _optional in ("icm", "abmll"):
    try:
        __import__(f"hypergen.generators.{_optional}")
    except ModuleNotFoundError as e:  # a family still being written must not break the others
        if e.name != f"hypergen.generators.{_optional}":
            raise

__all__ = ["ExpertBank", "GenerationResult", "Generator", "GeneratorConfig", "Layout", "Neighbor", "build", "get_family", "load_generator", "register_generator", "registered"]
