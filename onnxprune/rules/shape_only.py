"""Ops that read only a tensor's shape, and the shape arithmetic that follows them.

Shape and Size: their channels' values never reach the output. The shape
values they produce follow the pruned size at run time, which is what shape
arithmetic in exported graphs expects.

`shape_element_source` answers, for a rule whose output size comes from a
1-D shape tensor (Reshape target, Expand shape, ConstantOfShape...), where one
element of that tensor comes from: a constant element to rewrite, or a value
computed at run time from tensor shapes (it follows the pruned sizes by itself).

`shape_source` proves more: which tensor dimension a computed element copies
(Shape -> Slice / Gather -> Concat ...), for rules that must check that an
element follows one particular channel count (Resize `sizes`).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..indexmap import Pairs
from ..ir import Graph, Node
from .base import Effects, Port, Rule, const_ints, positive_axis, register

# Ops that pass a 1-D shape tensor through with element positions unchanged.
_SAME_ELEMENTS = ("Cast", "Identity", "Abs")

# ops that keep a shape value's elements in flat order
_SAME_ORDER = ("Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten")
_MAX_DEPTH = 16

# a step says where one element comes from: ("dim", tensor, axis) or ("elem", tensor, flat element)
Step = tuple[str, str, int] | None


@register("Shape", "Size")
class ShapeOnlyRule(Rule):
    reads_shape_only = True
    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        if not port.is_input:
            fx.freeze("output is a shape, not channels")


@dataclass(frozen=True)
class ShapeElement:
    """Where element `element` of a shape tensor comes from.

    `const` is the initializer holding it (None: computed at run time), `index`
    the flat index in that initializer, `value` its value when constant.
    """

    const: str | None
    index: int = 0
    value: int | None = None


def shape_element_source(graph: Graph, name: str, element: int, depth: int = 8) -> ShapeElement:
    """Trace element `element` of the 1-D int tensor `name` through Concat / Cast / Unsqueeze to a constant."""
    values = const_ints(graph, name)
    if values is not None:
        return ShapeElement(name, element, values[element]) if element < len(values) else ShapeElement(None)
    node = graph.producer(name)
    if node is None or depth == 0:
        return ShapeElement(None)
    if node.op_type == "Concat":
        offset = 0
        for part in node.inputs:
            size = graph.dim(part, 0) if graph.rank(part) == 1 else None
            if size is None:
                return ShapeElement(None)
            if offset <= element < offset + size:
                return shape_element_source(graph, part, element - offset, depth - 1)
            offset += size
        return ShapeElement(None)
    if node.op_type in _SAME_ELEMENTS or (node.op_type == "Unsqueeze" and element == 0):
        inner = node.input(0)
        if graph.rank(inner) in (0, 1):
            return shape_element_source(graph, inner, element, depth - 1)
    return ShapeElement(None)


def follow_shape_element(graph: Graph, fx: Effects, shape: str, element: int, space: tuple[str, int],
                         keep: tuple[int, ...] = (-1,)) -> bool:
    """Make element `element` of shape tensor `shape` follow the new size of `space`.

    A constant element is rewritten (unless its value is in `keep`, values that
    already adapt, like -1 in a Reshape target); a computed one is read from
    tensor shapes at run time and follows by itself. Returns False after
    freezing when the element cannot follow.
    """
    source = shape_element_source(graph, shape, element)
    if source.const is None or source.value in keep:
        return True
    if graph.const_users(source.const) > 1:
        fx.freeze(f"shape constant '{source.const}' is shared by several nodes")
        return False
    fx.edit_const(source.const, source.index, space)
    return True


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
