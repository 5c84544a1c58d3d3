"""User-facing errors.

Every mistake a user can make (a bad file, a malformed row, a bad option value) is raised as a
:class:`UserError`. The CLI prints it as one line, ``error: <where>: <what>``, and exits with
code 2; a programming error keeps its traceback.
"""

from __future__ import annotations

import os


class UserError(Exception):
    """A problem with the user's input, reported as one line naming where it is.

    ``path``, ``line`` (1-based) and ``field`` are optional; when given they prefix the message
    as ``path:line: field 'name': message``.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.path = os.fspath(path) if path is not None else None
        self.line = line
        self.field = field
        super().__init__(self.format())

    def format(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}:{self.line}"
        parts = [p for p in (where, f"field '{self.field}'" if self.field else "") if p]
        return ": ".join([*parts, self.message])


class DataError(UserError):
    """A dataset file or image is missing, malformed or inconsistent."""


class ConfigError(UserError):
    """A configuration file or option is invalid."""
