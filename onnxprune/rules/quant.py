"""Quantization ops of the default domain: QDQ pairs and dynamic int8 (MatMulInteger, ConvInteger).

* QuantizeLinear / DequantizeLinear keep their input's shape: data channels
  pass straight through. Per-tensor scale and zero point serve every channel
  and are left as they are; per-axis ones (1-D along `axis`) are cut with the
  channels of that axis; blocked ones (`block_size`, same rank as the data)
  are cut along every other axis, and the blocked axis freezes. On a weight,
  the channels arrive from the consumer (a Conv's filters) through the
  dequantized tensor, so the int8 initializer itself is cut and stays int8.
* DynamicQuantizeLinear computes its scale from the range of the whole
  tensor, a range that always holds 0: removing channels that are exactly
  zero leaves it as it is, so the group is exact with its removed channels
  silenced at their source (`Effects.shared_range`; the oracle checks it so),
  and the pruned model quantizes with the range of the channels it keeps.
* MatMulInteger / ConvInteger are MatMul / Conv on integers; the weight's zero
  point is per-tensor or per output channel. ONNX Runtime's fused forms
  (com.microsoft DynamicQuantizeMatMul, MatMulIntegerToFloat) add B's scale
  and a bias, per tensor or per output feature.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from ..indexmap import Pairs
from ..ir import Graph, Node, standard_op_shapes
from ..kinds import Role
from .base import Effects, Port, Rule, positive_axis, register
from .conv import ConvRule
from .linear import MatMulRule


def _numel(graph: Graph, name: str) -> int | None:
    shape = graph.shape(name) if name else None
    if shape is None or None in shape:
        return None
    out = 1
    for d in shape:
        out *= int(d)
    return out


@register("QuantizeLinear", "DequantizeLinear", domain="com.microsoft")
@register("QuantizeLinear", "DequantizeLinear")
class QuantizeLinearRule(Rule):
    """y = saturate(round(x / scale) + zp) or y = (x - zp) * scale, per tensor, per axis or per block."""

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        rank = fx.data_through(port, axis, pairs, "the quantization scale and zero point")
        if rank is None:
            return
        scale_rank, count = graph.rank(node.input(1)), _numel(graph, node.input(1))
        if scale_rank is None or count is None:
            fx.freeze(f"shape of scale '{node.input(1)}' is unknown")
            return
        if count == 1 and scale_rank <= 1:
            return  # per tensor: one scale and zero point serve every channel
        q_axis = positive_axis(int(node.attr("axis", 1)), rank)
        if int(node.attr("block_size", 0)) > 0:
            if axis == q_axis:
                fx.freeze(f"blocked quantization (block_size {node.attr('block_size')}) along the pruned axis {axis}")
                return
            for i in (1, 2):
                fx.to_input(i, axis, pairs)
        elif axis == q_axis:
            for i in (1, 2):
                fx.to_input(i, 0, pairs)


    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        """x's shape: ONNX infers the standard op itself, but not on an input a contrib op's shape
        function typed as float (shape functions cannot name an integer output type)."""
        x = input_shapes[0] if input_shapes else None
        return None if x is None else [tuple(x)]

    def zero_of(self, node: Node, graph: Graph, tensor: str):
        """The zero point of a dequantized weight, shaped to broadcast along its axis."""
        zp = graph.const(node.input(2)) if node.op_type == "DequantizeLinear" and node.input(0) == tensor else None
        rank = graph.rank(tensor)
        if zp is None or rank is None or int(node.attr("block_size", 0)) > 0:
            return None
        if zp.size == 1:
            return zp.reshape(())
        shape = [1] * rank
        shape[positive_axis(int(node.attr("axis", 1)), rank)] = zp.size
        return zp.reshape(shape)

    def float_view(self, node: Node, graph: Graph, tensor: str):
        """(x - zero point) * scale of a dequantized weight (per tensor or per axis)."""
        scale = graph.const(node.input(1)) if node.op_type == "DequantizeLinear" and node.input(0) == tensor else None
        weight = graph.const(tensor)
        if scale is None or weight is None or int(node.attr("block_size", 0)) > 0:
            return None
        values = weight.astype(np.float32)
        zero = self.zero_of(node, graph, tensor)
        if zero is not None:
            values = values - zero.astype(np.float32)
        shape = [1] * values.ndim
        if scale.size > 1:
            shape[positive_axis(int(node.attr("axis", 1)), values.ndim)] = scale.size
        return values * scale.astype(np.float32).reshape(shape)

    def oracle_identity(self, node: Node, graph: Graph) -> bool:
        """A QuantizeLinear of an activation read only by DequantizeLinear nodes, and those nodes."""
        if node.op_type == "DequantizeLinear":
            q = graph.producer(node.input(0))
            return q is not None and q.op_type == "QuantizeLinear" and self.oracle_identity(q, graph)
        readers = graph.consumers(node.output(0))
        return (not graph.is_weight(node.input(0)) and not graph.is_graph_output(node.output(0)) and bool(readers)
                and all(r.op_type == "DequantizeLinear" and i == 0 for r, i in readers))


@register("DynamicQuantizeLinear")
class DynamicQuantizeLinearRule(Rule):
    """(y, y_scale, y_zero_point) = quantize x with a scale from the range of all of x."""

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        if port.index != 0:
            fx.freeze(f"{port.kind}put {port.index} is the per-tensor scale or zero point")
            return
        fx.to_ports(port, axis, pairs, [0], [0])
        fx.shared_range("dynamic quantization takes its scale from the range of every channel")


def _with_inputs(node: Node, inputs: list[str]) -> Node:
    return dataclasses.replace(node, inputs=inputs)


def _per_channel(graph: Graph, name: str) -> str:
    """`name` when it holds one value per output channel, '' when it is per tensor or absent."""
    count = _numel(graph, name)
    return name if count is not None and count > 1 else ""


def _matmul_shapes(input_shapes: list) -> list | None:
    """MatMul's on A (input 0) and B (input 1)."""
    a, b = (list(input_shapes) + [None, None])[:2]
    return standard_op_shapes("MatMul", {}, [a, b]) if a is not None and b is not None else None


