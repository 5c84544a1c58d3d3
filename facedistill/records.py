"""Reading the project's JSON records (``bench.json``, ``export_report.json``,
``selection.json``): the file, its format string and the shape of each field, every problem a
one-line :class:`~facedistill.errors.UserError` naming the file and the field.

Parsers of one value take ``(value, where)`` - ``where`` is the dotted field
(``rows[2].latency_ms``) - and raise :class:`BadField`; :func:`parsed` turns that into the
user's error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from facedistill.errors import UserError

T = TypeVar("T")


class BadField(Exception):
    """A field of the wrong shape while reading; ``field`` names it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name
        self.message = message


def at(where: str, key: str) -> str:
    """The dotted name of ``key`` inside ``where``."""
    return f"{where}.{key}" if where else key


def obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BadField(where, f"expected an object, got {type(value).__name__}")
    return value


def string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise BadField(where, f"expected a string, got {value!r}")
    return value


def integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadField(where, f"expected an integer, got {value!r}")
    return value


def number(value: Any, where: str) -> float:
    """A number as it was written (an int stays an int)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadField(where, f"expected a number, got {value!r}")
    return value


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise BadField(where, f"expected true or false, got {value!r}")
    return value


def check_format(rec: Any, fmt: str, path: str | os.PathLike[str] | None) -> Mapping[str, Any]:
    """``rec`` when it is a JSON object of format ``fmt``, else the user's error."""
    if not isinstance(rec, Mapping) or rec.get("format") != fmt:
        got = rec.get("format") if isinstance(rec, Mapping) else None
        raise UserError(f"not a {fmt} file" + (f" (format {got!r})" if got is not None else ""),
                        path=path)
    return rec


def parsed(parse: Callable[[], T], what: str, path: str | os.PathLike[str] | None) -> T:
    """``parse()``, a :class:`BadField` in it reported as ``malformed <what>`` of ``path``."""
    try:
        return parse()
    except BadField as exc:
        raise UserError(f"malformed {what}: {exc.message}", path=path, field=exc.field) from None


def read_json(path: str | os.PathLike[str], name: str, what: str) -> tuple[Any, Path]:
    """The JSON of ``path`` (or of ``path/name`` when it is a folder) and the file's path; a
    missing, unreadable or corrupt file is a one-line error naming it (``what``: "bench
    file")."""
    p = Path(path)
    if p.is_dir():
        p = p / name
    try:
        return json.loads(p.read_text(encoding="utf-8")), p
    except FileNotFoundError:
        raise UserError(f"no {what} here", path=p) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"not a readable {what} ({first})", path=p) from None
