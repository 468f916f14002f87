"""Ops that read only a tensor's shape, and the shape arithmetic built on them.

Shape and Size produce values that follow the pruned size at run time, which
is what shape arithmetic in exported graphs expects: channels' values never
reach their output. `shape_source` traces one element of a computed shape
value (Shape -> Slice / Gather -> Concat ...) back to the dimension it copies,
so that rules reading computed shapes (Resize `sizes`) can prove that an
element follows a channel count.
"""
from __future__ import annotations

from ..indexmap import Pairs
from ..ir import Graph, Node
from .base import Effects, Port, Rule, const_ints, positive_axis, register

# ops that keep a shape value's elements in flat order
_SAME_ORDER = ("Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten")
_MAX_DEPTH = 16

# a step says where one element comes from: ("dim", tensor, axis) or ("elem", tensor, flat element)
Step = tuple[str, str, int] | None


@register("Shape", "Size")
class ShapeOnlyRule(Rule):
    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        if not port.is_input:
            fx.freeze("output is a shape, not channels")


def shape_source(graph: Graph, tensor: str, element: int, depth: int = 0) -> tuple[str, int] | int | None:
    """What flat element `element` of the integer tensor `tensor` holds at run time.

    (data tensor, axis) when it copies a dimension of a tensor (through Shape,
    Slice, Gather, Concat, Cast, Reshape...), an int when it is a constant,
    None when it cannot be traced.
    """
    values = const_ints(graph, tensor)
    if values is not None:
        return values[element] if 0 <= element < len(values) else None
    node = graph.producer(tensor)
    if node is None or depth > _MAX_DEPTH or node.domain not in ("", "ai.onnx"):
        return None
    step = _STEPS.get(node.op_type)
    found = step(graph, node, element) if step else None
    if found is None:
        return None
    kind, name, index = found
    if kind == "dim":
        return name, index
    return shape_source(graph, name, index, depth + 1)


def _shape_step(graph: Graph, node: Node, element: int) -> Step:
    rank = graph.rank(node.input(0))
    if rank is None:
        return None
    start = positive_axis(int(node.attr("start", 0)), rank)
    return "dim", node.input(0), start + element


def _concat_step(graph: Graph, node: Node, element: int) -> Step:
    offset = 0
    for name in node.inputs:
        length = graph.dim(name, 0) if graph.rank(name) == 1 else None
        if length is None:
            return None
        if element < offset + length:
            return "elem", name, element - offset
        offset += length
    return None


def _slice_step(graph: Graph, node: Node, element: int) -> Step:
    if node.attr("starts") is not None:  # opset < 10
        starts, ends, axes, steps = node.attr("starts"), node.attr("ends"), node.attr("axes"), None
    else:
        starts, ends = const_ints(graph, node.input(1)), const_ints(graph, node.input(2))
        axes = const_ints(graph, node.input(3)) if node.input(3) else None
        steps = const_ints(graph, node.input(4)) if node.input(4) else None
    length = graph.dim(node.input(0), 0)
    if starts is None or length is None or graph.rank(node.input(0)) != 1 or len(starts) != 1:
        return None
    if axes not in (None, [0], [-1]) or ends is None:
        return None
    step = steps[0] if steps else 1
    start = starts[0] + length if starts[0] < 0 else starts[0]
    start = min(max(start, 0), length - 1 if step < 0 else length)
    return "elem", node.input(0), start + element * step


def _gather_step(graph: Graph, node: Node, element: int) -> Step:
    indices = const_ints(graph, node.input(1))
    length = graph.dim(node.input(0), 0)
    if indices is None or length is None or graph.rank(node.input(0)) != 1 or not 0 <= element < len(indices):
        return None
    index = indices[element]
    return "elem", node.input(0), index + length if index < 0 else index


def _same_order_step(graph: Graph, node: Node, element: int) -> Step:
    return "elem", node.input(0), element


_STEPS = {"Shape": _shape_step, "Concat": _concat_step, "Slice": _slice_step, "Gather": _gather_step,
          **{op: _same_order_step for op in _SAME_ORDER}}
