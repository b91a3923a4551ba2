"""The registry: the one list of generator families. The eval, the CLI and the app ask it what exists
and read what each family can do from its class attributes (see Generator)."""

from __future__ import annotations

from hypergen.errors import HypergenError

OBJECTIVES = ("recon", "sft")  # see hypergen.generators.train
_REGISTRY: dict = {}  # name -> Generator subclass, in registration order


def register_generator(name: str, config_cls, generator_cls) -> None:
    """One call registers a family (config dataclass, Generator subclass); duplicates are refused."""
    if name in _REGISTRY:
        raise HypergenError(f"A generator named {name!r} is already registered ({_REGISTRY[name].__module__}).")
    bad = [o for o in generator_cls.objectives if o not in OBJECTIVES]
    if bad or bool(generator_cls.objectives) != generator_cls.trainable:
        raise HypergenError(f"Generator {name!r}: a trainable family declares its objectives (from {', '.join(OBJECTIVES)}) and only a trainable one does; "
                            f"got trainable={generator_cls.trainable}, objectives={generator_cls.objectives}.")
    generator_cls.family = name
    generator_cls.Config = config_cls
    _REGISTRY[name] = generator_cls


def unregister_generator(name: str) -> None:
    """Remove a family (a test's or a plugin's); unknown names are an error."""
    get_family(name)
    del _REGISTRY[name]


def registered() -> dict:
    """name -> family class, in registration order."""
    return dict(_REGISTRY)


def get_family(name: str):
    if name not in _REGISTRY:
        raise HypergenError(f"Unknown generator {name!r}; registered: {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[name]


def build(name: str, bank, **config):
    """A new, untrained generator of family `name` on `bank`; `config` fills the family's Config."""
    cls = get_family(name)
    return cls(cls.Config.from_dict(config, source=f"the {name} family does not take them"), bank)
