"""Configuration: TOML files whose tables mirror the CLI's commands.

A config file sets option defaults per command; options given on the command line win::

    [data.synth]          # facedistill data synth
    out = "data/synth"
    n = 20000
    wild = true

    [data.check]          # facedistill data check
    root = "data/synth"

Keys are the options' long names without their dashes (``--calib-n`` is ``calib_n``, also
written ``calib-n``; ``--json`` is ``json``), arguments go by their name (``root``). An unknown
table or key is an error naming the file and the dotted key, with the nearest known name, so a
typo never passes silently. The options are the fields of the commands' config classes
(:mod:`facedistill.config.fields`): their types check a table's values and their
``__post_init__`` its ranges, so a bad value names the file and the dotted key.
"""

from __future__ import annotations

import difflib
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from facedistill.config.fields import build, configs_of
from facedistill.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("config file not found", path=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config: {exc}", path=path) from None


def unknown_name(what: str, name: str, known: Sequence[str]) -> str:
    """``unknown option 'epoch' (did you mean 'epochs'? known: ...)`` or ``unknown command
    table [trian] (did you mean [train]? ...)``: the one wording wherever a config is read."""
    show = (lambda n: f"[{n}]") if what.endswith("table") else repr
    near = difflib.get_close_matches(name, list(known), n=1)
    hint = f"did you mean {show(near[0])}? " if near else ""
    return f"unknown {what} {show(name)} ({hint}known: {', '.join(known) or 'none'})"


def option_key(param: click.Parameter) -> str:
    """The TOML key of a command's parameter: an option's long name without its dashes, in
    TOML's spelling (``--calib-n`` -> ``calib_n``, ``--json`` -> ``json``, ``--from`` ->
    ``from``); an argument's name (``root``, ``source``)."""
    if isinstance(param, click.Option):
        longs = [o for o in param.opts if o.startswith("--")]
        return (longs[0] if longs else param.opts[0]).lstrip("-").replace("-", "_")
    return str(param.name)


def toml_keys(command: click.Command) -> dict[str, click.Parameter]:
    """``{TOML key: parameter}`` of ``command``: the keys its config table may hold."""
    return {option_key(p): p for p in command.params if p.name and p.name != "help"}


def command_at(root: click.Group, dotted: str) -> click.Command:
    """The command of a config table (``data.synth`` -> ``facedistill data synth``)."""
    cmd: click.Command = root
    for part in dotted.split("."):
        cmd = cmd.commands[part]  # type: ignore[attr-defined]
    return cmd


def option_default(command: click.Command, param: click.Parameter) -> Any:
    """A parameter's default as a config value, as click resolves it (a flag without one is
    false; a list for a repeatable option)."""
    value = param.get_default(click.Context(command), call=True)
    if not isinstance(value, str | int | float | tuple | list | Path):
        value = None  # None, or click's marker for "no default"
    return list(value or ()) if param.multiple else value


def config_table(default_map: dict[str, Any], dotted: str) -> dict[str, Any]:
    """Table ``dotted`` of a ``default_map`` (:func:`load_default_map`), ``{}`` when absent."""
    table: Any = default_map
    for part in dotted.split("."):
        table = table.get(part, {}) if isinstance(table, dict) else {}
    return dict(table)


def table_options(root: click.Group, default_map: dict[str, Any], dotted: str
                  ) -> dict[str, Any]:
    """``{parameter name: value}`` of the command of table ``dotted``: its defaults, then the
    config's values. What another command reads of that table (the pipeline's stages,
    ``compress``'s own selection)."""
    command = command_at(root, dotted)
    values = {str(p.name): option_default(command, p) for p in command.params
              if p.name and p.name != "help"}
    return values | config_table(default_map, dotted)


def to_default_map(
    command: click.Command, table: dict[str, Any], path: str | os.PathLike[str], prefix: str = ""
) -> dict[str, Any]:
    """Check ``table`` against ``command``'s tree and return click's ``default_map`` (keyed by
    the parameters' names, as click wants it)."""
    result: dict[str, Any] = {}
    if isinstance(command, click.Group):
        for key, value in table.items():
            dotted = f"{prefix}{key}"
            sub = command.commands.get(key)
            if sub is None:
                raise ConfigError(unknown_name("command table", dotted,
                                               [f"{prefix}{c}" for c in sorted(command.commands)]),
                                  path=path, field=dotted)
            if not isinstance(value, dict):
                raise ConfigError(f"[{dotted}] must be a table of options", path=path,
                                  field=dotted)
            result[key] = to_default_map(sub, value, path, prefix=f"{dotted}.")
        return result
    params = toml_keys(command)
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        param = params.get(key.replace("-", "_"))
        if param is None:
            raise ConfigError(unknown_name("option", key, sorted(params)), path=path,
                              field=dotted)
        if param.multiple and not isinstance(value, list):
            value = [value]
        wrong = toml_type_error(param, value)
        if wrong:
            raise ConfigError(f"bad value {value!r}: {wrong}", path=path, field=dotted)
        try:  # convert now so that a bad value names the file, not the command line
            value = param.type_cast_value(click.Context(command), value)
        except click.BadParameter as exc:
            raise ConfigError(f"bad value {value!r}: {exc.message}", path=path,
                              field=dotted) from None
        result[str(param.name)] = value
    return result


class NumberList(click.ParamType):
    """A comma list of numbers on the command line (``--teacher-widths 1,0.5``), a list of
    numbers in TOML (``teacher_widths = [1.0, 0.5]``): each occurrence -> a list of floats."""

    name = "numbers"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> list[float]:
        if isinstance(value, list):
            return value
        items = [value] if isinstance(value, int | float) else str(value).split(",")
        try:
            out = [float(v) for v in items if str(v).strip()]
        except ValueError:
            self.fail(f"expected numbers like 1,0.5; got {value!r}", param, ctx)
        if not out or not all(math.isfinite(v) for v in out):
            self.fail(f"expected finite numbers like 1,0.5; got {value!r}", param, ctx)
        return out


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def toml_type_error(param: click.Parameter, value: Any) -> str | None:
    """What is wrong with the TOML type of ``value`` for ``param``, or None. Stricter than
    click's conversion, which turns ``1.5`` or ``true`` into the integer 1 and passes a number
    on as a path: TOML has types, so a config value must already have the option's."""
    if param.multiple or param.nargs == -1:
        if not isinstance(value, list):
            return f"expected a list, got {_kind(value)}"
        items = value
    else:
        items = [value]
    t = param.type
    for item in items:
        if (isinstance(param, click.Option) and param.is_flag) or \
                isinstance(t, click.types.BoolParamType):
            ok, want = isinstance(item, bool), "a boolean (true or false)"
        elif isinstance(t, click.types.IntParamType):
            ok, want = isinstance(item, int) and not isinstance(item, bool), "an integer"
        elif isinstance(t, click.types.FloatParamType):
            ok = isinstance(item, int | float) and not isinstance(item, bool)
            want = "a number"
        elif isinstance(t, NumberList):
            ok = isinstance(item, int | float | str) and not isinstance(item, bool)
            want = "a number"
        else:  # paths, choices, strings and the options parsed by a callback ("1,8,32")
            ok, want = isinstance(item, str), "a string"
        if not ok:
            return f"expected {want}, got {_kind(item)}"
    return None


def load_default_map(command: click.Command, path: str | os.PathLike[str]) -> dict[str, Any]:
    result = to_default_map(command, read_toml(path), path)
    if isinstance(command, click.Group):
        _check_values(command, result, path)
    return result


def _check_values(root: click.Group, default_map: dict[str, Any],
                  path: str | os.PathLike[str], prefix: str = "") -> None:
    """Build each command's config classes from its table, so that a value they reject
    (``epochs = 0``) names the config file and its dotted key, not the command line."""
    for name, table in default_map.items():
        command = root.commands[name]  # type: ignore[attr-defined]
        dotted = f"{prefix}{name}"
        if isinstance(command, click.Group):
            _check_values(command, table, path, prefix=f"{dotted}.")
            continue
        keys = {p.name: f"{dotted}.{option_key(p)}" for p in command.params}
        for cls in configs_of(command):
            build(cls, table_options(root, default_map, name), where=keys.get, path=path)
