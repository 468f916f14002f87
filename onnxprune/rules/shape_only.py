"""Ops that read only a tensor's shape, and the shape arithmetic that follows them.

Shape and Size: their channels' values never reach the output. The shape
values they produce follow the pruned size at run time, which is what shape
arithmetic in exported graphs expects.

`trace_shape_element` answers, for a rule whose output size comes from a
1-D shape tensor (Reshape target, Expand shape, Resize sizes...), where one
element of that tensor comes from: a constant element to rewrite, or the
dimension of a tensor it copies at run time (Shape -> Slice / Gather ->
Concat ...), which follows the pruned sizes by itself, possibly times a
constant (Mul: repeat_kv's kv heads x n_rep), or through the -1 guard of a
legacy-exported `expand` (Where(Equal(s, -1), ones, s) is s for any size).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..indexmap import Pairs
from ..ir import Graph, Node, to_array
from .base import Effects, Port, Rule, const_ints, positive_axis, register

# ops that keep a shape value's elements in flat order
_SAME_ORDER = ("Identity", "Cast", "Abs", "Reshape", "Squeeze", "Unsqueeze", "Flatten")
_MAX_DEPTH = 16

# a step says where one element comes from: ("dim", tensor, axis) or ("elem", tensor, flat element)
Step = tuple[str, str, int] | None


@register("Shape", "Size")
class ShapeOnlyRule(Rule):
    """Shape / Size read no channel values: a space ends here; the shape they produce follows at run time."""

    reads_shape_only = True

    def static_shape_read(self, node: Node, graph: Graph) -> bool:
        """Static when the dims it reads (Shape's start:end, all of them for Size) are inferred
        statically: ONNX shape inference knows no input values, so such dims hold for every input."""
        shape = graph.shape(node.input(0))
        if shape is None:
            return False
        if node.op_type == "Shape":
            shape = shape[slice(node.attr("start", 0), node.attr("end", None))]  # ONNX clamps like Python
        return None not in shape

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        if not port.is_input:
            fx.freeze("output is a shape, not channels")


@dataclass(frozen=True)
class ShapeElement:
    """Where one element of a shape tensor comes from.

    `const` is the initializer holding it (with the flat `index` there and its
    `value`); `dim` is the (tensor, axis) whose size it copies at run time,
    times `scale`; neither is set when it cannot be traced (`value` alone: a
    value computed from constants at run time, known but not rewritable).
    """

    const: str | None = None
    index: int = 0
    value: int | None = None
    dim: tuple[str, int] | None = None
    scale: int = 1


def trace_shape_element(graph: Graph, tensor: str, element: int, depth: int = 0) -> ShapeElement:
    """Follow flat element `element` of the integer tensor `tensor` back through shape arithmetic
    (Shape, Slice, Gather, Concat, Cast, Reshape, (Un)Squeeze...) to a constant or a tensor dimension."""
    values = const_ints(graph, tensor)
    if values is not None:
        return ShapeElement(tensor, element, values[element]) if 0 <= element < len(values) else ShapeElement()
    node = graph.producer(tensor)
    if node is None or depth > _MAX_DEPTH or node.domain not in ("", "ai.onnx"):
        return ShapeElement()
    tracer = _TRACERS.get(node.op_type)
    if tracer is not None:
        return tracer(graph, node, element, depth + 1)
    step = _STEPS.get(node.op_type)
    found = step(graph, node, element) if step else None
    if found is None:
        return ShapeElement()
    kind, name, index = found
    if kind == "dim":
        return ShapeElement(dim=(name, index))
    return trace_shape_element(graph, name, index, depth + 1)


def follow_shape_element(graph: Graph, fx: Effects, shape: str, element: int, space: tuple[str, int],
                         keep: tuple[int, ...] = (-1,)) -> bool:
    """Make element `element` of shape tensor `shape` follow the new size of `space`.

    A constant element is rewritten (unless its value is in `keep`, values that
    already adapt, like -1 in a Reshape target); a computed one is read from
    tensor shapes at run time and follows by itself. Returns False after
    freezing when the element cannot follow.
    """
    source = trace_shape_element(graph, shape, element)
    if source.dim is not None:
        times = f"{source.scale} x " if source.scale != 1 else ""
        fx.require(source.dim, f"element {element} of shape '{shape}' copies {times}the size of '{source.dim[0]}' "
                               f"axis {source.dim[1]}, which does not follow the channels", source.scale, space)
        return True
    if source.const is None:
        fx.freeze(f"element {element} of shape '{shape}' is computed at run time and cannot be traced "
                  f"to a constant to rewrite")
        return False
    if source.value in keep:
        return True
    if graph.const_users(source.const) > 1:
        fx.freeze(f"shape constant '{source.const}' is shared by several nodes")
        return False
    fx.edit_const(source.const, source.index, space)
    return True


# a shape value: rank 0 or 1 and at most this many elements (anything bigger is data)
_SHAPE_VALUE_MAX = 64


def shape_readers(graph: Graph, const: str) -> set[int]:
    """Indices of the nodes whose output size a shape constant sets: followed forward through every
    node that computes another shape value from it (Concat, Mul, Cast...) to the nodes that read it
    as a shape (a Reshape target, an Expand shape...). Rewriting one element of the constant changes
    all of them."""
    readers: set[int] = set()
    seen = {const}
    frontier = [const]
    while frontier:
        tensor = frontier.pop()
        for user, _ in graph.consumers(tensor):
            outs = [o for o in user.outputs if o]
            if outs and all(_is_shape_value(graph, o) for o in outs) and len(seen) < 4096:
                fresh = [o for o in outs if o not in seen]
                seen.update(fresh)
                frontier.extend(fresh)
            else:
                readers.add(user.index)
    return readers


def _is_shape_value(graph: Graph, tensor: str) -> bool:
    if graph.is_graph_output(tensor):
        return False
    shape = graph.shape(tensor)
    if shape is None:
        return False
    return len(shape) <= 1 and all(d is not None for d in shape) and (not shape or shape[0] <= _SHAPE_VALUE_MAX)


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


def _operand_element(graph: Graph, name: str, element: int, depth: int) -> ShapeElement:
    """Element `element` of a broadcasting operand: a one-element operand gives its only element."""
    shape = graph.shape(name)
    if shape is not None and len(shape) <= 1 and (not shape or shape[0] == 1):
        element = 0
    return trace_shape_element(graph, name, element, depth)


def _constant_of_shape(graph: Graph, node: Node, element: int, depth: int) -> ShapeElement:
    value = node.attr("value")
    values = [0] if value is None else to_array(value).reshape(-1).tolist()
    if len(values) != 1 or not float(values[0]).is_integer():
        return ShapeElement()
    return ShapeElement(value=int(values[0]))


def _mul(graph: Graph, node: Node, element: int, depth: int) -> ShapeElement:
    """A size times a constant follows by itself (scaled); two known values multiply."""
    a, b = (_operand_element(graph, name, element, depth) for name in node.inputs[:2])
    if a.dim is not None and b.dim is not None:
        return ShapeElement()
    if a.dim is None and b.dim is None:
        return ShapeElement() if a.value is None or b.value is None else ShapeElement(value=a.value * b.value)
    size, factor = (a, b) if a.dim is not None else (b, a)
    if factor.value is None or factor.value < 1:
        return ShapeElement()
    return ShapeElement(dim=size.dim, scale=size.scale * factor.value)


def _where(graph: Graph, node: Node, element: int, depth: int) -> ShapeElement:
    """Where(Equal(s, c), x, s) with c < 0 is s for every size s: the guard a legacy-exported
    `expand` puts around its target (-1 keeps a dim, which no size equals)."""
    cond = graph.producer(node.input(0))
    data = node.input(2)
    if cond is None or cond.op_type != "Equal" or data not in cond.inputs[:2] or cond.inputs[0] == cond.inputs[1]:
        return ShapeElement()
    other = cond.inputs[1] if cond.inputs[0] == data else cond.inputs[0]
    guard = _operand_element(graph, other, element, depth)
    source = trace_shape_element(graph, data, element, depth)
    if guard.value is None or guard.value >= 0 or (source.value is not None and source.value < 0):
        return ShapeElement()
    return source if source.dim is not None else ShapeElement(value=source.value)


# ops whose element is computed from several inputs: traced by a function of their own
_TRACERS = {"ConstantOfShape": _constant_of_shape, "Mul": _mul, "Where": _where}

_STEPS = {"Shape": _shape_step, "Concat": _concat_step, "Slice": _slice_step, "Gather": _gather_step,
          **{op: _same_order_step for op in _SAME_ORDER}}
