"""Atomic artifact writing and file hashing (torch-free)."""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from facedistill.errors import UserError

# what a write can fail with that the user fixes (space, permissions, a read-only mount)
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


STALE_FILE_S = 3600.0  # a temp file untouched this long was left by a killed writer
STALE_DIR_S = 86400.0  # staging folders: a dataset can take hours to build


def sweep_stale(parent: Path, pattern: str, max_age_s: float) -> int:
    """Remove what a killed run left next to an artifact: entries of ``parent`` matching
    ``pattern`` not modified for ``max_age_s`` seconds (a live writer touches its file). Returns
    how many went; errors (a concurrent sweep, permissions) are ignored."""
    gone = 0
    now = time.time()
    try:
        entries = list(parent.glob(pattern))
    except OSError:
        return 0
    for entry in entries:
        try:
            if now - entry.lstat().st_mtime < max_age_s:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            gone += 1
        except OSError:
            continue
    return gone


def staging_dir(final: str | os.PathLike[str], tag: str = "tmp") -> Path:
    """A new empty folder next to ``final`` (``.NAME.TAG-XXXX``) to build it in and then rename
    into place; made with the umask's mode, not mkdtemp's 0700, since it becomes ``final``.
    Staging folders of the same name that a killed run left (a day old) are removed first."""
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(final.parent, f".{glob.escape(final.name)}.{tag}-*", STALE_DIR_S)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{tag}-", dir=final.parent))
        os.chmod(tmp, 0o777 & ~_UMASK)
    except OSError as exc:  # a read-only or full disk: one line naming the artifact
        raise write_error(exc, final) from None
    return tmp


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    final = Path(path)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        # what a killed writer of this artifact left (a name's [ ] * ? are not patterns)
        sweep_stale(final.parent, f".{glob.escape(final.name)}.*.tmp", STALE_FILE_S)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    except OSError as exc:
        raise write_error(exc, final) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts are shareable
        os.replace(tmp_path, final)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        mapped = write_error(exc, final)
        if mapped is not exc:
            raise mapped from None
        raise


PAUSE_ENV = "FACEDISTILL_PAUSE_AT"


def pause_point(name: str) -> None:
    """A test hook: when ``FACEDISTILL_PAUSE_AT`` names this point, say so on stderr and sleep,
    so that a test can SIGKILL the process at a known moment (the reliability suite's kill
    cases). Costs one environment look-up otherwise."""
    if os.environ.get(PAUSE_ENV) != name:
        return
    print(f"facedistill: paused at {name}", file=sys.stderr, flush=True)
    time.sleep(3600)


def write_error(exc: BaseException, path: Path) -> BaseException:
    """A failed write as a one-line :class:`UserError` naming ``path`` when the cause is the
    user's to fix (disk full, no permission, read-only); any other exception unchanged. torch
    reports a full disk as a RuntimeError from its zip writer; free space tells it apart."""
    if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
        return UserError(f"cannot write: {exc.strerror}", path=path)
    if isinstance(exc, RuntimeError) and ("PytorchStreamWriter" in str(exc)
                                          or "unexpected pos" in str(exc)):
        try:
            free = os.statvfs(path.parent).f_bavail * os.statvfs(path.parent).f_frsize
        except OSError:
            free = None
        why = "no space left on device" if free is not None and free < 1 << 20 else \
            "the file could not be written (disk full or an I/O error)"
        return UserError(f"cannot write: {why}", path=path)
    return exc


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_results(result: Any, markdown: str, json_path: str | os.PathLike[str] | None = None,
                  md_path: str | os.PathLike[str] | None = None) -> None:
    """A benchmark's files: ``result`` as JSON and its ``markdown`` table, each when asked."""
    if json_path:
        atomic_write_json(json_path, result)
    if md_path:
        atomic_write_text(md_path, markdown)


def command_line(argv: list[str] | None = None) -> str:
    """The running script's command line as someone would retype it from the current folder:
    ``python benchmarks/x.py --flag value`` (recorded next to benchmark results)."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0])
    with contextlib.suppress(ValueError):
        script = script.resolve().relative_to(Path.cwd().resolve())
    return shlex.join(["python", str(script), *argv[1:]])


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
