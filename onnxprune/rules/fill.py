"""Ops that fill a tensor of a given shape: ConstantOfShape and Tile (recurrent initial states).

Exporters build an LSTM / GRU initial state as ConstantOfShape([dirs, batch, H])
or Tile of a zero row: every element along the hidden axis is the same, so
the channels need no cut, only the shape constant that sizes the axis.
"""
from __future__ import annotations

from ..indexmap import Pairs
from ..ir import Graph, Node
from .base import Effects, Port, Rule, const_ints, register
from .shape_only import follow_shape_element


@register("ConstantOfShape")
class ConstantOfShapeRule(Rule):
    """Y = fill(shape, value): axis a of Y is sized by element a of the shape input."""

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        if port.is_input:
            fx.freeze("input 0 holds the output shape, not data")
            return
        follow_shape_element(graph, fx, node.input(0), axis, (node.output(0), axis), keep=())


@register("Tile")
class TileRule(Rule):
    """Y = tile(X, repeats): an axis not repeated carries X's channels; a repeated axis of size 1 in
    X is a fill along which only the repeat count follows the new size."""

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        if port.is_input and port.index != 0:
            fx.freeze(f"input {port.index} holds the repeat counts, not data")
            return
        repeats = const_ints(graph, node.input(1))
        if repeats is None or axis >= len(repeats):
            fx.freeze(f"repeats '{node.input(1)}' are computed at run time")
            return
        if repeats[axis] == 1:
            if port.is_input:
                fx.to_output(0, axis, pairs)
            else:
                fx.to_input(0, axis, pairs)
        elif not port.is_input and graph.dim(node.input(0), axis) == 1:
            follow_shape_element(graph, fx, node.input(1), axis, (node.output(0), axis), keep=())
        else:
            fx.freeze(f"axis {axis} is repeated {repeats[axis]} times: channels would mix across copies")
