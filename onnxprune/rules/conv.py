"""Conv and ConvTranspose: filters (output side) and input channels (input side).

Conv weight is [M, C/g, k...]; ConvTranspose weight is [C, M/g, k...]. With
Cg = C/g input and Mg = M/g output channels per group, input channel c sits
in group c // Cg and output channel m in group m // Mg.

* group == 1: input and output channels are independent spaces.
* "whole groups" (depthwise convs, and grouped convs with at least as many
  groups as channels per group, e.g. ResNeXt 32x4d): a channel stands for its
  whole group, so both sides are one space: removing group j removes input
  channels j*Cg..j*Cg+Cg-1, filters j*Mg..j*Mg+Mg-1 and their weight rows,
  and `group` follows the new channel count / Cg. No weight column changes.
* "within groups" (few wide groups, e.g. RegNet stages with group=2..10): the
  sides stay independent, but every group must keep the same width, so a
  channel's within-group index is removed from every group at once (input
  positions {j*Cg + c % Cg}, filters {j*Mg + m % Mg}); `group` is unchanged.
  The widening couples roots, so the planner removes them together.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from .. import indexmap
from ..indexmap import Pairs
from ..ir import Graph, Node
from ..kinds import Role
from .base import Effects, Port, Rule, prod, register
from .forms import conv2d_form

WHOLE, WITHIN = "whole groups", "within groups"


def conv_layout(node: Node, graph: Graph) -> tuple[int, int, int, int] | None:
    """(in_axis, out_axis, in_channels, out_channels) of the weight, or None if unknown."""
    w = graph.shape(node.input(1))
    x = graph.shape(node.input(0))
    if w is None or x is None or len(x) < 2 or x[1] is None or w[0] is None or w[1] is None:
        return None
    group = int(node.attr("group", 1))
    if node.op_type == "ConvTranspose":
        return 0, 1, int(x[1]), int(w[1]) * group
    return 1, 0, int(x[1]), int(w[0])


def group_mode(node: Node, graph: Graph) -> str | None:
    """How a conv with group > 1 is pruned (WHOLE or WITHIN), or None when the layout is unknown or ragged."""
    layout = conv_layout(node, graph)
    group = int(node.attr("group", 1))
    if layout is None or group < 2 or layout[2] % group or layout[3] % group:
        return None
    cg, mg = layout[2] // group, layout[3] // group
    return WHOLE if group >= cg or cg < 2 or mg < 2 else WITHIN


def is_depthwise(node: Node, graph: Graph) -> bool:
    layout = conv_layout(node, graph)
    group = int(node.attr("group", 1))
    return layout is not None and group > 1 and group == layout[2] and layout[3] % group == 0


def _every_group(pairs: Pairs, width: int, groups: int) -> Pairs:
    """Position p becomes p % width + j*width for every group j (same root)."""
    within = pairs[:, 0] % width
    pos = (within[:, None] + width * np.arange(groups, dtype=np.int64)).reshape(-1)
    return np.stack([pos, np.repeat(pairs[:, 1], groups)], axis=1)


def _whole_group(pairs: Pairs, width: int, new_width: int) -> Pairs:
    """Position p (width channels per group) becomes every position of its group (new_width per group)."""
    groups = np.stack([pairs[:, 0] // width, pairs[:, 1]], axis=1)
    return indexmap.expand(groups, new_width)


def _within(pairs: Pairs, width: int) -> Pairs:
    return np.stack([pairs[:, 0] % width, pairs[:, 1]], axis=1)


class _ConvBase(Rule):
    rows_are_outputs = True

    def roots(self, node: Node, graph: Graph) -> Iterator[tuple[str, int]]:
        if int(node.attr("group", 1)) == 1 or group_mode(node, graph) == WITHIN:
            yield node.output(0), 1

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        layout = conv_layout(node, graph)
        if not graph.is_weight(node.input(1)):
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
                fx.cut(node.input(1), in_axis, pairs, role=Role.IN)
            else:
                self._cut_filters(node, out_axis, pairs, fx)
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
        fx.cut(node.input(1), out_axis, pairs, role=Role.OUT)
        if node.input(2):
            fx.cut(node.input(2), 0, pairs, role=Role.OUT)

    def grouped(self, node: Node, graph: Graph, port: Port, pairs: Pairs, layout, fx: Effects) -> None:
        """group > 1: whole groups go, or one within-group index goes from every group (module doc)."""
        group = int(node.attr("group", 1))
        mode = group_mode(node, graph)
        if mode is None:
            fx.freeze(f"group={group} does not divide {layout[2]} input / {layout[3]} output channels")
            return
        cg, mg = layout[2] // group, layout[3] // group
        if mode == WHOLE:
            self._whole(node, port, pairs, cg, mg, fx)
        elif port.is_input:
            self._within_inputs(node, pairs, cg, group, fx)
        else:
            self._within_filters(node, pairs, mg, group, fx)

    def _whole(self, node: Node, port: Port, pairs: Pairs, cg: int, mg: int, fx: Effects) -> None:
        width = cg if port.is_input else mg
        in_pairs, out_pairs = _whole_group(pairs, width, cg), _whole_group(pairs, width, mg)
        fx.to_input(0, 1, in_pairs)
        fx.to_output(0, 1, out_pairs)
        # Conv weight rows are output channels; ConvTranspose rows are input channels.
        fx.cut(node.input(1), 0, out_pairs if self.rows_are_outputs else in_pairs, role=Role.OUT)
        if node.input(2):
            fx.cut(node.input(2), 0, out_pairs, role=Role.OUT)
        fx.edit_attr("group", -1, (node.input(0), 1), div=cg)

    def _within_inputs(self, node: Node, pairs: Pairs, cg: int, group: int, fx: Effects) -> None:
        wide = _every_group(pairs, cg, group)
        fx.to_input(0, 1, wide)
        if self.rows_are_outputs:  # Conv: column c % Cg serves input c of every group
            fx.cut(node.input(1), 1, _within(wide, cg), role=Role.IN)
        else:  # ConvTranspose: rows are the input channels themselves
            fx.cut(node.input(1), 0, wide, role=Role.IN)

    def _within_filters(self, node: Node, pairs: Pairs, mg: int, group: int, fx: Effects) -> None:
        wide = _every_group(pairs, mg, group)
        fx.to_output(0, 1, wide)
        fx.cut(node.input(1), 0 if self.rows_are_outputs else 1,
               wide if self.rows_are_outputs else _within(wide, mg), role=Role.OUT)
        if node.input(2):
            fx.cut(node.input(2), 0, wide, role=Role.OUT)


@register("Conv")
class ConvRule(_ConvBase):
    """Conv: output side cuts W rows and bias; input side cuts W columns (role "in")."""

    def linear_form(self, node: Node, graph: Graph):
        return conv2d_form(node, graph)


@register("ConvTranspose")
class ConvTransposeRule(_ConvBase):
    """ConvTranspose: weight is [C, M/g, k...], so the axes swap roles."""

    rows_are_outputs = False
