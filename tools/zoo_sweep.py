"""Sweep a folder of models through prune + dead-channel oracle; one line per model.

    python tools/zoo_sweep.py [FOLDER] [--ratio 0.3] [--only NAME ...] [--plan-flags ...]

FOLDER defaults to ../shared/zoo; models with stripped weights are filled
first (tools/zoo.py). Exit 1 when any model fails.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnx  # noqa: E402

import zoo  # noqa: E402
from onnxprune import PruneConfig, analyze  # noqa: E402
from onnxprune.testing import frozen_reasons, model_stats, random_inputs, run_model  # noqa: E402


def sweep_one(path: Path, cache: Path, config: PruneConfig) -> tuple[bool, str]:
    model = onnx.load(str(path))
    if any(t.doc_string == zoo.STRIPPED for t in model.graph.initializer):
        path = zoo.write_filled(path.stem, cache)
    t0 = time.perf_counter()
    analysis = analyze(str(path), config.input_shapes)
    plan = analysis.plan(config)
    pruned = analysis.apply(plan)
    elapsed = time.perf_counter() - t0
    oracle = analysis.verify(plan)
    feeds = random_inputs(analysis.model, config.input_shapes)
    for optimize in (True, False):  # pruned models must run with ORT's graph optimisations on and off
        run_model(pruned, feeds, optimize=optimize)
    before = model_stats(analysis).params
    after = model_stats(pruned, config.input_shapes).params
    fewer = after < before or not plan.groups
    ok = oracle.passed and fewer
    reasons = "; ".join(f"{n}x {r[:60]}" for r, n in frozen_reasons(analysis, 3))
    line = (f"{'PASS' if ok else 'FAIL'}  groups {len(analysis.groups):4d} pruned {len(plan.groups):4d} "
            f"inexact {sum(1 for g in plan.groups if not g.exact):3d}  params {before:>11,} -> {after:>11,} "
            f"({(after - before) / max(before, 1) * 100:+6.1f}%)  analyse+plan+apply {elapsed:5.2f}s  "
            f"oracle rel {oracle.comparison.relative:.1e}  frozen: {reasons}")
    return ok, line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", default=str(zoo.ZOO))
    p.add_argument("--ratio", type=float, default=0.3)
    p.add_argument("--importance", default="l1")
    p.add_argument("--inexact", action="store_true", help="also prune inexact groups (hidden size, ...)")
    p.add_argument("--global", dest="global_ranking", action="store_true", help="rank all groups together")
    p.add_argument("--round-to", type=int, default=None, help="channel multiple (default: the tool's)")
    p.add_argument("--only", nargs="*", help="model names (file stems) to run")
    p.add_argument("--cache", default="/tmp/onnxprune-zoo", help="where filled zoo models are written")
    args = p.parse_args(argv)
    config = PruneConfig(ratio=args.ratio, importance=args.importance, inexact=args.inexact,
                         global_ranking=args.global_ranking)
    if args.round_to is not None:
        config.round_to = args.round_to
    paths = sorted(Path(args.folder).glob("*.onnx"))
    if args.only:
        paths = [q for q in paths if q.stem in set(args.only)]
    failures = 0
    for path in paths:
        try:
            ok, line = sweep_one(path, Path(args.cache), config)
        except Exception as exc:  # report and go on: one broken model must not hide the others
            ok, line = False, f"ERROR {type(exc).__name__}: {str(exc)[:200]}"
        failures += not ok
        print(f"{path.stem:42s} {line}", flush=True)
    print(f"{len(paths) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
