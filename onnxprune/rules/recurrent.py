"""Recurrent layers: LSTM, GRU, RNN. Their hidden units are a channel space of their own.

Hidden unit k owns row k of every gate block of W [dirs, gates*H, I], R
[dirs, gates*H, H] and both bias halves of B [dirs, 2*gates*H] (LSTM gates
i o f c, GRU z r h, RNN one), column k of R (the recurrence reads it: role
"in"), entry k of initial_h / initial_c, of the peepholes P [dirs, 3H], and
channel k of the outputs Y [.., dirs, .., H], Y_h, Y_c. Both directions of a
bidirectional layer share hidden_size, so they share the index space. The
input features (X axis 2) are W's last axis.

Hidden units are independent apart from R's columns, so removing a unit whose
readers (R columns, consumers of Y) see zeros leaves the others unchanged.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from ..indexmap import Pairs
from ..ir import Graph, Node
from ..kinds import Role
from .base import Effects, Port, Rule, register

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
HIDDEN_INPUTS = (5, 6)  # initial_h, initial_c
FEATURE_AXIS = 2  # of X in both layouts
HIDDEN_AXIS = {0: 3, 1: 2, 2: 2}  # output index -> axis of hidden units (Y, Y_h, Y_c; both layouts)


def gate_rows(pairs: Pairs, hidden: int, blocks: int) -> Pairs:
    """Unit k -> rows k, H+k, ..., (blocks-1)*H+k."""
    offsets = np.arange(blocks, dtype=np.int64) * hidden
    pos = (pairs[:, 0, None] + offsets).reshape(-1)
    return np.stack([pos, np.repeat(pairs[:, 1], blocks)], axis=1)


@register("LSTM", "GRU", "RNN")
class RecurrentRule(Rule):
    """Hidden unit k: row k of every gate block of W, R, B, column k of R (role "in"), channel k of Y, Y_h, Y_c."""

    def roots(self, node: Node, graph: Graph) -> Iterator[tuple[str, int]]:
        space = self._hidden_space(node)
        if space is not None:
            yield space

    @staticmethod
    def _hidden_space(node: Node) -> tuple[str, int] | None:
        for j, axis in HIDDEN_AXIS.items():
            if node.output(j):
                return node.output(j), axis
        return None

    def macs(self, node: Node, graph: Graph) -> int:
        """Every step of every direction multiplies W by x_t and R by h_{t-1}."""
        w, r, x = graph.shape(node.input(1)), graph.shape(node.input(2)), graph.shape(node.input(0))
        if w is None or r is None or x is None or None in x:
            return 0
        steps_batch = int(x[0]) * int(x[1])
        return steps_batch * int(w[0]) * int(w[1]) * (int(w[2]) + int(r[2]))

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        for i in (1, 2, 3, 7):
            if node.input(i) and not graph.is_weight(node.input(i)):
                fx.freeze(f"weight '{node.input(i)}' is computed at run time")
                return
        if port.is_input and port.index == 0:
            if axis != FEATURE_AXIS:
                fx.freeze(f"input X is followed along axis {axis} (steps or batch), not features")
                return
            fx.cut(node.input(1), 2, pairs, role=Role.IN)
            return
        if not follows_hidden(port, axis, fx):
            return
        self._hidden(node, graph, port, pairs, fx)

    def _hidden(self, node: Node, graph: Graph, port: Port, pairs: Pairs, fx: Effects) -> None:
        space = self._hidden_space(node)
        if space is None:
            fx.freeze("no output holds the hidden units (Y, Y_h and Y_c are all absent)")
            return
        hidden = int(node.attr("hidden_size", graph.dim(node.input(2), 2) or 0))
        gates = GATES[node.op_type]
        fx.cut(node.input(1), 1, gate_rows(pairs, hidden, gates), role=Role.OUT)
        fx.cut(node.input(2), 1, gate_rows(pairs, hidden, gates), role=Role.OUT)
        fx.cut(node.input(2), 2, pairs, role=Role.IN)
        if node.input(3):
            fx.cut(node.input(3), 1, gate_rows(pairs, hidden, 2 * gates), role=Role.OUT)
        if node.input(7):
            fx.cut(node.input(7), 1, gate_rows(pairs, hidden, 3), role=Role.OUT)
        hidden_to_states(node, port, pairs, fx)
        fx.edit_attr("hidden_size", -1, space)
        fx.label(f"{node.op_type} hidden units")


def follows_hidden(port: Port, axis: int, fx: Effects) -> bool:
    """Whether channels at (port, axis) are hidden units (an initial state's or an output's hidden
    axis); else freeze and say which axis was reached."""
    if (port.is_input and port.index in HIDDEN_INPUTS and axis == 2) or \
            (not port.is_input and HIDDEN_AXIS.get(port.index) == axis):
        return True
    fx.freeze(f"{port.kind}put {port.index} is followed along axis {axis}, not hidden units")
    return False


def hidden_to_states(node: Node, port: Port, pairs: Pairs, fx: Effects) -> None:
    """The hidden units reach every initial state input and every output, but the port they came from."""
    for i in HIDDEN_INPUTS:
        if i < len(node.inputs) and not (port.is_input and port.index == i):
            fx.to_input(i, 2, pairs)
    for j, axis in HIDDEN_AXIS.items():
        if port.is_input or port.index != j:
            fx.to_output(j, axis, pairs)
