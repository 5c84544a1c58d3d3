"""Atomic artifact writing and file hashing (torch-free)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def staging_dir(final: str | os.PathLike[str], tag: str = "tmp") -> Path:
    """A new empty folder next to ``final`` (``.NAME.TAG-XXXX``) to build it in and then rename
    into place; made with the umask's mode, not mkdtemp's 0700, since it becomes ``final``."""
    final = Path(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{tag}-", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    return tmp


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts are shareable
        os.replace(tmp_path, final)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


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
