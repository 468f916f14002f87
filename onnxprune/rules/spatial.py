"""Ops that act on spatial axes only: pooling, Pad, Resize/Upsample.

Batch and channel axes (0 and 1) pass through unchanged when the op leaves
them alone; anything done along the channel axis itself freezes the space.
"""
from __future__ import annotations

from ..indexmap import Pairs
from ..ir import Graph, Node
from .base import Effects, Port, Rule, const_ints, positive_axis, register
from .shape_only import trace_shape_element


def _pass_through(port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
    fx.to_ports(port, axis, pairs, [0], [0])


@register("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
class PoolRule(Rule):
    """Batch and channel axes pass; pooling along the channel axis itself freezes."""

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        if port.index != 0:
            fx.freeze("MaxPool indices encode channel offsets")
            return
        if axis > 1:
            fx.freeze(f"pooling acts on axis {axis}")
            return
        if len(node.outputs) > 1 and node.output(1) and graph.consumers(node.output(1)):
            fx.freeze("MaxPool indices output encodes channel offsets")
            return
        _pass_through(port, axis, pairs, fx)


@register("Pad")
class PadRule(Rule):
    """Pads come from the attribute (opset < 11) or input 1; the channel axis must not be padded."""

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        rank = fx.data_rank(port, "pads")
        if rank is None:
            return
        pads = node.attr("pads") if node.attr("pads") is not None else const_ints(graph, node.input(1))
        if pads is None:
            fx.freeze(f"pads '{node.input(1)}' are computed at run time")
            return
        axes = const_ints(graph, node.input(3)) if node.input(3) else list(range(rank))
        if axes is None:
            fx.freeze("pad axes are computed at run time")
            return
        axes = [positive_axis(a, rank) for a in axes]
        if axis in axes:
            k = axes.index(axis)
            if pads[k] != 0 or pads[k + len(axes)] != 0:
                fx.freeze(f"pads the channel axis {axis}")
                return
        _pass_through(port, axis, pairs, fx)


@register("Resize", "Upsample")
class ResizeRule(Rule):
    """The scale of the channel axis must be 1; a `sizes` entry for it must follow the new size.

    A constant `sizes` element is edited. A computed one (exporters build
    `sizes` as Concat(Shape(x)[:2], [H, W])) is accepted when it provably
    copies the resized input's own channel count at run time.
    """

    parameter_inputs = (1, 2, 3)  # Resize: roi, scales, sizes; Upsample: scales

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        in_shape, out_shape = graph.shape(node.input(0)), graph.shape(node.output(0))
        if port.index != 0 or in_shape is None or out_shape is None:
            fx.freeze("shapes are unknown" if port.index == 0 else "input holds scales or sizes, not data")
            return
        if in_shape[axis] is None or in_shape[axis] != out_shape[axis]:
            fx.freeze(f"resizes axis {axis}")
            return
        sizes_name = node.input(3) if node.op_type == "Resize" else ""
        if sizes_name and not self._sizes_follow(node, graph, sizes_name, axis, len(in_shape), fx):
            return
        _pass_through(port, axis, pairs, fx)

    @staticmethod
    def _sizes_follow(node: Node, graph: Graph, sizes_name: str, axis: int, rank: int, fx: Effects) -> bool:
        axes = node.attr("axes")
        axes = [positive_axis(a, rank) for a in axes] if axes else list(range(rank))
        if axis not in axes:
            return True
        element = axes.index(axis)
        if const_ints(graph, sizes_name) is not None:
            fx.edit_const(sizes_name, element, (node.output(0), axis))
            return True
        source = trace_shape_element(graph, sizes_name, element)
        if source.dim == (node.input(0), axis) and source.scale == 1:
            return True  # Shape of the resized input itself: follows the pruned count at run time
        found = (f"copies '{source.dim[0]}' axis {source.dim[1]}" if source.dim else
                 f"is the constant {source.value}" if source.const else "cannot be traced")
        fx.freeze(f"sizes '{sizes_name}' are computed at run time and element {element} {found}, "
                  f"not the channel count of input '{node.input(0)}'")
        return False
