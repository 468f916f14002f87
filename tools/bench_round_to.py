"""Latency of models pruned with --round-to 1 vs 8 (ORT CPU, 2 intra-op threads): picks the default.

    python tools/bench_round_to.py [--models tv_resnet50 tv_mobilenet_v2] [--round-to 1 8] [--ratios 0.3 0.5]
                                   [--target-macs 0.5 ...]

--ratio compares at the same requested ratio (rounding keeps more channels, so fewer MACs go);
--target-macs compares at equal MACs, which isolates what the channel counts cost at run time.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench_common import measure, prepare, table

from onnxprune import PruneConfig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["tv_resnet50", "tv_mobilenet_v2"])
    p.add_argument("--round-to", nargs="+", type=int, default=[1, 8])
    p.add_argument("--ratios", nargs="+", type=float, default=[0.3, 0.5])
    p.add_argument("--target-macs", nargs="*", type=float, default=[],
                   help="also compare at these kept MAC fractions (equal compute for every round_to)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--work", default="/tmp/onnxprune-bench")
    args = p.parse_args(argv)
    print(f"cpu count {os.cpu_count()}, load average {os.getloadavg()}", flush=True)
    for name in args.models:
        configs: dict = {"unpruned": None}
        for ratio in args.ratios:
            for n in args.round_to:
                configs[f"ratio {ratio} round_to={n}"] = PruneConfig(ratio=ratio, round_to=n)
        for target in args.target_macs:
            for n in args.round_to:
                configs[f"macs {target} round_to={n}"] = PruneConfig(target_macs=target, round_to=n)
        variants = prepare(name, Path(args.work), configs)
        latency = measure(variants, args.threads, args.rounds, args.runs)
        print(table(name, variants, latency), flush=True)
    print(f"load average after {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
