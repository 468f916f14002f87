"""Ops that read only a tensor's shape, and the shape arithmetic that follows them.

Shape and Size: their channels' values never reach the output. The shape
values they produce follow the pruned size at run time, which is what shape
arithmetic in exported graphs expects.

`shape_element_source` answers, for a rule whose output size comes from a
1-D shape tensor (Reshape target, Expand shape, ConstantOfShape...), where one
element of that tensor comes from: a constant element to rewrite, or a value
computed at run time from tensor shapes (it follows the pruned sizes by itself).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..indexmap import Pairs
from ..ir import Graph, Node
from .base import Effects, Port, Rule, const_ints, register

# Ops that pass a 1-D shape tensor through with element positions unchanged.
_SAME_ELEMENTS = ("Cast", "Identity", "Abs")


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
