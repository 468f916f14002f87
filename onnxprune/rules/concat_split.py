"""Concat and Split: channels move by an offset along the joined / split axis.

Along any other axis every operand shares the channel index, like an
elementwise op. A Split into equal parts without explicit sizes (fused QKV
projections) can only stay equal: position p of one part brings position p
of every part with it.
"""
from __future__ import annotations

import numpy as np

from .. import indexmap
from ..indexmap import Pairs
from ..ir import Graph, Node
from .base import Effects, Port, Rule, const_ints, positive_axis, register


def _sizes(graph: Graph, names: list[str], axis: int) -> list[int] | None:
    sizes = [graph.dim(n, axis) if n else 0 for n in names]
    known = [int(s) for s in sizes if s is not None]
    return known if len(known) == len(sizes) else None


@register("Concat")
class ConcatRule(Rule):
    """Along the joined axis input k's channels sit at an offset (the sizes before it); else all share them."""

    def data_inputs(self, node: Node) -> list[int]:
        """The inputs that are joined, in order (all of them for Concat)."""
        return list(range(len(node.inputs)))

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        rank = graph.rank(node.output(0))
        if rank is None:
            fx.freeze("output rank is unknown")
            return
        data = self.data_inputs(node)
        cat_axis = positive_axis(int(node.attr("axis")), rank)
        if axis != cat_axis:
            fx.to_ports(port, axis, pairs, data, [0])
            return
        sizes = _sizes(graph, [node.inputs[i] for i in data], cat_axis)
        if sizes is None:
            fx.freeze(f"a {node.op_type} input has an unknown size along axis {cat_axis}")
            return
        offsets = [sum(sizes[:k]) for k in range(len(sizes))]
        if port.is_input:
            fx.to_output(0, axis, indexmap.shift(pairs, offsets[data.index(port.index)]))
            return
        for i, off, size in zip(data, offsets, sizes):
            part = indexmap.window(pairs, off, off + size)
            if len(part):
                fx.to_input(i, axis, part)


@register("Split")
class SplitRule(Rule):
    """Split sizes come from the `split` attribute (opset < 13) or input 1; both follow the new sizes."""

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        if port.is_input and port.index != 0:
            fx.freeze("input 1 holds split sizes, not data")
            return
        rank = graph.rank(node.input(0))
        if rank is None:
            fx.freeze("input rank is unknown")
            return
        split_axis = positive_axis(int(node.attr("axis", 0)), rank)
        if axis != split_axis:
            fx.to_ports(port, axis, pairs, [0], range(len(node.outputs)))
            return
        sizes = _sizes(graph, node.outputs, split_axis)
        if sizes is None:
            fx.freeze(f"a Split output has an unknown size along axis {split_axis}")
            return
        offsets = [sum(sizes[:j]) for j in range(len(sizes))]
        if self._equal(node):
            self._equal_parts(port, axis, pairs, sizes, offsets, fx)
            return
        if not port.is_input:
            fx.to_input(0, axis, indexmap.shift(pairs, offsets[port.index]))
            return
        if not self._edit_sizes(node, graph, split_axis, fx):
            return
        for j, (off, size) in enumerate(zip(offsets, sizes)):
            part = indexmap.window(pairs, off, off + size)
            if len(part):
                fx.to_output(j, axis, part)

    @staticmethod
    def _equal(node: Node) -> bool:
        """Equal parts (no sizes given): position p of every part goes together, so they stay equal."""
        return len(node.outputs) > 1 and node.attr("split") is None and not node.input(1)

    @staticmethod
    def _equal_parts(port: Port, axis: int, pairs: Pairs, sizes: list[int], offsets: list[int], fx: Effects) -> None:
        if len(set(sizes)) != 1:
            fx.freeze("split into unequal parts without explicit sizes cannot be rewritten")
            return
        if port.is_input:
            local = np.concatenate([indexmap.window(pairs, off, off + sizes[0]) for off in offsets])
        else:
            local = pairs
        fx.to_input(0, axis, np.concatenate([indexmap.shift(local, off) for off in offsets]))
        for j in range(len(sizes)):
            fx.to_output(j, axis, local)

    @staticmethod
    def _edit_sizes(node: Node, graph: Graph, axis: int, fx: Effects) -> bool:
        if node.attr("split") is not None:
            for j, name in enumerate(node.outputs):
                fx.edit_attr("split", j, (name, axis))
            return True
        if node.input(1):
            if const_ints(graph, node.input(1)) is None:
                fx.freeze(f"split sizes '{node.input(1)}' are computed at run time")
                return False
            for j, name in enumerate(node.outputs):
                fx.edit_const(node.input(1), j, (name, axis))
            return True
        return True
