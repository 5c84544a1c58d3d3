"""Typed, frozen command configurations, and the click commands made from them.

A command's options are the fields of frozen dataclasses. Each field carries its type (the
annotation: ``int``, ``float``, ``str``, ``bool`` for a flag, ``Path``, ``X | None``, a
``Literal[...]`` for choices, ``tuple[X, ...]`` for a repeatable option), its default, its help
and its CLI name (:func:`opt`)::

    @dataclass(frozen=True)
    class SelectConfig:
        k: int = opt(512, "Neurons to keep.")
        solver: Literal["fast", "exact"] = opt("fast", "...")

    @config_command("select", SelectConfig, SelectRun)
    def select_cmd(cfg: SelectConfig, run: SelectRun) -> None: ...

:func:`config_command` generates the click options from the fields, calls the function with
one instance per class, and turns a value a class rejects (its ``__post_init__`` raises a
:class:`~facedistill.errors.ConfigError` with ``field=`` the field's name) into an error naming
the option. The TOML table of the command is checked by the same classes
(:mod:`facedistill.config.loader`), and the library entry points take the instances.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeVar

import click

from facedistill.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Opt:
    """How a config field shows on the command line and in TOML (``field(metadata=...)``)."""

    help: str = ""
    name: str | None = None  # the long option's name when not the field's (``warmup_epochs``)
    secondary: str | None = None  # ``--no-wild``: a --x/--no-x switch instead of a flag
    type: Any = None  # a click type instead of the annotation's
    metavar: str | None = None
    show_default: bool | str = True
    required: bool = False
    argument: bool = False  # a positional argument (``ROOT``); ``nargs=-1`` for tuples
    multiple: bool | None = None  # None: from the annotation (``tuple[X, ...]``)
    key: bool = True  # part of the result's identity (the pipeline's stage key)
    path: Literal["dir", "file"] | None = None  # what a Path must be, when it exists


def opt(default: Any = MISSING, help: str = "", **kw: Any) -> Any:
    """A config field: ``x: int = opt(3, "help", name=..., ...)`` (see :class:`Opt`)."""
    meta = {"opt": Opt(help=help, **kw)}
    if default is MISSING:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def option_of(f: dataclasses.Field[Any]) -> Opt:
    return f.metadata.get("opt") or Opt()


def key_name(f: dataclasses.Field[Any]) -> str:
    """The field's TOML key and long option name (dashes as underscores)."""
    return option_of(f).name or f.name


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unoptional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``."""
    args = typing.get_args(tp)
    if (typing.get_origin(tp) in (typing.Union, types.UnionType)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"a config field is one type or None, not {tp!r}")
        return rest[0], True
    return tp, False


def _click_type(tp: Any, o: Opt) -> Any:
    if o.type is not None:
        return o.type
    if typing.get_origin(tp) is Literal:
        return click.Choice([str(a) for a in typing.get_args(tp)])
    if tp is Path:
        return click.Path(path_type=Path, file_okay=o.path != "dir", dir_okay=o.path != "file")
    if tp in (int, float, str, bool):
        return tp
    raise TypeError(f"no click type for {tp!r}: give opt(type=...)")


def click_params(cls: type) -> list[click.Parameter]:
    """The click parameters of ``cls``'s fields, in field order."""
    out: list[click.Parameter] = []
    for f in dataclasses.fields(cls):
        o = option_of(f)
        tp = _unoptional(_hints(cls)[f.name])[0]
        multiple = o.multiple
        if multiple is None:
            multiple = typing.get_origin(tp) is tuple
        item = typing.get_args(tp)[0] if multiple and typing.get_origin(tp) is tuple else tp
        default = None if f.default is MISSING else f.default
        if o.argument:
            out.append(click.Argument([f.name], type=_click_type(item, o),
                                      nargs=-1 if multiple else 1,
                                      required=o.required or f.default is MISSING,
                                      metavar=o.metavar))
            continue
        long = "--" + key_name(f).replace("_", "-")
        decls = [long] if not o.secondary else [f"{long}/{o.secondary}"]
        kw: dict[str, Any] = {"help": o.help, "required": o.required or f.default is MISSING}
        if o.metavar:
            kw["metavar"] = o.metavar
        if item is bool and o.type is None and not multiple:
            kw["default"] = bool(default)
            if o.secondary:
                kw["show_default"] = o.show_default
            else:
                kw["is_flag"] = True
        else:
            kw.update(type=_click_type(item, o), multiple=multiple)
            if f.default is not MISSING:  # none: click's own "no default", so required holds
                # a tuple given as one comma list (``--batch 1,32``) shows its default so
                kw["default"] = ",".join(map(str, default)) \
                    if isinstance(default, tuple) and not multiple else default
            kw["show_default"] = o.show_default if default not in (None, (), "") else False
        out.append(click.Option([*decls, f.name], **kw))
    return out