class QuantMatMulBase(Rule):
    """Y = A @ dequantized B, B [K, N] a weight: MatMul's channels, plus B's per-column (and bias)
    inputs cut with the output features; every other extra input (A's scale and zero point) must be
    per tensor."""

    _matmul = MatMulRule()
    per_column: tuple[int, ...] = ()  # inputs holding one value per output feature [N] (or one in all)
    per_tensor: tuple[int, ...] = ()  # inputs that must hold a single value
    dynamic = False  # quantizes A with a scale from its own range

    def roots(self, node: Node, graph: Graph) -> Iterator[tuple[str, int]]:
        return self._matmul.roots(node, graph)

    def macs(self, node: Node, graph: Graph) -> int:
        return self._matmul.macs(node, graph)

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        if port.is_input and port.index >= 2:
            fx.freeze(f"input {port.index} is a quantization parameter, not data")
            return
        for i in self.per_tensor:
            if _per_channel(graph, node.input(i)):
                fx.freeze(f"input {i} '{node.input(i)}' holds more than one value (per-row quantization of A)")
                return
        if not graph.is_weight(node.input(1)):
            fx.freeze(f"B '{node.input(1)}' is computed at run time (integer MatMul of two activations)")
            return
        self._matmul.propagate(_with_inputs(node, node.inputs[:2]), graph, port, axis, pairs, fx)
        if self.dynamic and axis == (graph.rank(port.tensor(node)) or 0) - 1 and port.is_input:
            fx.shared_range("dynamic quantization takes its scale from the range of every channel")
        y_rank = graph.rank(node.output(0)) or 0
        if port.is_input or axis != y_rank - 1:
            return
        for i in self.per_column:
            name = _per_channel(graph, node.input(i))
            if name:
                fx.cut(name, 0, pairs, role=Role.OUT)


@register("MatMulInteger")
class MatMulIntegerRule(QuantMatMulBase):
    """Y = (A - a_zp) @ (B - b_zp), int32; b_zp per tensor or [N]."""

    per_column, per_tensor = (3,), (2,)

    def integer_weights(self, node: Node, graph: Graph) -> tuple[tuple[int, int], ...]:
        return ((1, 3),)


@register("DynamicQuantizeMatMul", domain="com.microsoft")
class DynamicQuantizeMatMulRule(QuantMatMulBase):
    """Y = quantize(A) @ dequantize(B, b_scale, b_zp) + bias; A is quantized with its own range."""

    per_column, dynamic = (2, 3, 4), True

    def integer_weights(self, node: Node, graph: Graph) -> tuple[tuple[int, int], ...]:
        return ((1, 3),)

    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        return _matmul_shapes(input_shapes)


@register("MatMulIntegerToFloat", domain="com.microsoft")
class MatMulIntegerToFloatRule(QuantMatMulBase):
    """Y = (A - a_zp) a_scale @ (B - b_zp) b_scale + bias (inputs A, B, a_scale, b_scale, a_zp, b_zp, bias)."""

    per_column, per_tensor = (3, 5, 6), (2, 4)

    def integer_weights(self, node: Node, graph: Graph) -> tuple[tuple[int, int], ...]:
        return ((1, 5),)

    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        return _matmul_shapes(input_shapes)


@register("ConvInteger")
class ConvIntegerRule(Rule):
    """Y = conv(x - x_zp, w - w_zp), int32, no bias; w_zp per tensor or one per filter (input 3)."""

    _conv = ConvRule()

    def roots(self, node: Node, graph: Graph) -> Iterator[tuple[str, int]]:
        return self._conv.roots(node, graph)

    def macs(self, node: Node, graph: Graph) -> int:
        return self._conv.macs(node, graph)

    def integer_weights(self, node: Node, graph: Graph) -> tuple[tuple[int, int], ...]:
        return ((1, 3),)

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        if port.is_input and port.index >= 2:
            fx.freeze(f"input {port.index} is a zero point, not data")
            return
        # the conv rule cuts input 2 with the filters (a bias): here that is the per-filter zero point
        view = _with_inputs(node, [node.input(0), node.input(1), _per_channel(graph, node.input(3))])
        self._conv.propagate(view, graph, port, axis, pairs, fx)
