"""Conv and ConvTranspose: filters (output side) and input channels (input side).

Conv weight is [M, C/g, k...]; ConvTranspose weight is [C, M/g, k...].
With group == 1 the input and output channels are independent. A depthwise
conv (group == C) ties output channels k*m .. k*m+m-1 to input channel k, so
both sides are one space and `group` follows the new channel count.
Other grouped convs are handled by `grouped`.
"""
from __future__ import annotations

from typing import Iterator

from .. import indexmap
from ..indexmap import Pairs
from ..ir import Graph, Node
from .base import Effects, Port, Rule, prod, register
from .forms import conv2d_form


def conv_layout(node: Node, graph: Graph) -> tuple[int, int, int, int] | None:
    """(in_axis, out_axis, in_channels, out_channels) of the weight, or None if unknown."""
    w = graph.shape(node.input(1))
    x = graph.shape(node.input(0))
    if w is None or x is None or len(x) < 2 or x[1] is None:
        return None
    group = int(node.attr("group", 1))
    if node.op_type == "ConvTranspose":
        return 0, 1, int(x[1]), int(w[1]) * group
    return 1, 0, int(x[1]), int(w[0])


def is_depthwise(node: Node, graph: Graph) -> bool:
    layout = conv_layout(node, graph)
    group = int(node.attr("group", 1))
    return layout is not None and group > 1 and group == layout[2] and layout[3] % group == 0


class _ConvBase(Rule):
    rows_are_outputs = True

    def roots(self, node: Node, graph: Graph) -> Iterator[tuple[str, int]]:
        if int(node.attr("group", 1)) == 1:
            yield node.output(0), 1

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        layout = conv_layout(node, graph)
        if not graph.is_const(node.input(1)):
            fx.freeze(f"weight '{node.input(1)}' is computed at run time, not a constant")
            return
        if layout is None:
            fx.freeze(f"shape of input '{node.input(0)}' or weight is unknown")
            return
        if port.index != 0 or axis != 1:
            fx.freeze(f"channels of {port.kind}put {port.index} along axis {axis} are not conv channels")
            return
        group = int(node.attr("group", 1))
        in_axis, out_axis, _, _ = layout
        if group == 1:
            if port.is_input:
                fx.cut(node.input(1), in_axis, pairs, role="in")
            else:
                self._cut_filters(node, out_axis, pairs, fx)
        elif is_depthwise(node, graph):
            self._depthwise(node, graph, port, pairs, layout, fx)
        else:
            self.grouped(node, graph, port, pairs, layout, fx)

    def macs(self, node: Node, graph: Graph) -> int:
        w, y, x = graph.shape(node.input(1)), graph.shape(node.output(0)), graph.shape(node.input(0))
        if w is None or y is None or x is None or None in w or None in y or None in x:
            return 0
        if self.rows_are_outputs:  # each output element reads C/g * k inputs
            return prod(y) * prod(w[1:])
        return prod(x) * prod(w[1:])  # each input element is scattered to M/g * k outputs

    def _cut_filters(self, node: Node, out_axis: int, pairs: Pairs, fx: Effects) -> None:
        fx.cut(node.input(1), out_axis, pairs, role="out")
        if node.input(2):
            fx.cut(node.input(2), 0, pairs, role="out")

    def _depthwise(self, node: Node, graph: Graph, port: Port, pairs: Pairs, layout, fx: Effects) -> None:
        in_axis, out_axis, channels, filters = layout
        multiplier = filters // channels
        if port.is_input:
            out_pairs = indexmap.expand(pairs, multiplier)
            fx.to_output(0, 1, out_pairs)
            # Conv weight rows are output channels; ConvTranspose rows are input channels.
            fx.cut(node.input(1), 0, out_pairs if self.rows_are_outputs else pairs, role="out")
            if node.input(2):
                fx.cut(node.input(2), 0, out_pairs, role="out")
            fx.edit_attr("group", -1, (node.input(0), 1))
        else:
            back = pairs.copy()
            back[:, 0] //= multiplier
            fx.to_input(0, 1, back)

    def grouped(self, node: Node, graph: Graph, port: Port, pairs: Pairs, layout, fx: Effects) -> None:
        fx.freeze(f"grouped convolution (group={node.attr('group')}) is not supported")


@register("Conv")
class ConvRule(_ConvBase):
    """Conv: output side cuts W rows and bias; input side cuts W columns (role "in")."""

    def linear_form(self, node: Node, graph: Graph):
        return conv2d_form(node, graph)


@register("ConvTranspose")
class ConvTransposeRule(_ConvBase):
    """ConvTranspose: weight is [C, M/g, k...], so the axes swap roles."""

    rows_are_outputs = False
