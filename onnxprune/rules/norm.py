"""Normalisation layers.

BatchNormalization / InstanceNormalization are per-channel on axis 1: their
parameters are cut with the channels and the function of the kept channels
is unchanged. LayerNormalization over the pruned axis changes the statistics
of the kept channels, so the group becomes inexact.
"""
from __future__ import annotations

from ..indexmap import Pairs
from ..ir import Graph, Node
from ..kinds import Role
from .base import Effects, Port, Rule, positive_axis, register


@register("BatchNormalization", "InstanceNormalization")
class PerChannelNormRule(Rule):
    """Inputs 1.. are [C] parameters (scale first); training-mode statistics outputs are [C] too."""

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        if port.index != 0:
            fx.freeze(f"{port.kind}put {port.index} holds per-channel statistics, not data")
            return
        if port.is_input:
            fx.to_output(0, axis, pairs)
        else:
            fx.to_input(0, axis, pairs)
        if axis != 1:
            return
        for i in range(1, len(node.inputs)):
            name = node.input(i)
            if not graph.is_weight(name):
                fx.freeze(f"parameter input '{name}' is computed at run time")
                return
            fx.cut(name, 0, pairs, role=Role.OUT, scale=(i == 1))
        for j in range(1, len(node.outputs)):
            fx.to_output(j, 0, pairs)


@register("LayerNormalization")
class LayerNormRule(Rule):
    """Normalises over axes [axis, rank); Scale and B cover those axes."""

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        rank = fx.data_through(port, axis, pairs, "normalisation parameters")
        if rank is None:
            return
        start = positive_axis(int(node.attr("axis", -1)), rank)
        if axis < start:
            for j in (1, 2):
                fx.to_output(j, axis, pairs)
            return
        fx.inexact("LayerNormalization normalises over the pruned axis")
        for i in (1, 2):
            name = node.input(i)
            if not name:
                continue
            param_rank = graph.rank(name)
            aligned = axis - (rank - param_rank) if param_rank is not None else -1
            if aligned < 0 or graph.dim(name, aligned) == 1:
                continue
            if not graph.is_weight(name):
                fx.freeze(f"parameter input '{name}' is computed at run time")
                return
            fx.cut(name, aligned, pairs, role=Role.OUT, scale=(i == 1))
