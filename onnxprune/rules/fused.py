"""ONNX Runtime's fused ops (domain com.microsoft): a Conv, Gemm or MatMul with more folded in.

ORT's graph optimizer (ORT_ENABLE_EXTENDED) saves them in optimized models:

* FusedConv: Y = act(Conv(X, W, B) + Z). The activation is elementwise and the
  optional Z (a residual added before it) has Y's shape, so Z carries the
  filters' channels: otherwise the Conv rule.
* FusedGemm: Y = act(Gemm(A, B, C)): the Gemm rule.
* FusedMatMul: Y = alpha * op(A) @ op(B), op a transpose of the last two axes
  (transA / transB): the MatMul rule on the transposed views.

For compensation, FusedConv and FusedGemm are the linear consumers their base
op is: the bias they fold in is added before the activation (and Z), which is
where a compensating bias belongs. FusedMatMul (alpha, transposes) has none.
"""
from __future__ import annotations

import numpy as np

from ..indexmap import Pairs
from ..ir import Graph, Node, standard_op_shapes
from .base import Effects, Port, register
from .conv import ConvRule
from .linear import GemmRule, MatMulRule, _matmul_macs

MS = "com.microsoft"
_ACTIVATION_ATTRS = ("activation", "activation_params", "activation_alpha", "activation_beta", "activation_gamma")


def _plain_attrs(node: Node) -> dict:
    return {k: v for k, v in node.attrs.items() if k not in _ACTIVATION_ATTRS}


def _as_standard(op_type: str, node: Node, input_shapes: list) -> list | None:
    """Output shape of the node computed as the standard op it extends (its first three inputs)."""
    shapes = list(input_shapes[:3])
    if len(shapes) < 2 or shapes[0] is None or shapes[1] is None:
        return None
    if len(shapes) == 3 and shapes[2] is None:
        shapes = shapes[:2] if not node.input(2) else None
    return standard_op_shapes(op_type, _plain_attrs(node), shapes) if shapes else None


@register("FusedConv", domain=MS)
class FusedConvRule(ConvRule):
    """Conv channels; Z (input 3) shares the output's channels."""

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        from_z = port.is_input and port.index == 3
        if from_z:
            if axis != 1:
                fx.freeze(f"channels of the summand input 3 along axis {axis} are not conv channels")
                return
            fx.to_output(0, 1, pairs)
            port = Port("out", 0)
        super().propagate(node, graph, port, axis, pairs, fx)
        if not node.input(3) or fx.frozen_reason:
            return
        out = [p for name, ax, p, _ in fx.forwards if name == node.output(0) and ax == 1]
        if not port.is_input:
            out.append(pairs)
        if out:
            fx.to_input(3, 1, np.concatenate(out))

    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        return _as_standard("Conv", node, input_shapes)


@register("FusedGemm", domain=MS)
class FusedGemmRule(GemmRule):
    """Gemm channels; the activation is elementwise."""

    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        return _as_standard("Gemm", node, input_shapes)


def _swap_last(axis: int, rank: int | None) -> int:
    """Axis of a tensor in its view with the last two axes transposed."""
    if rank is None or rank < 2:
        return axis
    axis = axis + rank if axis < 0 else axis
    return {rank - 1: rank - 2, rank - 2: rank - 1}.get(axis, axis)


@register("FusedMatMul", domain=MS)
class FusedMatMulRule(MatMulRule):
    """MatMul of op(A) and op(B): axes are mapped into the transposed views and back."""

    def _trans(self, node: Node) -> tuple[bool, bool]:
        return bool(node.attr("transA", 0)), bool(node.attr("transB", 0))

    def roots(self, node: Node, graph: Graph):
        if not (node.attr("transBatchA", 0) or node.attr("transBatchB", 0)):
            yield from super().roots(node, graph)

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        if node.attr("transBatchA", 0) or node.attr("transBatchB", 0):
            fx.freeze("transBatchA / transBatchB move batch axes into the product")
            return
        trans = self._trans(node)
        if port.is_input and trans[port.index]:
            axis = _swap_last(axis, graph.rank(node.input(port.index)))
        start = len(fx.forwards), len(fx.cuts)
        super().propagate(node, graph, port, axis, pairs, fx)
        for k in range(start[0], len(fx.forwards)):
            name, ax, p, to = fx.forwards[k]
            if to.is_input and trans[to.index]:
                fx.forwards[k] = (name, _swap_last(ax, graph.rank(name)), p, to)
        for cut in fx.cuts[start[1]:]:
            if trans[1] and cut.tensor == node.input(1):
                cut.axis = 1 - cut.axis

    def macs(self, node: Node, graph: Graph) -> int:
        return _matmul_macs(graph, node.input(0), node.output(0), -2 if self._trans(node)[0] else -1)

    def linear_form(self, node: Node, graph: Graph):
        return None

    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        a, b = (input_shapes + [None, None])[:2]
        if a is None or b is None or node.attr("transBatchA", 0) or node.attr("transBatchB", 0):
            return None
        trans = self._trans(node)
        a, b = [tuple(s[:-2]) + (s[-1], s[-2]) if t and len(s) >= 2 else tuple(s) for s, t in ((a, trans[0]), (b, trans[1]))]
        return standard_op_shapes("MatMul", {}, [a, b])
