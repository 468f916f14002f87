"""Slice: a window of the channel axis, or a pass-through along any other axis.

Bounds come from inputs (opset >= 10) or attributes (opset < 10). Along the
channel axis the window keeps the channels inside it, and its bounds move
left by the number of removed channels below them.
"""
from __future__ import annotations

from .. import indexmap
from ..indexmap import Pairs
from ..ir import Graph, Node
from .base import Effects, Port, Rule, const_ints, positive_axis, register

INT_MAX = 2 ** 62


def _params(node: Node, graph: Graph) -> tuple[list | None, list | None, list | None, list | None, bool]:
    """(starts, ends, axes, steps, from_attributes); a list is None when computed at run time."""
    starts: list[int] | None
    ends: list[int] | None
    if node.attr("starts") is not None:
        starts, ends = list(node.attr("starts")), list(node.attr("ends"))
        axes = node.attr("axes")
        return starts, ends, list(axes) if axes is not None else list(range(len(starts))), [1] * len(starts), True
    starts, ends = const_ints(graph, node.input(1)), const_ints(graph, node.input(2))
    n = len(starts) if starts is not None else None
    axes = const_ints(graph, node.input(3)) if node.input(3) else (list(range(n)) if n is not None else None)
    steps = const_ints(graph, node.input(4)) if node.input(4) else ([1] * n if n is not None else None)
    return starts, ends, axes, steps, False


def _clamp(value: int, dim: int) -> int:
    value = value + dim if value < 0 else value
    return max(0, min(value, dim))


@register("Slice")
class SliceRule(Rule):
    """Along the channel axis a window (its bounds move left by the removed channels below them); other axes pass."""

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        rank = fx.data_rank(port, "slice bounds")
        if rank is None:
            return
        starts, ends, axes, steps, from_attrs = _params(node, graph)
        if axes is None:
            fx.freeze("slice axes are computed at run time")
            return
        axes = [positive_axis(a, rank) for a in axes]
        if axis not in axes:
            (fx.to_output if port.is_input else fx.to_input)(0, axis, pairs)
            return
        if starts is None or ends is None or steps is None:
            fx.freeze(f"slice bounds on the channel axis {axis} are computed at run time")
            return
        k = axes.index(axis)
        if steps[k] != 1:
            fx.freeze(f"strided slice (step {steps[k]}) on the channel axis {axis}")
            return
        dim = graph.dim(node.input(0), axis)
        if dim is None:
            fx.freeze(f"size of '{node.input(0)}' along the channel axis {axis} is unknown")
            return
        start, end = _clamp(starts[k], dim), _clamp(ends[k], dim)
        space = (node.input(0), axis)  # the bounds follow it from either side (a weight's gate blocks
        # reached from the consumer: then it is the initializer's cut)
        if from_attrs:
            fx.edit_attr("starts", k, space, offset=start)
            if ends[k] < dim:
                fx.edit_attr("ends", k, space, offset=end)
        else:
            fx.edit_const(node.input(1), k, space, offset=start)
            if ends[k] < dim:  # an "until the end" sentinel stays valid
                fx.edit_const(node.input(2), k, space, offset=end)
        if port.is_input:
            fx.to_output(0, axis, indexmap.window(pairs, start, end))
        else:
            fx.to_input(0, axis, indexmap.shift(pairs, start), reads=(start, end))
