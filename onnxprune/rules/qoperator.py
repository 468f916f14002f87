"""QOperator quantized ops: integer ops that carry their own scales and zero points.

QLinearConv, QLinearMatMul (ONNX) and com.microsoft QGemm compute a Conv /
MatMul / Gemm on int8 data and weights; QLinearAdd / QLinearMul, the pools,
activations and QLinearSoftmax of com.microsoft are their float ops on int8
data. The float op's rule runs on a view of the node with only its data,
weight and bias inputs;
the weight's per-output-channel scale and zero point are cut with every cut of
the weight's output axis. Activation scales and zero points must be per tensor.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from ..indexmap import Pairs
from ..ir import Graph, Node, standard_op_shapes
from ..kinds import PortKind
from .base import Effects, Port, Rule, broadcast_through, positive_axis, register
from .concat_split import ConcatRule
from .conv import ConvRule
from .linear import GemmRule, MatMulRule


def delegate(rule: Rule, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects,
             inputs: tuple[int, ...]) -> Effects | None:
    """Run `rule` on a view of `node` whose inputs are the node's inputs `inputs` (absent ones read ''),
    and record its effects in `fx` with the node's own input numbers. None when `port` is not one
    of the view's inputs."""
    view = dataclasses.replace(node, inputs=[node.input(i) for i in inputs])
    if port.is_input:
        if port.index not in inputs:
            return None
        port = Port(PortKind.IN, inputs.index(port.index))
    sub = Effects(view, graph, const_role=fx.const_role)
    rule.propagate(view, graph, port, axis, pairs, sub)
    fx.forwards.extend((t, a, p, Port(PortKind.IN, inputs[q.index]) if q.is_input else q)
                       for t, a, p, q in sub.forwards)
    fx.cuts.extend(sub.cuts)
    fx.edits.extend(sub.edits)
    fx.roles.update(sub.roles)
    fx.inexact_reasons.extend(sub.inexact_reasons)
    for kind in sub.kinds:
        fx.label(kind)
    if sub.frozen_reason and fx.frozen_reason is None:
        fx.frozen_reason = sub.frozen_reason
    return sub


def _count(graph: Graph, name: str) -> int | None:
    shape = graph.shape(name) if name else None
    return None if shape is None or None in shape else int(np.prod(shape, dtype=np.int64))


def _at(input_shapes: list, i: int):
    return input_shapes[i] if i < len(input_shapes) else None


def _per_tensor(graph: Graph, node: Node, inputs: tuple[int, ...], fx: Effects) -> bool:
    for i in inputs:
        count = _count(graph, node.input(i))
        if node.input(i) and count != 1:
            fx.freeze(f"activation scale or zero point '{node.input(i)}' is not per tensor")
            return False
    return True


