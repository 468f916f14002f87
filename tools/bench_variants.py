"""Prune the graphs deployment pipelines hold: ONNX Runtime's optimized files against the plain model.

    python tools/bench_variants.py [--ratio 0.3] [--only NAME ...] [--work DIR]

For every zoo CNN, the file ONNX Runtime saves at ORT_ENABLE_EXTENDED
(FusedConv, FusedGemm); for hf_tiny_bert / hf_tiny_gpt2__dynamo, the output of
`onnxruntime.transformers.optimizer.optimize_model` (Attention,
SkipLayerNormalization, BiasGelu / FastGelu; needs sympy). Each is pruned at
the same ratio as the plain model: parameters removed by both, the variant's
share of the plain removal, the dead-channel oracle, whether the pruned
variant runs in ONNX Runtime and still holds its contrib ops. Prints a table.
"""
from __future__ import annotations

import argparse
import collections
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

import zoo  # noqa: E402
from onnxprune import PruneConfig, analyze  # noqa: E402
from onnxprune.errors import BadInputError  # noqa: E402
from onnxprune.testing import frozen_reasons, model_stats, random_inputs, run_model  # noqa: E402

TRANSFORMERS = {"hf_tiny_bert": "bert", "hf_tiny_gpt2__dynamo": "gpt2"}
ALL_LEVEL_DEMO = "tv_resnet18"  # also saved at ORT_ENABLE_ALL: NCHWc on x86, refused


def ort_optimized(src: Path, out: Path, level: ort.GraphOptimizationLevel) -> Path:
    """The file ONNX Runtime writes after optimizing `src` at `level` on CPU."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    opts.optimized_model_filepath = str(out)
    opts.log_severity_level = 3
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    return out


def transformers_optimized(src: Path, out: Path, model_type: str, heads: int, hidden: int) -> Path:
    """onnxruntime.transformers' fusions (opt_level 0: no ORT graph optimizer pass) on `src`."""
    from onnxruntime.transformers.optimizer import optimize_model
    optimize_model(str(src), model_type=model_type, num_heads=heads, hidden_size=hidden,
                   opt_level=0).save_model_to_file(str(out))
    return out


def heads_hidden(name: str) -> tuple[int, int]:
    """(num_heads, hidden_size) from a zoo transformer's description ("hidden 256, ..., 4 heads")."""
    source = zoo.meta(name)["source"]
    heads = re.search(r"(\d+) heads", source)
    hidden = re.search(r"(?:hidden|n_embd) (\d+)", source)
    if not heads or not hidden:
        raise ValueError(f"{name}: no heads / hidden size in its description {source!r}")
    return int(heads.group(1)), int(hidden.group(1))


def contrib_ops(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(n.op_type for n in model.graph.node if n.domain not in ("", "ai.onnx"))


def prune_one(path: Path, ratio: float) -> dict:
    """Removed parameters, oracle, runs-in-ORT and contrib ops kept, for one model file."""
    model = onnx.load(str(path))
    config = PruneConfig(ratio=ratio)
    try:
        analysis = analyze(str(path))
    except BadInputError as exc:  # NCHWc layouts are refused at load
        return {"error": str(exc)}
    plan = analysis.plan(config)
    pruned = analysis.apply(plan)
    oracle = analysis.verify(plan)
    feeds = random_inputs(analysis.model, {})
    try:
        run_model(pruned, feeds, optimize=True)
        runs = True
    except Exception:  # noqa: BLE001 - reported as a column
        runs = False
    before = model_stats(analysis).params
    after = model_stats(pruned).params
    frozen = "; ".join(f"{n}x {r[:50]}" for r, n in frozen_reasons(analysis, 2))
    return {"before": before, "removed": before - after, "oracle": oracle.passed, "runs": runs,
            "kept_ops": contrib_ops(pruned.proto) == contrib_ops(model), "ops": contrib_ops(model), "frozen": frozen}


def variants_of(name: str, src: Path, work: Path) -> list[tuple[str, Path]]:
    """(kind, file) of every variant of a zoo model: ORT_ENABLE_EXTENDED for all, the transformers
    optimizer's output too for BERT / GPT-2."""
    out = []
    if name in TRANSFORMERS:
        heads, hidden = heads_hidden(name)
        out.append(("transformers", transformers_optimized(src, work / f"{name}.tf.onnx", TRANSFORMERS[name],
                                                           heads, hidden)))
    extended = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    out.append(("ORT extended", ort_optimized(src, work / f"{name}.ext.onnx", extended)))
    return out


def names(only: list[str] | None) -> list[str]:
    every = [n for n in zoo.model_names() if n.startswith(("tv_", "yolo_", "hf_"))]
    return [n for n in every if not only or n in only]


def _row(name: str, kind: str, plain: dict, var: dict) -> float:
    """Print one table row; return the variant's share of the plain removal."""
    if "error" in var:
        print(f"{name:40s} {kind:13s} refused: {var['error']}", flush=True)
        return 0.0
    share = var["removed"] / plain["removed"] if plain["removed"] else 1.0
    ops = ",".join(f"{k}x{v}" for k, v in sorted(var["ops"].items()))
    print(f"{name:40s} {kind:13s} {plain['removed']:>10,} {var['removed']:>10,} {share:7.1%} "
          f"{'pass' if var['oracle'] else 'FAIL':6s} {'yes' if var['runs'] else 'NO':4s} "
          f"{'yes' if var['kept_ops'] else 'NO':5s}  {ops}", flush=True)
    if share < 0.95 and var["frozen"]:
        print(f"{'':40s}   variant frozen: {var['frozen']}", flush=True)
    return share


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratio", type=float, default=0.3)
    p.add_argument("--only", nargs="*", help="zoo model names")
    p.add_argument("--work", default=None, help="folder for filled and optimized models (default: a temp dir)")
    args = p.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_variants_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"ratio {args.ratio}; params removed by the plain model and by its optimized variant")
    print(f"{'model':40s} {'variant':13s} {'plain':>10s} {'variant':>10s} {'share':>7s} oracle runs fused  contrib ops")
    worst = 1.0
    for name in names(args.only):
        src = zoo.write_filled(name, work)
        try:
            plain = prune_one(src, args.ratio)
            rows = [(kind, prune_one(path, args.ratio)) for kind, path in variants_of(name, src, work)]
        except Exception as exc:  # report and go on
            print(f"{name:40s} ERROR {type(exc).__name__}: {str(exc)[:150]}", flush=True)
            continue
        for kind, var in rows:
            worst = min(worst, _row(name, kind, plain, var))
        if name == ALL_LEVEL_DEMO:
            all_level = ort_optimized(src, work / f"{name}.all.onnx", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
            blocked = prune_one(all_level, args.ratio)
            print(f"{name:40s} {'ORT all':13s} {'refused: ' + blocked['error'] if 'error' in blocked else 'accepted'}",
                  flush=True)
    print(f"lowest share: {worst:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
