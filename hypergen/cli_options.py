"""Command-line options generated from the typed API, so that each default and each help text lives once.

`Fields(source)` stands for the options of one source: the fields of a config dataclass (nested
config dataclasses flattened: BuildConfig's `expert.lora.rank` is `--rank`) or the keyword parameters of
an API function. `typed(name=Fields(...))` gives a command those options in place of its parameter
`name`, and calls it with the built config (or, for a function, the dict of keywords to pass on).
Every generated option defaults to "not given": the source's own default applies, and --help shows it.
Help comes from the source's docstring, where fields are written `name: what it is.` (or
`a / b: what they are.`).

Commands whose sources live in heavy modules (Lightning) are `@lazy`: listed by their docstring and
built only when invoked, so `hypergen --help` and `hypergen generate` never import what they don't use.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import typer
from typer.core import TyperGroup


@dataclass(frozen=True)
class Fields:
    """The options of one source. exclude: its fields the command sets itself or does not use.
    rename: field -> option name (e.g. {"zoo_path": "zoo"} gives --zoo). help: field -> help text, where
    the docstring has none fit for a command line. flags: field -> option flags (e.g. ("--input",))."""

    source: Any  # a dataclass type or a function
    exclude: tuple[str, ...] = ()
    rename: dict[str, str] = field(default_factory=dict)
    help: dict[str, str] = field(default_factory=dict)
    flags: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Option:
    path: tuple[str, ...]  # field names from the source down to this field (nested dataclasses)
    param: inspect.Parameter


def docstring_fields(doc: str | None, names: Sequence[str]) -> dict[str, str]:
    """{name: its text} for the `name: text` (or `a / b: text`) entries of a docstring, each running to the next entry."""
    if not doc or not names:
        return {}
    text = " ".join(doc.split())
    alt = "|".join(sorted(map(re.escape, names), key=len, reverse=True))
    heads = list(re.finditer(rf"(?<![\w.`'\"(])((?:{alt})(?: / (?:{alt}))*): ", text))
    out: dict[str, str] = {}
    for m, nxt in zip(heads, [*heads[1:], None]):
        body = text[m.end() : nxt.start() if nxt else len(text)].strip()
        for name in m.group(1).split(" / "):
            out.setdefault(name, body)
    return out


def _cli_type(t) -> Any:
    """The type typer parses for a field of type `t` (always Optional: None means "not given")."""
    args = [a for a in typing.get_args(t) if a is not type(None)]
    if typing.get_origin(t) in (Union, types.UnionType):
        seqs = [a for a in args if typing.get_origin(a) in (list, tuple, Sequence)]
        if seqs:
            t = seqs[0]
        elif len(args) == 1:
            t = args[0]
        else:
            t = str  # e.g. str | Path: a path given as text
    origin = typing.get_origin(t)
    if origin in (list, tuple, Sequence):
        return Optional[list[typing.get_args(t)[0]]]
    if origin is Literal or t in (str, int, float, bool, Path):
        return Optional[t]
    raise TypeError(f"no command-line form for type {t!r}")


def _shown(default) -> str | None:
    if default is None or default is inspect.Parameter.empty or default is dataclasses.MISSING:
        return None
    if isinstance(default, (tuple, list)):
        return ", ".join(map(str, default)) or None
    return str(default)


def _options(spec: Fields) -> list[_Option]:
    src = spec.source
    out: list[_Option] = []

    def add(path, name, t, default, doc):
        if name in spec.exclude:
            return
        opt, cli_t = spec.rename.get(name, name), _cli_type(t)
        shown = f"{'' if default else 'no-'}{opt.replace('_', '-')}" if isinstance(default, bool) else _shown(default)
        text = spec.help.get(name, doc.get(name, ""))
        if typing.get_origin(typing.get_args(cli_t)[0]) is list:
            text += " Repeatable."
        if shown is not None:
            text += f" [default: {shown}]"
        info = typer.Option(*spec.flags.get(name, ()), help=text.strip(), show_default=False)
        param = inspect.Parameter(opt, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[cli_t, info], default=None)
        out.append(_Option(path, param))

    if dataclasses.is_dataclass(src):

        def walk(cls, path):
            hints = typing.get_type_hints(cls)
            doc = docstring_fields(cls.__doc__, [f.name for f in dataclasses.fields(cls)])
            for f in dataclasses.fields(cls):
                t = hints[f.name]
                if dataclasses.is_dataclass(t):
                    walk(t, (*path, f.name))
                    continue
                default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                add((*path, f.name), f.name, t, default, doc)

        walk(src, ())
    else:
        hints = typing.get_type_hints(src)
        params = [p for p in inspect.signature(src).parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is not p.empty]
        doc = docstring_fields(src.__doc__, [p.name for p in params])
        for p in params:
            if p.name not in spec.exclude:
                add((p.name,), p.name, hints[p.name], p.default, doc)
    return out


def build(cls, values: dict[tuple[str, ...], Any], path: tuple[str, ...] = ()):
    """`cls` from the given values (keyed by field path); fields not given keep their defaults."""
    hints = typing.get_type_hints(cls)
    kw = {}
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            kw[f.name] = build(t, values, (*path, f.name))
        elif (*path, f.name) in values:
            v = values[(*path, f.name)]
            kw[f.name] = tuple(v) if tuple in (typing.get_origin(t), *map(typing.get_origin, typing.get_args(t))) else v
    return cls(**kw)


def typed(**sources: Fields):
    """Decorator: the command's parameter `name` becomes the options of `sources[name]`, and the command
    is called with `name` = the built config (a dataclass source) or the dict of given keywords (a function)."""

    def decorate(fn: Callable) -> Callable:
        own = inspect.signature(fn, eval_str=True).parameters
        generated = {name: _options(spec) for name, spec in sources.items()}
        params, seen = [], set()
        for p in own.values():
            for q in [o.param for o in generated[p.name]] if p.name in generated else [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)]:
                if q.name in seen:
                    raise TypeError(f"{fn.__name__}: two options named {q.name!r}; exclude or rename one")
                seen.add(q.name)
                params.append(q)

        @functools.wraps(fn)
        def command(**kwargs):
            call = {k: v for k, v in kwargs.items() if k in own}
            for name, spec in sources.items():
                given = {o.path: kwargs[o.param.name] for o in generated[name] if kwargs[o.param.name] is not None}
                call[name] = build(spec.source, given) if dataclasses.is_dataclass(spec.source) else {p[0]: v for p, v in given.items()}
            return fn(**call)

        del command.__wrapped__  # typer must read the generated signature, not fn's
        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


def lazy(builder: Callable[[], Callable]) -> Callable:
    """A command built on first use: `builder()` imports what it needs and returns the command function.
    Register the result like any command, on a Typer(cls=LazyGroup); --help lists it by builder's docstring."""

    @functools.wraps(builder)
    def stub():
        raise RuntimeError(f"{builder.__name__} is a lazy command: register it on a Typer(cls=LazyGroup)")

    stub.build_command = builder
    return stub


class LazyGroup(TyperGroup):
    """A typer group that builds its @lazy commands when they are invoked (or their --help is asked)."""

    def resolve_command(self, ctx, args):
        name, cmd, rest = super().resolve_command(ctx, args)
        builder = getattr(getattr(cmd, "callback", None), "build_command", None)
        if builder is not None:
            fn = builder()
            fn.__doc__ = fn.__doc__ or builder.__doc__
            one = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)  # help shows "[default: x]" as written
            one.command(name, context_settings=cmd.context_settings)(fn)
            cmd = typer.main.get_command(one)
        return name, cmd, rest
