"""The export folder as one unit: an export is built in a staging folder inside ``--out`` and
swapped in only when it is complete, so a failing, interrupted or killed export leaves the
previous export byte-identical.

How a commit works (:meth:`ExportFolder.commit`):

1. every file of the new export is in ``OUT/.export-XXXX.staging/``;
2. a journal (``COMMIT.json``: the files to move in, the stale files to remove) is written
   atomically into the staging folder - from then on the commit is decided;
3. the stale files go, the new ones are renamed over the old (same file system: each rename is
   atomic), ``export_report.json`` last; the staging folder is removed.

A process killed between 2 and 3 leaves a journal: the next export into the folder (or
:func:`recover`) finishes that commit before doing anything else. A staging folder without a
journal is an abandoned attempt and is deleted. Two exports into one folder at the same time
are refused (an exclusive ``flock`` on the folder).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from facedistill.errors import UserError
from facedistill.export.onnx import ExportError
from facedistill.export.report import REPORT_NAME, ExportReport
from facedistill.io import atomic_write_json, pause_point, write_error

STAGING_GLOB = ".export-*.staging"
JOURNAL = "COMMIT.json"


def recover(out: Path) -> list[str]:
    """Finish the commits a killed export left in ``out`` (journal present) and delete the
    attempts it abandoned (no journal). Returns the names of the staging folders handled.
    Call it only while holding the folder's lock (:class:`ExportFolder` does)."""
    handled = []
    for staging in sorted(out.glob(STAGING_GLOB)):
        if not staging.is_dir() or staging.is_symlink():
            continue
        journal = staging / JOURNAL
        if journal.is_file():
            try:
                plan = json.loads(journal.read_text(encoding="utf-8"))
                _apply(out, staging, plan["remove"], plan["move"])
            except (OSError, ValueError, KeyError, TypeError):
                pass  # a journal that cannot be read was never complete: an abandoned attempt
        shutil.rmtree(staging, ignore_errors=True)
        handled.append(staging.name)
    return handled


def _apply(out: Path, staging: Path, remove: Iterable[str], move: Iterable[str]) -> None:
    """The commit's file operations; idempotent, so a roll-forward may repeat them."""
    for name in remove:
        (out / name).unlink(missing_ok=True)
    for name in move:
        src = staging / name
        if src.exists():
            os.replace(src, out / name)
            pause_point("export:commit")  # test hook: a kill between two renames


class ExportFolder:
    """``with ExportFolder(out) as folder:`` - the lock, the roll-forward of a killed commit,
    a fresh staging folder; on leaving, an uncommitted staging folder is removed, and ``out``
    (with the parents made for it) when this export created it and left nothing in it."""

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.out = Path(out)
        self.staging = self.out / ".export-unset.staging"
        self.created = False
        self.new_dirs: list[Path] = []  # out and the parents this export made, deepest first
        self.committed = False
        self._fd: int | None = None

    def __enter__(self) -> ExportFolder:
        self.created = not self.out.exists()
        self.new_dirs = []
        d = self.out.absolute()
        while not d.exists():
            self.new_dirs.append(d)
            d = d.parent
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.out, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise UserError(f"cannot write to the output folder: {exc.strerror or exc}",
                            path=self.out) from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._release()
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise UserError("another export is writing this folder; wait for it to "
                                "finish", path=self.out) from None
            raise
        try:
            recover(self.out)
            self.staging = Path(tempfile.mkdtemp(prefix=".export-", suffix=".staging",
                                                 dir=self.out))
        except OSError as exc:
            self._cleanup()
            raise UserError(f"cannot write to the output folder: {exc.strerror or exc}",
                            path=self.out) from None
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        if not self.committed:
            shutil.rmtree(self.staging, ignore_errors=True)
        if not self.committed:
            for d in self.new_dirs:  # only when empty: nothing of anyone else's is removed
                try:
                    d.rmdir()
                except OSError:
                    break
        self._release()

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None

    # -- paths ---------------------------------------------------------------------------------
    def stage(self, name: str) -> Path:
        """Where a file of the new export is written while it is being built."""
        return self.staging / name

    def final(self, name: str) -> Path:
        """Where that file will be once the export is committed."""
        return self.out / name

    def public_error(self, exc: BaseException) -> BaseException:
        """``exc`` naming a staged file by the path it was to have in ``out``."""
        if not isinstance(exc, UserError) or exc.path is None:
            return exc
        try:
            rel = Path(exc.path).relative_to(self.staging)
        except ValueError:
            return exc
        return type(exc)(exc.message, path=self.out / rel, line=exc.line, field=exc.field) \
            if type(exc) in (UserError, ExportError) else exc

    def previous_report(self, name: str = REPORT_NAME) -> ExportReport | None:
        """The report of the export now in the folder, or ``None`` (none, unreadable, of
        another format or malformed: then nothing is known about the folder's files)."""
        try:
            return ExportReport.from_json(
                json.loads((self.out / name).read_text(encoding="utf-8")), self.out / name)
        except (OSError, ValueError, UserError):
            return None

    # -- commit --------------------------------------------------------------------------------
    def commit(self, report_name: str, report: Mapping[str, Any], remove: Iterable[str] = ()
               ) -> None:
        """Swap the staged export in: write ``report`` (as ``report_name``) into the staging
        folder, then the journal, then remove ``remove`` (stale files of the previous export)
        and move every staged file into ``out``, the report last."""
        try:
            atomic_write_json(self.stage(report_name), report)
            staged = sorted(p.name for p in self.staging.iterdir()
                            if p.is_file() and p.name != report_name and not p.name.startswith("."))
            move = [*staged, report_name]
            stale = sorted(set(remove) - set(move))
            atomic_write_json(self.stage(JOURNAL), {"move": move, "remove": stale})
        except OSError as exc:
            raise write_error(exc, self.out) from None
        pause_point("export:journal")  # test hook: a kill after the commit was decided
        _apply(self.out, self.staging, stale, move)
        self.committed = True
        shutil.rmtree(self.staging, ignore_errors=True)
