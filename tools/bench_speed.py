"""Speed-up of pruned models vs unpruned (ORT CPU, 2 intra-op threads), with the MACs reduction.

    python tools/bench_speed.py [--models tv_resnet50 tv_mobilenet_v2] [--ratio 0.5]

Wall-clock medians of interleaved runs, plus (with --kernels, the default) the sum of per-node
median kernel times from ORT's profiler, which a loaded machine distorts far less.

Issue 3's bar (Torch-Pruning-pruned models at ratio 0.5): ResNet-50 3.6x (3.9x rounded to 8),
MobileNetV2 2.1x (2.3x rounded to 8).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench_common import kernel_ms, measure, prepare, table

from onnxprune import PruneConfig

BAR = {"tv_resnet50": (3.6, 3.9), "tv_mobilenet_v2": (2.1, 2.3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["tv_resnet50", "tv_mobilenet_v2"])
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--round-to", nargs="+", type=int, default=[1, 8], help="round_to values to compare")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--kernels", action=argparse.BooleanOptionalAction, default=True,
                   help="also report the summed per-node kernel time (ORT profiler), less sensitive to load")
    p.add_argument("--work", default="/tmp/onnxprune-bench")
    args = p.parse_args(argv)
    print(f"cpu count {os.cpu_count()}, load average {os.getloadavg()}", flush=True)
    for name in args.models:
        configs: dict = {"unpruned": None}
        for n in args.round_to:
            configs[f"ratio {args.ratio} round_to={n}"] = PruneConfig(ratio=args.ratio, round_to=n)
        variants = prepare(name, Path(args.work), configs)
        latency = measure(variants, args.threads, args.rounds, args.runs)
        kernels = kernel_ms(variants, args.threads) if args.kernels else None
        print(table(name, variants, latency, kernels))
        if name in BAR:
            print(f"  issue bar: {BAR[name][0]}x ({BAR[name][1]}x rounded to 8)", flush=True)
    print(f"load average after {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
