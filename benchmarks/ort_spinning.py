"""Should ONNX Runtime's intra-op pool spin between runs? The runtime's one session builder
(:func:`facedistill.runtime.backends.open_session`) says no; this measures what that costs and
what it saves, side by side in one run.

For each ONNX file and batch size two sessions, identical but for
``session.intra_op.allow_spinning``, are timed in interleaved rounds, in three settings:

- ``alone``: back-to-back ``run`` calls, the best case for spinning;
- ``with CPU work``: each call is followed by ``--work-ms`` of single-threaded numpy work (a
  stand-in for the face detector and cropping a face app runs between calls); the time per
  (call + work) is what the app sees;
- ``alternating with a 2nd session``: calls alternate with calls of a second session of the
  same model and setting (an app running two nets per face, as the cascade's part and whole
  subnets do, and bench's rotation, which runs every configuration once per round); the time
  per call of the first.

    python benchmarks/ort_spinning.py runs/demo/export/snet3/snet3.fp32.onnx \
        runs/demo/export/teacher/tnet.fp32.onnx [--batches 1,32] [--threads 2] [--rounds 5]
        [--json-out FILE] [--md-out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from statistics import median

import numpy as np

from facedistill.io import command_line, write_results
from facedistill.runtime.backends import open_session
from facedistill.runtime.cpu import cpu_record


def spinning_session(path: Path, threads: int, spin: bool):
    """The runtime's session (the one builder), spinning or not."""
    return open_session(path, device="cpu", threads=threads, spin=spin)


def cpu_work(ms: float, a: np.ndarray) -> None:
    """Single-threaded numpy work for about ``ms`` milliseconds (calibrated)."""
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        np.sort(a)


def time_calls(session, feed: dict, calls: int, work_ms: float, a: np.ndarray,
               other=None) -> float:
    """Median ms per (run + work) over ``calls``; with ``other``, a call of that session runs
    (untimed) between each two timed calls."""
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        session.run(None, feed)
        if work_ms:
            cpu_work(work_ms, a)
        times.append(time.perf_counter() - t)
        if other is not None:
            other.run(None, feed)
    return 1000 * median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=30, help="calls per session and round")
    ap.add_argument("--work-ms", type=float, default=5.0)
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--md-out", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # numpy's sort is single-threaded anyway
    batches = [int(b) for b in args.batches.split(",")]
    a = np.random.default_rng(0).standard_normal(20000)
    rows = []
    for model in args.models:
        sessions = {spin: spinning_session(model, args.threads, spin) for spin in (False, True)}
        seconds = {spin: spinning_session(model, args.threads, spin) for spin in (False, True)}
        name = sessions[False].get_inputs()[0].name
        size = sessions[False].get_inputs()[0].shape[2:]
        for batch in batches:
            x = np.random.default_rng(1).standard_normal((batch, 3, *size)).astype(np.float32)
            feed = {name: x}
            settings = [("alone", 0.0, False), (f"with {args.work_ms:g} ms CPU work",
                                                 args.work_ms, False),
                        ("alternating with a 2nd session", 0.0, True)]
            for setting, work, alternate in settings:
                got: dict[bool, list[float]] = {False: [], True: []}

                def one(spin: bool, calls: int, work: float = work, alternate: bool = alternate,
                        feed: dict = feed, sessions: dict = sessions,
                        seconds: dict = seconds) -> float:
                    return time_calls(sessions[spin], feed, calls, work, a,
                                      seconds[spin] if alternate else None)

                for spin in (False, True):  # warm-up
                    one(spin, 5)
                for r in range(args.rounds):
                    for spin in ((False, True) if r % 2 == 0 else (True, False)):
                        got[spin].append(one(spin, args.calls))
                off, on = median(got[False]), median(got[True])
                rows.append({"model": model.name, "batch": batch, "setting": setting,
                             "no_spin_ms": round(off, 3), "spin_ms": round(on, 3),
                             "spin_over_no_spin": round(on / off, 3)})
                print(json.dumps(rows[-1]), flush=True)
    result = {"benchmark": "ort_spinning", "command": command_line(), "threads": args.threads,
              "rounds": args.rounds, "calls": args.calls, "cpu": cpu_record(),
              "cores": os.cpu_count(), "python": platform.python_version(), "rows": rows}
    lines = [f"ONNX Runtime, {args.threads} intra-op threads, CPU {result['cpu']['model']} "
             f"({result['cpu']['int8_class']}), {os.cpu_count()} cores; median ms per call "
             f"over {args.rounds} interleaved rounds of {args.calls} calls.", "",
             "| model | batch | setting | no spinning (default) | spinning | spinning / none |",
             "|---|---:|---|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['batch']} | {r['setting']} | {r['no_spin_ms']:.2f} | "
              f"{r['spin_ms']:.2f} | {r['spin_over_no_spin']:.2f}x |" for r in rows]
    md = "\n".join(lines) + "\n"
    print(json.dumps(result))
    print(md)
    write_results(result, md, args.json_out, args.md_out)


if __name__ == "__main__":
    main()
