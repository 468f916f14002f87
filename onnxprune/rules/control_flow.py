"""Control flow: If, Loop, Scan. Channels cross between a node and its bodies.

The nodes inside a body are nodes of the analysis like any other (their weights
are cut where they live, outer-scope reads are ordinary edges); this rule only
ties the values a node exchanges with its bodies:

* If: output k is output k of both branches (both branches must lose the same
  positions, so a space on either branch's output reaches the other's).
* Loop: loop-carried value i is one space across the initial value (input
  2+i), the body input 2+i, the body output 1+i and the final value (output
  i); scan output k of the body is output N+k of the Loop with the iteration
  axis in front.
* Scan (opset 9+): state i across input i, body input i, body output i and
  output i; scan input m is body input N+m without its scan axis; scan output
  k is body output N+k with the iteration axis inserted at its output axis.

The trip count, the conditions and the iteration counter carry no channels:
a space reaching them, or a space along an iteration axis, is frozen.
"""
from __future__ import annotations

from ..indexmap import Pairs
from ..ir import Graph, Node, Shape, register_shape_hook
from ..kinds import PortKind, Role
from .base import Effects, Port, Rule, positive_axis, register

# a member of a tie: (port, outer axis where the iteration axis sits, or None when the axes are the body's)
Member = tuple[Port, int | None]


@register("If", "Loop", "Scan")
class ControlFlowRule(Rule):
    """Ties the values an If / Loop / Scan exchanges with its bodies; trip counts and conditions freeze."""

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        ties = _ties(node, graph, fx)
        if ties is None:
            return
        tie = next((t for t in ties if any(p == port for p, _ in t)), None)
        if tie is None:
            fx.freeze(f"{_describe(node, port)} carries no channels (a trip count, condition or iteration number)")
            return
        arrived = next(insert for p, insert in tie if p == port)
        common = _to_body(axis, arrived)
        if common is None:
            fx.freeze(f"channels along the iteration axis {axis} of {_describe(node, port)}")
            return
        for member, insert in tie:
            if member != port:
                _forward(node, graph, fx, member, _from_body(common, insert), pairs)


def _ties(node: Node, graph: Graph, fx: Effects) -> list[list[Member]] | None:
    """Groups of ports that hold the same channels, or None (frozen) when the node is not understood."""
    body = {(attr, kind, k): Port(PortKind.BODY, j) for j, (attr, kind, k, _) in enumerate(node.body_values)}
    n_in, n_out = len(node.inputs), len(node.outputs)
    ties: list[list[Member]]
    if node.op_type == "If":
        return [[(Port(PortKind.OUT, k), None), (body[("then_branch", "out", k)], None),
                 (body[("else_branch", "out", k)], None)] for k in range(n_out)]
    if node.op_type == "Loop":
        carried = n_in - 2
        ties = [[(Port(PortKind.IN, 2 + i), None), (body[("body", "in", 2 + i)], None),
                 (body[("body", "out", 1 + i)], None), (Port(PortKind.OUT, i), None)] for i in range(carried)]
        ties += [[(body[("body", "out", 1 + carried + k)], None), (Port(PortKind.OUT, carried + k), 0)]
                 for k in range(n_out - carried)]
        return ties
    if graph.opset < 9:
        fx.freeze("Scan before opset 9 (with sequence_lens and a batch axis) is not followed")
        return None
    scans = int(node.attr("num_scan_inputs"))
    state = n_in - scans
    in_axes = list(node.attr("scan_input_axes") or [0] * scans)
    out_axes = list(node.attr("scan_output_axes") or [0] * (n_out - state))
    ties = [[(Port(PortKind.IN, i), None), (body[("body", "in", i)], None), (body[("body", "out", i)], None),
             (Port(PortKind.OUT, i), None)] for i in range(state)]
    for m in range(scans):
        rank = graph.rank(node.input(state + m))
        if rank is None:
            fx.freeze(f"rank of scan input '{node.input(state + m)}' is unknown")
            return None
        ties.append([(Port(PortKind.IN, state + m), positive_axis(in_axes[m], rank)),
                     (body[("body", "in", state + m)], None)])
    for k in range(n_out - state):
        rank = graph.rank(node.output(state + k))
        if rank is None:
            fx.freeze(f"rank of scan output '{node.output(state + k)}' is unknown")
            return None
        ties.append([(body[("body", "out", state + k)], None),
                     (Port(PortKind.OUT, state + k), positive_axis(out_axes[k], rank))])
    return ties


def _to_body(axis: int, insert: int | None) -> int | None:
    if insert is None or axis < insert:
        return axis
    return None if axis == insert else axis - 1


def _from_body(axis: int, insert: int | None) -> int:
    return axis if insert is None or axis < insert else axis + 1


def _forward(node: Node, graph: Graph, fx: Effects, port: Port, axis: int, pairs: Pairs) -> None:
    if port.kind == PortKind.IN:
        fx.to_input(port.index, axis, pairs)
    elif port.kind == PortKind.OUT:
        fx.to_output(port.index, axis, pairs)
    else:
        name = port.tensor(node)
        if graph.is_const(name):  # a body that returns one of its constants
            fx.cut(name, axis, pairs, role=Role.OUT)
        elif name:
            fx.forwards.append((name, axis, pairs, port))


def _describe(node: Node, port: Port) -> str:
    if port.kind != PortKind.BODY:
        return f"{port.kind}put {port.index}"
    attr, kind, k, name = node.body_values[port.index]
    return f"{attr} {kind}put {k} ('{name}')"


def _loop_carried_shapes(graph: Graph) -> dict[str, Shape]:
    """A Loop's final carried value has the static shape of its initial value when the body returns
    it with that shape (ONNX inference leaves it open: a shape may change across iterations)."""
    found: dict[str, Shape] = {}
    for node in graph.nodes:
        if node.op_type != "Loop" or node.domain not in ("", "ai.onnx"):
            continue
        names = {(kind, k): name for attr, kind, k, name in node.body_values if attr == "body"}
        for i in range(len(node.inputs) - 2):
            initial = graph.shape(node.input(2 + i))
            returned = graph.shape(names.get(("out", 1 + i), ""))
            received = graph.shape(names.get(("in", 2 + i), ""))
            if (initial is not None and None not in initial and returned == initial
                    and received in (None, initial) and node.output(i)):
                found[node.output(i)] = initial
    return found


register_shape_hook(("Loop",), _loop_carried_shapes)
