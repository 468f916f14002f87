"""Ops that read only a tensor's shape: its channels' values never reach their output.

The shape values they produce follow the pruned size at run time, which is
what shape arithmetic in exported graphs expects.
"""
from __future__ import annotations

from ..indexmap import Pairs
from ..ir import Graph, Node
from .base import Effects, Port, Rule, register


@register("Shape", "Size")
class ShapeOnlyRule(Rule):
    reads_shape_only = True
    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        if not port.is_input:
            fx.freeze("output is a shape, not channels")
