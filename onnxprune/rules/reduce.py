"""Reductions and normalising activations over an axis.

Reducing over the channel axis leaves no channels in the output but changes
the statistic (RMSNorm, LayerNorm written out): the group is inexact.
Normalising (Softmax) over it, or ArgMax over it, freezes the space. Over
any other axis the channel axis passes through (renumbered when the reduced
axes are dropped).
"""
from __future__ import annotations

from ..indexmap import Pairs
from ..ir import Graph, Node
from .base import Effects, Port, Rule, const_ints, positive_axis, register

REDUCE = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
          "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")


@register(*REDUCE, "ArgMax", "ArgMin")
class ReduceRule(Rule):
    """Reducing over another axis passes the channels (renumbered); over the channel axis: inexact, ArgMax freezes."""

    def _axes(self, node: Node, graph: Graph, rank: int) -> list[int] | None:
        if "axis" in node.attrs or node.op_type in ("ArgMax", "ArgMin"):
            return [positive_axis(int(node.attr("axis", 0)), rank)]
        axes = node.attr("axes")
        if axes is None and node.input(1):
            axes = const_ints(graph, node.input(1))
            if axes is None:
                return None
        if not axes:
            return [] if int(node.attr("noop_with_empty_axes", 0)) else list(range(rank))
        return [positive_axis(a, rank) for a in axes]

    @staticmethod
    def reduce_channels(node: Node, axis: int, fx: Effects) -> None:
        """The output no longer has the channels (size 1 or dropped): only the statistic changes.

        RMSNorm's mean of squares and LayerNorm patterns reduce over the hidden axis.
        """
        if node.op_type in ("ArgMax", "ArgMin"):
            fx.freeze(f"{node.op_type} over the channel axis {axis} returns channel positions")
            return
        fx.inexact(f"{node.op_type} reduces over the pruned axis {axis}")

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        rank = fx.data_rank(port, "axes")
        if rank is None:
            return
        axes = self._axes(node, graph, rank)
        if axes is None:
            fx.freeze("reduction axes are computed at run time")
            return
        keep = int(node.attr("keepdims", 1))
        kept = [i for i in range(rank) if keep or i not in axes]
        if port.is_input:
            if axis in axes:
                self.reduce_channels(node, axis, fx)
                return
            fx.to_output(0, kept.index(axis), pairs)
        else:
            fx.to_input(0, kept[axis], pairs)


@register("Softmax", "LogSoftmax", "Hardmax", "LpNormalization")
class SoftmaxRule(Rule):
    """Opset < 13 Softmax normalises over the flattened axes [axis:]; opset >= 13 over `axis` only."""

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        rank = graph.rank(node.input(0))
        if rank is None:
            fx.freeze("input rank is unknown")
            return
        default = -1 if graph.opset >= 13 or node.op_type == "LpNormalization" else 1
        norm_axis = positive_axis(int(node.attr("axis", default)), rank)
        flattening = graph.opset < 13 and node.op_type != "LpNormalization"
        if axis == norm_axis or (flattening and axis > norm_axis):
            fx.freeze(f"{node.op_type} normalises over the channel axis {axis}")
            return
        if port.is_input:
            fx.to_output(0, axis, pairs)
        else:
            fx.to_input(0, axis, pairs)
