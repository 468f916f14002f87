"""Small conv chains for the planner, importance and CLI-planner tests."""
from __future__ import annotations

import numpy as np
import onnx
from helpers import make_model, node, weight


def conv_chain(widths: tuple[int, ...] = (16, 16), quiet: dict[int, int] | None = None, out: int = 4,
               spatial: int = 6) -> onnx.ModelProto:
    """x -> Conv(widths[0]) -> Relu -> ... -> Conv(out) -> y; node names Conv_a0, Conv_a1, ..., Conv_y.

    `quiet[i] = k` scales the first k filters of conv i (and their input columns downstream) by 1e-3,
    so that they score lowest under every magnitude criterion.
    """
    quiet = quiet or {}
    nodes, inits, prev, c_in = [], {}, "x", 3
    for i, width in enumerate(widths):
        w, b = weight(width, c_in, 3, 3), weight(width)
        w[: quiet.get(i, 0)] *= 1e-3
        b[: quiet.get(i, 0)] *= 1e-3
        if i > 0 and quiet.get(i - 1):
            w[:, : quiet[i - 1]] *= 1e-3
        inits[f"w{i}"], inits[f"b{i}"] = w, b
        nodes += [node("Conv", [prev, f"w{i}", f"b{i}"], f"a{i}", pads=[1, 1, 1, 1]), node("Relu", [f"a{i}"], f"r{i}")]
        prev, c_in = f"r{i}", width
    wy = weight(out, c_in, 1, 1)
    if quiet.get(len(widths) - 1):
        wy[:, : quiet[len(widths) - 1]] *= 1e-3
    inits["wy"] = wy
    nodes.append(node("Conv", [prev, "wy"], "y"))
    return make_model(nodes, {"x": [1, 3, spatial, spatial]}, {"y": None}, inits)


def pruned_counts(analysis, plan) -> dict[str, int]:
    """Root node name -> number of root channels the plan removes."""
    by_id = {g.id: g for g in analysis.groups}
    return {by_id[pg.id].root_node: len(pg.pruned) for pg in plan.groups}


__all__ = ["conv_chain", "pruned_counts", "np"]
