"""Gemm and MatMul with a constant weight: output features (N) and input features (K)."""
from __future__ import annotations

import dataclasses
from typing import Iterator

from ..indexmap import Pairs
from ..ir import Graph, Node
from ..kinds import BiasAttach, Role
from .base import Effects, Port, Rule, prod, broadcast_to_input, register
from .forms import dense_form, following_bias


def _matmul_macs(graph: Graph, a: str, y: str, k_axis: int) -> int:
    """Every output element is a K-long dot product."""
    a_shape, y_shape = graph.shape(a), graph.shape(y)
    if a_shape is None or y_shape is None or None in a_shape or None in y_shape or not a_shape:
        return 0
    return prod(y_shape) * int(a_shape[k_axis])


@register("Gemm")
class GemmRule(Rule):
    """Y = A' B' + C. B is [K, N] (transB=0) or [N, K]; A is [M, K] (transA=0) or [K, M]."""

    def macs(self, node: Node, graph: Graph) -> int:
        return _matmul_macs(graph, node.input(0), node.output(0), 0 if int(node.attr("transA", 0)) else 1)

    def roots(self, node: Node, graph: Graph) -> Iterator[tuple[str, int]]:
        if graph.is_weight(node.input(1)):
            yield node.output(0), 1

    def linear_form(self, node: Node, graph: Graph):
        """Y = A W (+ C) with transA=0, alpha=1 and C absent or of shape [N] / [1, N]."""
        if not graph.is_const(node.input(1)) or int(node.attr("transA", 0)) or float(node.attr("alpha", 1.0)) != 1.0:
            return None
        form = dense_form(node, graph, 1, 1 if int(node.attr("transB", 0)) else 0)
        bias = node.input(2)
        if not bias:
            return form
        n = graph.const_shape(node.input(1))[form.w_out_axis]
        if not graph.is_const(bias) or graph.const_shape(bias) != (n,) or float(node.attr("beta", 1.0)) != 1.0:
            return None
        return dataclasses.replace(form, bias=bias)

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        weight = node.input(1)
        trans_a, trans_b = int(node.attr("transA", 0)), int(node.attr("transB", 0))
        k_axis_b, n_axis_b = (1, 0) if trans_b else (0, 1)
        k_axis_a, m_axis_a = (0, 1) if trans_a else (1, 0)
        if port.is_input and port.index == 0:
            if axis == k_axis_a:
                if not graph.is_weight(weight):
                    fx.freeze(f"weight '{weight}' is computed at run time")
                    return
                fx.cut(weight, k_axis_b, pairs, role=Role.IN)
            else:
                fx.to_output(0, 0, pairs)
                broadcast_to_input(fx, graph, node, 2, 0, 2, pairs)
        elif not port.is_input and axis == 1:
            if not graph.is_weight(weight):
                fx.freeze(f"weight '{weight}' is computed at run time")
                return
            fx.cut(weight, n_axis_b, pairs, role=Role.OUT)
            broadcast_to_input(fx, graph, node, 2, 1, 2, pairs)
        elif not port.is_input and axis == 0:
            fx.to_input(0, m_axis_a, pairs)
            broadcast_to_input(fx, graph, node, 2, 0, 2, pairs)
        else:
            fx.freeze(f"channels of {port.kind}put {port.index} along axis {axis} cannot be followed")


