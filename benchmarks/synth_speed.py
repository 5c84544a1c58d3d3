"""Images/s of the synthetic dataset generator (aligned, 64x64 by default).

Runs ``generate`` with 1 worker and with all cores, side by side in one run, and prints one
JSON line plus a table. Goal (issue: foundation): >= 300 images/s on a 2-core CPU machine.

    python benchmarks/synth_speed.py [--n 4000] [--size 64] [--wild] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from facedistill.data.synth import SynthConfig, default_workers, generate

GOAL = 300.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--wild", action="store_true")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()

    cores = default_workers()
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="synth-speed-"))
    try:
        for workers in sorted({1, cores}):
            out = tmp / f"w{workers}"
            start = time.perf_counter()
            generate(out, SynthConfig(n=args.n, size=args.size, wild=args.wild),
                     workers=workers)
            seconds = time.perf_counter() - start
            rows.append({"workers": workers, "images": args.n, "seconds": round(seconds, 3),
                         "images_per_s": round(args.n / seconds, 1)})
            shutil.rmtree(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    best = max(r["images_per_s"] for r in rows)
    result = {
        "benchmark": "synth_speed", "size": args.size, "wild": args.wild, "cores": cores,
        "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
        "rows": rows, "best_images_per_s": best, "goal_images_per_s": GOAL,
        "goal_met": best >= GOAL,
        "scaling": round(rows[-1]["images_per_s"] / rows[0]["images_per_s"], 2),
    }
    print(json.dumps(result))
    print()
    print(f"| workers | images | seconds | images/s |   (size {args.size}, wild={args.wild}, "
          f"{cores} cores)")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['workers']} | {r['images']} | {r['seconds']:.2f} | {r['images_per_s']:.0f} |")
    print(f"\nbest {best:.0f} images/s, goal >= {GOAL:.0f}: {'met' if best >= GOAL else 'NOT met'}")
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