class _QLinearWeighted(Rule):
    """A float rule on (data, weight, bias) inputs, plus the weight's per-channel scale and zero point."""

    float_rule: Rule
    view: tuple[int, ...] = ()  # node inputs seen by the float rule
    weight_params: tuple[int, int] = (0, 0)  # the weight's scale and zero point
    activation_params: tuple[int, ...] = ()

    def roots(self, node: Node, graph: Graph) -> Iterator[tuple[str, int]]:
        return self.float_rule.roots(self._view(node), graph)

    def macs(self, node: Node, graph: Graph) -> int:
        return self.float_rule.macs(self._view(node), graph)

    def _view(self, node: Node) -> Node:
        return dataclasses.replace(node, inputs=[node.input(i) for i in self.view])

    def weight_out_axis(self, node: Node) -> int:
        return 0

    def zero_of(self, node: Node, graph: Graph, tensor: str):
        """The weight's zero point, broadcast along its output axis."""
        weight = node.input(self.view[1])
        zp = graph.const(node.input(self.weight_params[1])) if node.input(self.weight_params[1]) else None
        if tensor != weight or zp is None:
            return None
        if zp.size == 1:
            return zp.reshape(())
        shape = [1] * len(graph.const_shape(weight))
        shape[self.weight_out_axis(node)] = zp.size
        return zp.reshape(shape)

    def float_view(self, node: Node, graph: Graph, tensor: str):
        """(w - zero point) * scale of the weight, per tensor or per output channel."""
        scale, weight = graph.const(node.input(self.weight_params[0])), graph.const(tensor)
        if tensor != node.input(self.view[1]) or scale is None or weight is None:
            return None
        values = weight.astype(np.float32)
        zero = self.zero_of(node, graph, tensor)
        if zero is not None:
            values = values - zero.astype(np.float32)
        if scale.size > 1:
            shape = [1] * values.ndim
            shape[self.weight_out_axis(node)] = scale.size
            return values * scale.astype(np.float32).reshape(shape)
        return values * np.float32(scale.reshape(()))

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        if not _per_tensor(graph, node, self.activation_params, fx):
            return
        sub = delegate(self.float_rule, node, graph, port, axis, pairs, fx, self.view)
        if sub is None:
            fx.freeze(f"input {port.index} is a quantization parameter, not data")
            return
        weight, out_axis = node.input(self.view[1]), self.weight_out_axis(node)
        for cut in sub.cuts:
            if cut.tensor == weight and cut.axis == out_axis:
                for i in self.weight_params:
                    if node.input(i) and (_count(graph, node.input(i)) or 1) > 1:
                        fx.cut(node.input(i), 0, cut.pairs, role=cut.role)


@register("QLinearConv")
class QLinearConvRule(_QLinearWeighted):
    """Inputs x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B (int32)."""

    float_rule, view, weight_params, activation_params = ConvRule(), (0, 3, 8), (4, 5), (1, 2, 6, 7)

    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        """Conv's on x and w: ONNX infers QLinearConv itself, but not on an input a contrib op's shape
        function typed as float (shape functions cannot name an integer output type)."""
        x, w = _at(input_shapes, 0), _at(input_shapes, 3)
        return standard_op_shapes("Conv", dict(node.attrs), [x, w]) if x is not None and w is not None else None


@register("QLinearMatMul")
class QLinearMatMulRule(_QLinearWeighted):
    """Inputs a, a_scale, a_zp, b [K, N], b_scale, b_zp (per tensor or [N]), y_scale, y_zp."""

    float_rule, view, weight_params, activation_params = MatMulRule(), (0, 3), (4, 5), (1, 2, 6, 7)

    def weight_out_axis(self, node: Node) -> int:
        return 1

    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        """MatMul's on a and b (as QLinearConv's, for inputs a contrib shape function typed as float)."""
        a, b = _at(input_shapes, 0), _at(input_shapes, 3)
        return standard_op_shapes("MatMul", {}, [a, b]) if a is not None and b is not None else None


@register("QGemm", domain="com.microsoft")
class QGemmRule(_QLinearWeighted):
    """Inputs A, a_scale, a_zp, B, b_scale, b_zp, C (int32), y_scale, y_zp (absent: float output)."""

    float_rule, view, weight_params, activation_params = GemmRule(), (0, 3, 6), (4, 5), (1, 2, 7, 8)

    def weight_out_axis(self, node: Node) -> int:
        return 0 if int(node.attr("transB", 0)) else 1

    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        """Gemm's on A and B (transA / transB)."""
        a, b = _at(input_shapes, 0), _at(input_shapes, 3)
        attrs = {k: int(node.attr(k, 0)) for k in ("transA", "transB")}
        return standard_op_shapes("Gemm", attrs, [a, b]) if a is not None and b is not None else None


@register("QLinearAdd", "QLinearMul", domain="com.microsoft")
class QLinearBinaryRule(Rule):
    """C = A op B with numpy broadcasting; data inputs 0 and 3, per-tensor parameters 1, 2, 4..7."""

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        if port.is_input and port.index not in (0, 3):
            fx.freeze(f"input {port.index} is a quantization parameter, not data")
            return
        if not _per_tensor(graph, node, (1, 2, 4, 5, 6, 7), fx):
            return
        broadcast_through(fx, graph, node, port, axis, pairs, (0, 3))

    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        """Add's broadcast of A (input 0) and B (input 3)."""
        a, b = _at(input_shapes, 0), _at(input_shapes, 3)
        return standard_op_shapes("Add", {}, [a, b]) if a is not None and b is not None else None


