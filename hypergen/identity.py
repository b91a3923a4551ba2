"""Which base model something was made for, and the one check that it is the base in use.

Adapters, zoos and generator checkpoints record the base model's *name*: the default base is
SmolLM2-135M-Instruct (assets.SMOLLM2_NAME); any other local Hugging Face folder is named after the
folder. An empty name means "not recorded" and matches anything (adapters made by other tools). Names
compare by their last path part: peft writes a hub id ("HuggingFaceTB/SmolLM2-135M-Instruct") or a path.
"""

from __future__ import annotations

from pathlib import Path

from hypergen.errors import HypergenError


def base_name(path: str | Path | None) -> str:
    """The name recorded for a base given as `--base PATH` (None = the default SmolLM2)."""
    from hypergen.assets import SMOLLM2_NAME

    return Path(path).expanduser().resolve().name if path else SMOLLM2_NAME  # resolved: "." names its folder, not "" (= any base)


def hub_id(name: str) -> str:
    """What an adapter_config.json names as its base (peft's AutoPeftModel loads it): the hub id of the
    default base, a hypergen name as it is otherwise."""
    from hypergen.assets import SMOLLM2_HUB_ID, SMOLLM2_NAME

    return SMOLLM2_HUB_ID if name == SMOLLM2_NAME else name


def short_name(name: str) -> str:
    """A recorded base name without its hub owner or folder path: what two records of one base share."""
    return name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def require_same_base(made_for: str | None, loaded: str | None, what: str) -> None:
    """Refuse `what` (e.g. "The zoo at zoo/", "Generator generators/sg") made for another base, naming both."""
    if made_for and loaded and short_name(made_for) != short_name(loaded):
        raise HypergenError(f"{what} was made for base model {made_for!r}, but the loaded base is {loaded!r}: pass --base for {made_for}, or use one made for {loaded}.")
