"""Time analysis, planning and apply per model next to a plain onnx.load + onnx.save of the same file.

    python tools/bench_pipeline.py [--only NAME ...] [--ratio 0.3]

Zoo models are filled first (tools/zoo.py); the timings are of the filled
file. Prints one line per model and a total; best of --repeat runs each.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnx  # noqa: E402

import zoo  # noqa: E402
from onnxprune import PruneConfig, analyze  # noqa: E402


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench(path: Path, ratio: float, repeat: int) -> dict:
    out = Path(tempfile.mkdtemp()) / "out.onnx"

    def plain_io():
        onnx.save(onnx.load(str(path)), str(out))

    times = {"io": _best(plain_io, repeat)}
    state = {}

    def load():
        state["a"] = analyze(str(path))

    def plan():
        state["p"] = state["a"].plan(PruneConfig(ratio=ratio))

    def apply():
        state["m"] = state["a"].apply(state["p"])

    def save():
        state["m"].save(str(out))

    times["load+analyse"] = _best(load, repeat)
    times["plan"] = _best(plan, repeat)
    times["apply"] = _best(apply, repeat)
    times["save"] = _best(save, repeat)
    times["mb"] = os.path.getsize(path) / 1e6
    os.unlink(out)
    return times


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*")
    p.add_argument("--ratio", type=float, default=0.3)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--cache", default="/tmp/onnxprune-zoo")
    args = p.parse_args()
    names = args.only or zoo.model_names()
    print(f"{'model':40s} {'MB':>7s} {'load+save':>9s} | {'load+analyse':>12s} {'plan':>6s} {'apply':>6s} "
          f"{'save':>6s} {'total':>6s} {'ratio':>6s}")
    for name in names:
        t = bench(zoo.write_filled(name, args.cache), args.ratio, args.repeat)
        total = t["load+analyse"] + t["plan"] + t["apply"] + t["save"]
        print(f"{name:40s} {t['mb']:7.1f} {t['io']:9.2f} | {t['load+analyse']:12.2f} {t['plan']:6.2f} "
              f"{t['apply']:6.2f} {t['save']:6.2f} {total:6.2f} {total / t['io']:5.1f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
