"""The held-out evaluation, above the api: `hypergen.eval.run(EvalConfig(...))`.

    methods.py      Method (what each compared method is) and what makes its adapter
    protocol.py     EvalConfig, plan, run and resume, row keys
    stats.py        means, bootstrap CIs, differences, control gaps, the bar's checks
    calibration.py  ECE / Brier / entropy, accuracy with the option prior removed, ABMLL's sampled-adapter calibration
    report.py       report.md and methods.png

Scoring a model on task instances lives below both eval and the zoo build, in hypergen.scoring.
Names load lazily, so importing one submodule loads no more than it needs.
"""

from __future__ import annotations

__all__ = ["EvalConfig", "Method", "all_methods", "run"]


def __getattr__(name: str):
    if name in ("EvalConfig", "run"):
        from hypergen.eval import protocol

        return getattr(protocol, name)
    if name in ("Method", "all_methods"):
        from hypergen.eval import methods

        return getattr(methods, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