@register("MatMul")
class MatMulRule(Rule):
    """Y = A @ B with a constant 2-D B [K, N]: the last axis of A is K, the last axis of Y is N.

    Leading (batch / sequence) axes pass straight from A to Y. MatMul of two
    computed tensors (attention) is left to the attention rules.
    """

    def macs(self, node: Node, graph: Graph) -> int:
        return _matmul_macs(graph, node.input(0), node.output(0), -1)

    def roots(self, node: Node, graph: Graph) -> Iterator[tuple[str, int]]:
        if self._weight_2d(node, graph):
            yield node.output(0), -1

    def linear_form(self, node: Node, graph: Graph):
        """Y = A W, with the bias in a following Add when there is one."""
        if not self._weight_2d(node, graph) or not graph.is_const(node.input(1)):
            return None
        form = dense_form(node, graph, -1, 0)
        bias = following_bias(node, graph, graph.const_shape(node.input(1))[1])
        return dataclasses.replace(form, bias=bias, bias_attach=(BiasAttach.ADD,))

    @staticmethod
    def _weight_2d(node: Node, graph: Graph) -> bool:
        """B is a 2-D initializer or a 2-D tensor computed from initializers (a dequantized weight)."""
        return graph.is_weight(node.input(1)) and graph.rank(node.input(1)) == 2

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        a_rank, y_rank = graph.rank(node.input(0)), graph.rank(node.output(0))
        if a_rank is None or y_rank is None or a_rank < 2:
            fx.freeze("rank of the MatMul operands is unknown or below 2")
            return
        if not self._weight_2d(node, graph) or (port.is_input and port.index == 1):
            self.computed_weight(node, graph, port, axis, pairs, fx)
            return
        weight = node.input(1)
        last = (a_rank - 1) if port.is_input else (y_rank - 1)
        if axis == last:
            fx.cut(weight, 0 if port.is_input else 1, pairs, role=Role.IN if port.is_input else Role.OUT)
        elif port.is_input:
            fx.to_output(0, axis + (y_rank - a_rank), pairs)
        else:
            fx.to_input(0, axis - (y_rank - a_rank), pairs)

    def computed_weight(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        """Y = A @ B of two computed tensors (attention: Q K^T, then P V).

        Batch axes (heads) couple A, B and Y where not broadcast; A's rows are
        Y's axis -2, B's columns Y's axis -1. The contracted axis couples A's
        last with B's -2 and changes the products: pruning it is inexact.
        """
        if graph.is_weight(node.input(1)) and port.is_input and port.index == 1:
            fx.freeze(f"weight '{node.input(1)}' is reached as data (shared with another consumer)")
            return
        if graph.is_weight(node.input(1)):
            fx.freeze(f"constant weight '{node.input(1)}' of rank {graph.rank(node.input(1))} (only 2-D is followed)")
            return
        ra, rb, ry = graph.rank(node.input(0)), graph.rank(node.input(1)), graph.rank(node.output(0))
        if ra is None or rb is None or ry is None or min(ra, rb, ry) < 2:
            fx.freeze("MatMul of computed tensors with unknown or 1-D operands")
            return
        kind, y_axis = _matmul_axis(port, axis, ra, rb, ry)
        if kind == "k":
            fx.inexact("prunes the contracted axis of a MatMul of two computed tensors (inside attention heads)")
            if port.index == 0:
                fx.to_input(1, rb - 2, pairs)
            else:
                fx.to_input(0, ra - 1, pairs)
            return
        if port.is_input:
            fx.to_output(0, y_axis, pairs)
        if kind == "m" and not (port.is_input and port.index == 0):
            fx.to_input(0, ra - 2, pairs)
        elif kind == "n" and not (port.is_input and port.index == 1):
            fx.to_input(1, rb - 1, pairs)
        elif kind == "batch":
            fx.label("attention heads")
            for i in (0, 1):
                if not (port.is_input and port.index == i):
                    broadcast_to_input(fx, graph, node, i, y_axis, ry, pairs)


def _matmul_axis(port: Port, axis: int, ra: int, rb: int, ry: int) -> tuple[str, int]:
    """Kind of a MatMul axis ("k" contracted, "m" rows, "n" columns, "batch") and its axis in Y."""
    if not port.is_input:
        return ("n" if axis == ry - 1 else "m" if axis == ry - 2 else "batch"), axis
    rank = ra if port.index == 0 else rb
    if axis == rank - 1:
        return ("k", -1) if port.index == 0 else ("n", ry - 1)
    if axis == rank - 2:
        return ("m", ry - 2) if port.index == 0 else ("k", -1)
    return "batch", axis + (ry - rank)
