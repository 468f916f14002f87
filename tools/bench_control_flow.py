"""The control-flow variant of a model, and how much of the plain model's pruning it keeps.

    python tools/bench_control_flow.py MODEL.onnx [MODEL.onnx ...] [--ratio 0.3] [--outer]

The variant puts the whole network into both branches of a top-level If on a new bool
input `use_then` (as silero-vad switches on the sample rate), with its own copy of the
weights per branch: inside the branch by default, as outer initializers with --outer.
Both are pruned at the same ratio with the CLI's defaults; the line per model prints the
parameters each loses and the variant's share of twice the plain model's loss (one
network per branch), which should be at least 95 %.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import onnx
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnxprune import PruneConfig, prune  # noqa: E402


def if_variant(model: onnx.ModelProto, weights_inside: bool = True) -> onnx.ModelProto:
    """`model` with its whole graph in both branches of an If on a bool input, weights per branch."""
    g = model.graph
    outer_names = {i.name for i in g.input} - {t.name for t in g.initializer}
    branches, outer_inits = {}, []
    for prefix, attr in (("then/", "then_branch"), ("else/", "else_branch")):
        def rename(name: str, prefix: str = prefix) -> str:  # this branch's prefix
            return name if not name or name in outer_names else prefix + name

        nodes = []
        for n in g.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(n)
            copy.name = prefix + n.name
            copy.input[:] = [rename(x) for x in n.input]
            copy.output[:] = [rename(x) for x in n.output]
            nodes.append(copy)
        inits = []
        for t in g.initializer:
            copy = onnx.TensorProto()
            copy.CopyFrom(t)
            copy.name = rename(t.name)
            inits.append(copy)
        outputs = []
        for o in g.output:
            copy = onnx.ValueInfoProto()
            copy.CopyFrom(o)
            copy.name = rename(o.name)
            outputs.append(copy)
        body = helper.make_graph(nodes, attr, [], outputs, inits if weights_inside else [])
        if not weights_inside:
            outer_inits.extend(inits)
        branches[attr] = body
    node = helper.make_node("If", ["use_then"], [o.name for o in g.output], name="switch", **branches)
    inputs = [i for i in g.input if i.name in outer_names] + \
        [helper.make_tensor_value_info("use_then", TensorProto.BOOL, [])]
    graph = helper.make_graph([node], g.name, inputs, list(g.output), outer_inits)
    out = helper.make_model(graph, opset_imports=list(model.opset_import))
    out.ir_version = model.ir_version
    return out


def lost(path: str, ratio: float, out_dir: str) -> tuple[int, int]:
    report = prune(path, str(Path(out_dir) / ("pruned_" + Path(path).name)),
                   PruneConfig(ratio=ratio, validate=False))
    return report.before.params, report.before.params - report.after.params


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--ratio", type=float, default=0.3)
    p.add_argument("--outer", action="store_true", help="weights as outer initializers, not inside the branches")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(f"{'model':40s} {'params':>10s} {'plain lost':>11s} {'If lost':>11s} {'share':>7s}")
    for path in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            variant = str(Path(tmp) / ("if_" + Path(path).name))
            onnx.save(if_variant(onnx.load(path), not args.outer), variant)
            params, plain = lost(path, args.ratio, tmp)
            _, branched = lost(variant, args.ratio, tmp)
        share = branched / (2 * plain) if plain else float("nan")
        print(f"{Path(path).stem:40s} {params:10d} {plain:11d} {branched:11d} {share:7.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
