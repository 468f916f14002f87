"""Gather: pick entries of `data` along `axis` by `indices`.

Output shape is data[:axis] + indices.shape + data[axis+1:]. Data axes other
than `axis` pass through (renumbered by the indices' rank). A constant table
gathered by run-time indices (an embedding) starts a channel space on its
other axes: cutting the table's columns is the producing side (role "out").
Channels along the gathered axis itself, or along the index axes, are not
followed: the indices name positions that pruning would renumber.
"""
from __future__ import annotations

from typing import Iterator

from ..indexmap import Pairs
from ..ir import Graph, Node
from .base import Effects, Port, Rule, positive_axis, register


def _geometry(node: Node, graph: Graph) -> tuple[int, int, int] | None:
    """(data rank, gather axis, indices rank), or None when a rank is unknown."""
    data_rank, idx_rank = graph.rank(node.input(0)), graph.rank(node.input(1))
    if data_rank is None or idx_rank is None:
        return None
    return data_rank, positive_axis(int(node.attr("axis", 0)), data_rank), idx_rank


@register("Gather")
class GatherRule(Rule):
    """Data axes other than `axis` pass (renumbered); a constant table gathered by run-time indices is a root."""

    def index_ranges(self, node: Node, graph: Graph) -> dict[str, int]:
        table = graph.shape(node.input(0)) if graph.is_weight(node.input(0)) else None
        if table is None or graph.is_const(node.input(1)):
            return {}
        axis = positive_axis(int(node.attr("axis", 0)), len(table))
        return {node.input(1): int(table[axis])}

    def roots(self, node: Node, graph: Graph) -> Iterator[tuple[str, int]]:
        geo = _geometry(node, graph)
        if geo is None or not graph.is_weight(node.input(0)) or graph.is_const(node.input(1)):
            return
        data_rank, axis, idx_rank = geo
        for d in range(axis + 1, data_rank):
            yield node.output(0), d + idx_rank - 1

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        geo = _geometry(node, graph)
        if geo is None:
            fx.freeze("data or indices rank is unknown")
            return
        _, g_axis, idx_rank = geo
        if port.is_input and port.index == 1:
            fx.freeze("channels reach the indices input (positions, not data)")
            return
        if port.is_input:
            if axis == g_axis:
                fx.freeze(f"gathers along the channel axis {axis}: indices would need renumbering")
                return
            fx.to_output(0, axis if axis < g_axis else axis + idx_rank - 1, pairs)
            return
        if g_axis <= axis < g_axis + idx_rank:
            fx.freeze(f"output axis {axis} is an axis of the indices")
            return
        if graph.is_weight(node.input(0)):
            fx.label("embedding")
        fx.to_input(0, axis if axis < g_axis else axis - idx_rank + 1, pairs)
