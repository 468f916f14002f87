"""ONNX Runtime's fused ops (domain com.microsoft): a Conv, Gemm or MatMul with more folded in.

ORT's graph optimizer (ORT_ENABLE_EXTENDED) saves them in optimized models:

* FusedConv: Y = act(Conv(X, W, B) + Z). The activation is elementwise and the
  optional Z (a residual added before it) has Y's shape, so Z carries the
  filters' channels: otherwise the Conv rule.
* FusedGemm: Y = act(Gemm(A, B, C)): the Gemm rule.
* FusedMatMul: Y = alpha * view(A) @ view(B), a view transposing the last two
  axes (transA / transB) after moving axis 0 behind the batch axes
  (transBatchA / transBatchB): the MatMul rule on the views.

For compensation, FusedConv and FusedGemm are the linear consumers their base
op is: the bias they fold in is added before the activation (and Z), which is
where a compensating bias belongs. FusedMatMul (alpha, transposes) has none.
"""
from __future__ import annotations

from typing import cast

import numpy as np

from ..indexmap import Pairs
from ..ir import Graph, Node, standard_op_shapes
from ..kinds import PortKind
from .base import Effects, Port, positive_axis, register
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
        if node.input(2):  # a bias of unknown shape
            return None
        shapes = shapes[:2]
    return standard_op_shapes(op_type, _plain_attrs(node), shapes)


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
            port = Port(PortKind.OUT, 0)
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


def view_perm(rank: int, trans: bool, trans_batch: bool) -> list[int]:
    """Axes of an operand in the order FusedMatMul multiplies them: transBatch moves axis 0 behind the
    batch axes ([a0, a1, .., a_r-2, a_r-1] -> [a1, .., a_r-2, a0, a_r-1]), then trans swaps the last two."""
    perm = list(range(rank))
    if trans_batch and rank >= 3:
        perm = list(range(1, rank - 1)) + [0, rank - 1]
    if trans and rank >= 2:
        perm[-2], perm[-1] = perm[-1], perm[-2]
    return perm


def _operand_perm(node: Node, rank: int, operand: str) -> list[int]:
    """view_perm of FusedMatMul's operand "A" or "B" from the node's trans / transBatch attributes."""
    return view_perm(rank, bool(node.attr(f"trans{operand}", 0)), bool(node.attr(f"transBatch{operand}", 0)))


class _Views:
    """The graph as FusedMatMul's product sees it: its operands as their permuted views."""

    def __init__(self, graph: Graph, perms: dict[str, list[int]]):
        self._graph, self._perms = graph, perms

    def shape(self, name: str):
        shape, perm = self._graph.shape(name), self._perms.get(name)
        return shape if shape is None or perm is None else tuple(shape[i] for i in perm)

    def dim(self, name: str, axis: int):
        shape = self.shape(name)
        return None if shape is None or not -len(shape) <= axis < len(shape) else shape[axis]

    def __getattr__(self, attr: str):
        return getattr(self._graph, attr)


@register("FusedMatMul", domain=MS)
class FusedMatMulRule(MatMulRule):
    """MatMul of the operands' views (module doc): axes are mapped into the views and back."""

    def perms(self, node: Node, ranks: list[int | None]) -> list[list[int] | None]:
        return [None if r is None else _operand_perm(node, r, ab) for r, ab in zip(ranks, "AB")]

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        pa, pb = self.perms(node, [graph.rank(node.input(0)), graph.rank(node.input(1))])
        if pa is None or pb is None:
            fx.freeze("rank of the FusedMatMul operands is unknown")
            return
        perms = (pa, pb)
        if node.input(0) == node.input(1) and perms[0] != perms[1]:
            fx.freeze("one tensor is both operands, in two different views")
            return
        if port.is_input:
            axis = perms[port.index].index(positive_axis(axis, len(perms[port.index])))
        start = len(fx.forwards), len(fx.cuts)
        views = cast(Graph, _Views(graph, {node.input(i): perms[i] for i in (0, 1)}))  # the graph, operands permuted
        super().propagate(node, views, port, axis, pairs, fx)
        for k in range(start[0], len(fx.forwards)):
            name, ax, p, to = fx.forwards[k]
            if to.is_input:
                fx.forwards[k] = (name, perms[to.index][ax], p, to)
        for cut in fx.cuts[start[1]:]:
            if cut.tensor == node.input(1):
                cut.axis = perms[1][cut.axis]

    def macs(self, node: Node, graph: Graph) -> int:
        perm = self.perms(node, [graph.rank(node.input(0)), 0])[0]
        return 0 if perm is None else _matmul_macs(graph, node.input(0), node.output(0), perm[-1])

    def linear_form(self, node: Node, graph: Graph):
        return None

    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        a, b = (list(input_shapes) + [None, None])[:2]
        if a is None or b is None:
            return None
        pa, pb = _operand_perm(node, len(a), "A"), _operand_perm(node, len(b), "B")
        return standard_op_shapes("MatMul", {}, [tuple(a[i] for i in pa), tuple(b[i] for i in pb)])
