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
        message = _unwrap_worker_message(message)
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


class DataErrors(DataError):
    """Several bad files found in one pass (e.g. every unreadable image of a dataset): the CLI
    prints one line per error in ``errors``; as one message it is the first and a count."""

    def __init__(self, errors: list[UserError]) -> None:
        if not errors:
            raise ValueError("DataErrors needs at least one error")
        self.errors = list(errors)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        first = errors[0]
        super().__init__(first.message + more, path=first.path, line=first.line,
                         field=first.field)


class ConfigError(UserError):
    """A configuration file or option is invalid."""


def _unwrap_worker_message(message: str) -> str:
    """The original one-line message of an error raised in a DataLoader worker process.

    torch re-raises a worker's exception in the main process as ``type(exc)(text)`` where
    ``text`` is "Caught DataError in DataLoader worker process 0. Original Traceback ...": the
    whole worker traceback, whose last line is ``module.DataError: <the original message>``.
    The original message (with its path and line) is all the user needs."""
    if not message.startswith("Caught ") or "\nOriginal Traceback" not in message:
        return message
    last = next((ln for ln in reversed(message.splitlines()) if ln.strip()), "")
    head, sep, rest = last.partition(": ")
    return rest if sep and "Error" in head and " " not in head else message
