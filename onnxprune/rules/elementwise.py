"""Elementwise ops: input and output channels are the same index space.

Unary ops (and ops whose extra inputs are scalars: Clip, Dropout, CastLike)
pass channels straight through. Broadcasting ops couple every operand that is
not broadcast along the axis; constant operands are cut with the channels
(a per-channel bias, a layer-scale Mul, a PRelu slope).
"""
from __future__ import annotations

from ..indexmap import Pairs
from ..ir import Graph, Node
from .base import Effects, Port, Rule, broadcast_through, broadcast_to_input, register
from .shape_only import follow_shape_element

UNARY = (
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Erf", "Gelu", "Elu", "Selu",
    "Celu", "Softplus", "Softsign", "ThresholdedRelu", "Mish", "Swish", "Identity", "Cast", "CastLike",
    "Neg", "Abs", "Exp", "Log", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos",
    "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Not", "IsNaN", "IsInf",
    "Shrink", "Clip", "Dropout",
)

BROADCAST = (
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "PRelu", "And", "Or", "Xor",
    "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Mod", "BitShift",
)


@register(*UNARY)
class UnaryRule(Rule):
    """Output j has input 0's shape: every data output carries the same channels."""

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        if port.is_input and port.index != 0:
            fx.freeze(f"input {port.index} is a scalar parameter, not data")
            return
        fx.to_ports(port, axis, pairs, [0], range(len(node.outputs)))


@register(*BROADCAST)
class BroadcastRule(Rule):
    """Multidirectional (numpy) broadcasting between every input and the output."""

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        broadcast_through(fx, graph, node, port, axis, pairs, range(len(node.inputs)))


@register("Expand")
class ExpandRule(Rule):
    """Y = broadcast(X, shape): X couples with Y where X is not broadcast; the shape element follows."""

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        if port.is_input and port.index == 1:
            fx.freeze("input 1 holds the target shape, not data")
            return
        out_rank, shape_len = graph.rank(node.output(0)), graph.dim(node.input(1), 0)
        if out_rank is None or shape_len is None:
            fx.freeze("output rank or target shape length is unknown")
            return
        if port.is_input:
            in_rank = graph.rank(node.input(0))
            if in_rank is None:
                fx.freeze("input rank is unknown")
                return
            out_axis = axis + (out_rank - in_rank)
            fx.to_output(0, out_axis, pairs)
        else:
            out_axis = axis
            broadcast_to_input(fx, graph, node, 0, out_axis, out_rank, pairs)
        element = out_axis - (out_rank - shape_len)
        if element >= 0:
            follow_shape_element(graph, fx, node.input(1), element, (node.output(0), out_axis), keep=(1,))
