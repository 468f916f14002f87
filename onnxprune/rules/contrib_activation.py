"""ONNX Runtime's contrib activations (domain com.microsoft): elementwise, some with a bias folded in.

* Gelu, QuickGelu: unary.
* FastGelu(X, bias?), BiasGelu(A, B): gelu(X + bias); BiasAdd(X, bias, skip): X + bias + skip.
  Broadcasting elementwise ops: a [C] bias is cut with the channels of the last axis.
* BiasSplitGelu(X [N, S, D], bias [D]): Y [N, S, D/2] = (X + bias)[..., :D/2] * gelu((X + bias)[..., D/2:]):
  output channel c reads input channels c and D/2 + c, so they go together.
"""
from __future__ import annotations

import numpy as np

from ..indexmap import Pairs
from ..ir import Graph, Node
from ..kinds import PortKind
from .base import Effects, Port, Rule, positive_axis, register
from .elementwise import BroadcastRule, UnaryRule

MS = "com.microsoft"


def _first(input_shapes: list) -> list | None:
    return [input_shapes[0]] if input_shapes and input_shapes[0] is not None else None


@register("Gelu", "QuickGelu", domain=MS)
class ContribUnaryRule(UnaryRule):
    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        return _first(input_shapes)


@register("FastGelu", "BiasGelu", "BiasAdd", domain=MS)
class ContribBiasRule(BroadcastRule):
    """The output has the data input's shape; the other inputs broadcast to it."""

    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        return _first(input_shapes)


@register("BiasSplitGelu", domain=MS)
class BiasSplitGeluRule(Rule):
    """Input positions p and p + D/2 of the last axis make output position p (module doc)."""

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        rank, width = graph.rank(node.input(0)), graph.dim(node.input(0), -1)
        if rank is None or width is None:
            fx.freeze("input shape is unknown")
            return
        if port.is_input and port.index == 1:
            axis, port = rank - 1, Port(PortKind.IN, 0)  # the bias runs along the input's last axis
        axis = positive_axis(axis, rank)
        if axis != rank - 1:  # leading axes pass straight through
            fx.to_ports(port, axis, pairs, [0], [0])
            return
        half = width // 2
        out = np.stack([pairs[:, 0] % half, pairs[:, 1]], axis=1) if port.is_input else pairs
        both = np.concatenate([out, out + np.array([half, 0])])
        fx.to_input(0, rank - 1, both)
        fx.to_input(1, 0, both)
        fx.to_output(0, rank - 1, out)

    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        x = input_shapes[0] if input_shapes else None
        if x is None or x[-1] is None:
            return None
        return [tuple(x[:-1]) + (x[-1] // 2,)]
