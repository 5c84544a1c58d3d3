"""Helpers for the tests that run the CLI in real processes and kill them at known points."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def kill_export_at(point: str, src: Path, out: Path, data: Path) -> None:
    """Run ``facedistill export`` (fp16 and int8 from ``src`` into ``out``) with the test hook
    ``FACEDISTILL_PAUSE_AT=point``, wait until it says it is paused there, and SIGKILL it."""
    env = {**os.environ, "FACEDISTILL_PAUSE_AT": point, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "facedistill", "export", str(src), "--precision", "fp16,int8",
         "--calib-n", "32", "--no-gate", "--data", str(data), "--out", str(out), "--quiet"],
        stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.strip() == f"facedistill: paused at {point}", line + proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