@register("QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearLeakyRelu", "QLinearSigmoid",
          domain="com.microsoft")
class QLinearUnaryRule(Rule):
    """Per-channel (or elementwise) ops on int8 data input 0 with per-tensor parameters; the pools
    keep only their channel axis (1, or the last with channels_last)."""

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        if port.index != 0:
            fx.freeze(f"{port.kind}put {port.index} is a quantization parameter, not data")
            return
        if not _per_tensor(graph, node, tuple(range(1, len(node.inputs))), fx):
            return
        if node.op_type.startswith("QLinear") and node.op_type.endswith("Pool"):
            rank = graph.rank(node.input(0))
            channel = positive_axis(-1, rank) if int(node.attr("channels_last", 0)) and rank else 1
            if axis != channel:
                fx.freeze(f"axis {axis} is pooled, not the channel axis")
                return
        fx.to_ports(port, axis, pairs, [0], [0])

    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        """The float op's: the activations keep X's shape; the pools pool it (channels_last: the
        channels are the last axis, so the float pool runs on X with them moved to axis 1)."""
        x = _at(input_shapes, 0)
        if x is None:
            return None
        if not node.op_type.endswith("Pool"):
            return [tuple(x)]
        last = bool(int(node.attr("channels_last", 0)))
        if last:
            x = (x[0], x[-1], *x[1:-1])
        op = node.op_type[len("QLinear"):]
        attrs = {k: v for k, v in node.attrs.items() if k != "channels_last"}
        found = standard_op_shapes(op, attrs, [x])
        if not found or found[0] is None or not last:
            return found
        y = found[0]
        return [(y[0], *y[2:], y[1])]


@register("QLinearSoftmax", domain="com.microsoft")
class QLinearSoftmaxRule(Rule):
    """Softmax on int8 data input 0 with per-tensor parameters (inputs 1..4); `opset` is the float
    Softmax's: below 13 it normalises over the flattened axes [axis:], from 13 over `axis` only."""

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        if port.index != 0:
            fx.freeze(f"{port.kind}put {port.index} is a quantization parameter, not data")
            return
        if not _per_tensor(graph, node, tuple(range(1, len(node.inputs))), fx):
            return
        rank = graph.rank(node.input(0))
        if rank is None:
            fx.freeze("input rank is unknown")
            return
        norm_axis = positive_axis(int(node.attr("axis", -1)), rank)
        if axis == norm_axis or (int(node.attr("opset", 13)) < 13 and axis > norm_axis):
            fx.freeze(f"QLinearSoftmax normalises over the channel axis {axis}")
            return
        fx.to_ports(port, axis, pairs, [0], [0])

    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        x = _at(input_shapes, 0)
        return None if x is None else [tuple(x)]


@register("QLinearConcat", domain="com.microsoft")
class QLinearConcatRule(ConcatRule):
    """Concat of int8 tensors: Y_scale, Y_zero_point, then (X, X_scale, X_zero_point) per input; every
    element is requantized on its own, so with per-tensor parameters channels move as in Concat."""

    def data_inputs(self, node: Node) -> list[int]:
        return list(range(2, len(node.inputs), 3))

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        data = self.data_inputs(node)
        if port.is_input and port.index not in data:
            fx.freeze(f"input {port.index} is a quantization parameter, not data")
            return
        params = tuple(i for i in range(len(node.inputs)) if i not in data)
        if not _per_tensor(graph, node, params, fx):
            return
        super().propagate(node, graph, port, axis, pairs, fx)

    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        """Concat's, of the data inputs."""
        xs = [_at(input_shapes, i) for i in self.data_inputs(node)]
        if any(x is None for x in xs):
            return None
        return standard_op_shapes("Concat", {"axis": int(node.attr("axis"))}, xs)