def build(cls: type[T], values: Mapping[str, Any], *,
          where: Callable[[str], str | None] | None = None,
          path: Any = None) -> T:
    """``cls`` from the values of its fields (by field name; others ignored, missing ones take
    their defaults). Tuples for tuple fields; a rejected value names ``where(field)`` (an
    option, a dotted TOML key) and ``path``."""
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            value = values[f.name]
            if isinstance(value, list):
                value = tuple(value)
            kw[f.name] = value
    try:
        return cls(**kw)
    except ConfigError as exc:
        if where is None:
            raise
        name = exc.field or ""
        known = {f.name for f in dataclasses.fields(cls)}
        raise ConfigError(exc.message, path=path if path is not None else exc.path,
                          field=(where(name) or name) if name in known else name or None
                          ) from None


def option_label(cls: type, name: str) -> str:
    """``--warmup-epochs`` for TrainConfig's ``warmup``: how an error names a field."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if option_of(f).argument:
                return f.name.upper()
            return "--" + key_name(f).replace("_", "-")
    return name


def config_command(name: str, *classes: type, group: click.Group | None = None,
                   **click_kw: Any) -> Callable[[Callable[..., Any]], click.Command]:
    """A click command whose options are the fields of ``classes``; the function is called
    with one instance of each, in order. ``command.configs`` holds the classes (the config
    loader checks a TOML table by them)."""
    names = [f.name for cls in classes for f in dataclasses.fields(cls)]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise TypeError(f"{name}: field {dup[0]!r} is in more than one config class")

    def decorate(fn: Callable[..., Any]) -> click.Command:
        def callback(**kw: Any) -> Any:
            made = [build(cls, kw, where=lambda n, c=cls: option_label(c, n))
                    for cls in classes]
            return fn(*made)

        callback.__doc__ = fn.__doc__
        maker = group.command if group is not None else click.command
        cmd = maker(name, **click_kw)(callback)
        cmd.params[:0] = [p for cls in classes for p in click_params(cls)]
        cmd.configs = classes  # type: ignore[attr-defined]
        return cmd

    return decorate


def configs_of(command: click.Command) -> tuple[type, ...]:
    return tuple(getattr(command, "configs", ()))


def key_record(cfg: Any) -> dict[str, Any]:
    """The fields of ``cfg`` that make its result (``Opt.key``), as JSON values: what a pipeline
    stage's key hashes. A class may define ``key_record()`` to keep an older shape."""
    own = getattr(cfg, "key_record", None)
    if callable(own):
        return dict(own())
    return {f.name: _jsonable(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
            if option_of(f).key}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value




def check_choices(cfg: Any) -> None:
    """A ``Literal[...]`` field holds one of its values (what click checks on the command
    line, for configs built in code)."""
    for f in dataclasses.fields(cfg):
        tp, optional = _unoptional(_hints(type(cfg))[f.name])
        value = getattr(cfg, f.name)
        if typing.get_origin(tp) is Literal and not (optional and value is None):
            allowed = typing.get_args(tp)
            if value not in allowed:
                raise ConfigError(f"must be one of {', '.join(map(str, allowed))}, not "
                                  f"{value!r}", field=f.name)


def check_ranges(cfg: Any, *, at_least: Mapping[str, float] | None = None,
                 positive: tuple[str, ...] = ()) -> None:
    """Fields that must be ``>= at_least[name]`` or ``> 0`` (None passes: "not given")."""
    for name, low in (at_least or {}).items():
        value = getattr(cfg, name)
        if value is not None and value < low:
            raise ConfigError(f"must be >= {low:g}, not {value!r}", field=name)
    for name in positive:
        value = getattr(cfg, name)
        if value is not None and not value > 0:
            raise ConfigError(f"must be > 0, not {value!r}", field=name)
