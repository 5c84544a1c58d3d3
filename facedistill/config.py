"""Configuration: TOML files whose tables mirror the CLI's commands.

A config file sets option defaults per command; options given on the command line win::

    [data.synth]          # facedistill data synth
    out = "data/synth"
    n = 20000
    wild = true

    [data.check]          # facedistill data check
    root = "data/synth"

Keys are the options' names (``--calib-n`` may be written ``calib_n`` or ``calib-n``). An
unknown table or key is an error naming the file and the dotted key, so a typo never passes
silently. The defaults themselves live in the library's dataclasses (e.g.
:class:`facedistill.pipeline.data.synth.SynthConfig`), the one source the CLI reads them from.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

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


def to_default_map(
    command: click.Command, table: dict[str, Any], path: str | os.PathLike[str], prefix: str = ""
) -> dict[str, Any]:
    """Check ``table`` against ``command``'s tree and return click's ``default_map``."""
    result: dict[str, Any] = {}
    if isinstance(command, click.Group):
        for key, value in table.items():
            dotted = f"{prefix}{key}"
            sub = command.commands.get(key)
            if sub is None:
                known = ", ".join(sorted(command.commands))
                raise ConfigError(f"unknown command table [{dotted}] (known: {known})",
                                  path=path, field=dotted)
            if not isinstance(value, dict):
                raise ConfigError(f"[{dotted}] must be a table of options", path=path,
                                  field=dotted)
            result[key] = to_default_map(sub, value, path, prefix=f"{dotted}.")
        return result
    params = {p.name: p for p in command.params if p.name and p.name != "help"}
    for key, value in table.items():
        name = key.replace("-", "_")
        dotted = f"{prefix}{key}"
        if name not in params:
            known = ", ".join(sorted(params)) or "none"
            raise ConfigError(f"unknown option {key!r} (known: {known})", path=path,
                              field=dotted)
        param = params[name]
        if param.multiple and not isinstance(value, list):
            value = [value]
        try:  # convert now so that a bad value names the file, not the command line
            ctx = click.Context(command)
            param.type_cast_value(ctx, value)
        except click.BadParameter as exc:
            raise ConfigError(f"bad value {value!r}: {exc.message}", path=path,
                              field=dotted) from None
        result[name] = value
    return result


def load_default_map(command: click.Command, path: str | os.PathLike[str]) -> dict[str, Any]:
    return to_default_map(command, read_toml(path), path)
