"""ONNX Runtime's com.microsoft.DynamicQuantizeLSTM: an LSTM with int8 weights stored transposed.

W is [dirs, I, 4H] and R [dirs, H, 4H] (gate rows on the last axis, unlike
LSTM's [dirs, 4H, .]); inputs 8..11 are W's and R's scales and zero points,
per direction [dirs] or per gate row [dirs, 4H]. Everything else (B, the
initial states, the peepholes, the outputs) is laid out as in LSTM.
"""
from __future__ import annotations

from typing import Iterator

from ..indexmap import Pairs
from ..ir import Graph, Node
from ..kinds import Role
from .base import Effects, Port, Rule, register
from .recurrent import FEATURE_AXIS, HIDDEN_AXIS, follows_hidden, gate_rows, hidden_to_states

W_PARAMS, R_PARAMS = (8, 9), (10, 11)
# ONNX Runtime quantizes X and the hidden state of every step with a scale from their whole range
_DYNAMIC = "X and the hidden state are quantized with a scale from the range of every unit"


@register("DynamicQuantizeLSTM", domain="com.microsoft")
class DynamicQuantizeLSTMRule(Rule):
    """LSTM hidden units with int8 W / R stored transposed (gate rows last), their scales and zero points."""

    def roots(self, node: Node, graph: Graph) -> Iterator[tuple[str, int]]:
        for j, axis in HIDDEN_AXIS.items():
            if node.output(j):
                yield node.output(j), axis
                return

    def macs(self, node: Node, graph: Graph) -> int:
        w, r, x = graph.shape(node.input(1)), graph.shape(node.input(2)), graph.shape(node.input(0))
        if w is None or r is None or x is None or None in x or None in w or None in r:
            return 0
        return int(x[0]) * int(x[1]) * int(w[0]) * int(w[2]) * (int(w[1]) + int(r[1]))

    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        """LSTM's: Y [steps, dirs, batch, H], Y_h and Y_c [dirs, batch, H] (layout 0; 1: batch first)."""
        x, w = (list(input_shapes) + [None, None])[:2]
        hidden = int(node.attr("hidden_size", 0))
        if x is None or len(x) != 3 or hidden <= 0:
            return None
        bidirectional = node.attr("direction", "forward") in ("bidirectional", b"bidirectional")
        dirs = w[0] if w is not None else (2 if bidirectional else 1)
        if int(node.attr("layout", 0)):
            batch, steps = x[0], x[1]
            return [(batch, steps, dirs, hidden), (batch, dirs, hidden), (batch, dirs, hidden)]
        steps, batch = x[0], x[1]
        return [(steps, dirs, batch, hidden), (dirs, batch, hidden), (dirs, batch, hidden)]

    def integer_weights(self, node: Node, graph: Graph) -> tuple[tuple[int, int], ...]:
        return ((1, 9), (2, 11))

    def zero_of(self, node: Node, graph: Graph, tensor: str):
        """Zero point of W or R, per direction [dirs] or per gate row [dirs, 4H]."""
        for i, zp_input in ((1, 9), (2, 11)):
            if node.input(i) == tensor and node.input(zp_input):
                zp = graph.const(node.input(zp_input))
                if zp is not None:
                    return zp.reshape(zp.shape[0], 1, 1) if zp.ndim == 1 else zp[:, None, :]
        return None

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        for i in (1, 2, 3, 7) + W_PARAMS + R_PARAMS:
            if node.input(i) and not graph.is_weight(node.input(i)):
                fx.freeze(f"weight '{node.input(i)}' is computed at run time")
                return
        if port.is_input and port.index == 0:
            if axis != FEATURE_AXIS:
                fx.freeze(f"input X is followed along axis {axis} (steps or batch), not features")
                return
            fx.cut(node.input(1), 1, pairs, role=Role.IN)
            fx.shared_range(_DYNAMIC)
            return
        if not follows_hidden(port, axis, fx):
            return
        self._hidden(node, graph, port, pairs, fx)

    def _hidden(self, node: Node, graph: Graph, port: Port, pairs: Pairs, fx: Effects) -> None:
        hidden = int(node.attr("hidden_size", graph.dim(node.input(2), 1) or 0))
        rows = gate_rows(pairs, hidden, 4)
        fx.cut(node.input(1), 2, rows, role=Role.OUT)
        fx.cut(node.input(2), 2, rows, role=Role.OUT)
        fx.cut(node.input(2), 1, pairs, role=Role.IN)
        for i in W_PARAMS + R_PARAMS:  # per gate row [dirs, 4H]; per direction [dirs] stays
            if node.input(i) and graph.rank(node.input(i)) == 2:
                fx.cut(node.input(i), 1, rows, role=Role.OUT)
        if node.input(3):
            fx.cut(node.input(3), 1, gate_rows(pairs, hidden, 8), role=Role.OUT)
        if node.input(7):
            fx.cut(node.input(7), 1, gate_rows(pairs, hidden, 3), role=Role.OUT)
        hidden_to_states(node, port, pairs, fx)
        fx.edit_attr("hidden_size", -1, next(self.roots(node, graph)))
        fx.label("DynamicQuantizeLSTM hidden units")
        fx.shared_range(_DYNAMIC)
