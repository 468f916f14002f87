"""Test one pruning rule in a few lines: one node in, its channel map out, as plain comparable values.

    from onnxprune.rule_harness import channel_map, pairs
    m = channel_map("Transpose", [(1, 4, 3, 2)], {"perm": [0, 2, 3, 1]})
    assert m[("out0", 3)].moves == {("in0", 1): pairs(4)}

The node under test is named `node`; its inputs are `in0`, `in1`... and its outputs `out0`, `out1`...
An input is a shape (a float tensor computed at run time), a numpy array (a constant: an initializer),
`Input(shape, dtype)` (a run-time tensor of another type, e.g. int64 token ids) or None (absent).

`visit` asks the node's rule exactly what the dependency graph asks it when a channel space arrives
(`rule_for(node).propagate(node, graph, port, axis, pairs, Effects(...))`) and turns the effects into a
`Visit`; `channel_map` does that for every axis of every output (or input); `roots` lists the spaces the
rule starts. `prune_through` builds a small model around the node (a Conv or MatMul producing each
run-time input's channels, a Conv or MatMul consuming each output's) and prunes it through the public
pipeline, dead-channel oracle included: the project's rule is that each rule is tested by pruning
through it and passing the oracle.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from . import indexmap
from .depgraph import couple_units
from .errors import BadInputError, CheckFailedError
from .indexmap import Pairs
from .ir import Graph, Node
from .ir.tiny import tiny_graph, tiny_model
from .kinds import PortKind, Role
from .rules import Effects, Port, rule_for

PlainPairs = tuple[tuple[int, int], ...]
Space = tuple[str, int]


@dataclass(frozen=True)
class Input:
    """A run-time input of the node under test: its shape and element type."""

    shape: tuple[int, ...]
    dtype: Any = np.float32


@dataclass(frozen=True)
class Visit:
    """What a rule says when channels arrive at one (tensor, axis), in plain values.

    moves: (tensor, axis) -> pairs: the same channels live on another run-time tensor (intra-layer edge).
    cuts: (initializer, axis) -> (role, pairs): slices cut with the channels ("out": produces or
        transforms them; "in": consumes them); scales: the cuts that are normalisation scales.
    edits: (target, space, mul, div, offset) per attribute or shape-constant element that follows.
    couplings: root channels that share a position somewhere in this visit (they go together).
    frozen / inexact / required: the reasons, without the node's name; kinds: unit labels.
    Pairs are sorted ((position, root), ...) tuples, as `pairs()` writes them.
    """

    moves: dict[Space, PlainPairs]
    cuts: dict[Space, tuple[str, PlainPairs]]
    scales: frozenset[Space] = frozenset()
    edits: tuple[tuple, ...] = ()
    couplings: tuple[tuple[int, ...], ...] = ()
    frozen: str | None = None
    inexact: tuple[str, ...] = ()
    required: tuple[tuple[Space, str], ...] = ()
    kinds: tuple[str, ...] = ()


def pairs(positions: int | Iterable[int], roots: Iterable[int] | None = None) -> PlainPairs:
    """Plain pairs: position k of `positions` belongs to root `roots[k]` (default root k); an int n
    stands for range(n) (the identity map of n channels)."""
    pos = np.arange(positions, dtype=np.int64) if isinstance(positions, int) else np.asarray(list(positions), np.int64)
    rts = np.arange(len(pos), dtype=np.int64) if roots is None else np.asarray(list(roots), dtype=np.int64)
    return plain(np.stack([pos, rts], axis=1) if len(pos) else indexmap.empty())


def plain(p: Pairs) -> PlainPairs:
    """An index-pair array as sorted ((position, root), ...) tuples, duplicates merged (as depgraph does)."""
    if not len(p):
        return ()
    keys, _ = indexmap.merge(None, np.asarray(p, dtype=np.int64))
    return tuple((int(a), int(b)) for a, b in indexmap.decode(keys))


# -- the node under test -----------------------------------------------------

def node_model(op_type: str, inputs: Sequence, attrs: dict | None = None, *, domain: str = "", outputs: int = 1,
               opset: int = 17):
    """The one-node model the harness asks the rule about (inputs in0.., outputs out0..)."""
    specs, runtime, consts = _inputs(inputs)
    outs = [f"out{j}" for j in range(outputs)]
    return tiny_model([(op_type, specs, outs, dict(attrs or {}), domain, "node")], runtime, outs, consts, opset)


def _inputs(inputs: Sequence) -> tuple[list[str], dict, dict]:
    names, runtime, consts = [], {}, {}
    for i, item in enumerate(inputs):
        name = f"in{i}"
        if item is None:
            name = ""
        elif isinstance(item, np.ndarray):
            consts[name] = item
        elif isinstance(item, Input):
            runtime[name] = (tuple(item.shape), item.dtype)
        else:
            runtime[name] = (tuple(item), np.float32)
        names.append(name)
    return names, runtime, consts


def _graph(op_type: str, inputs: Sequence, attrs: dict | None, domain: str, outputs: int, opset: int) -> Graph:
    return tiny_graph(node_model(op_type, inputs, attrs, domain=domain, outputs=outputs, opset=opset))


def visit(op_type: str, inputs: Sequence, attrs: dict | None = None, *, at: Space = ("out0", 1),
          positions: Iterable[int] | None = None, domain: str = "", outputs: int = 1, opset: int = 17,
          const_role: str = "out") -> Visit:
    """Channels `positions` (default: all) of tensor `at` = (name, axis) arrive at the node: what does its rule say?"""
    graph = _graph(op_type, inputs, attrs, domain, outputs, opset)
    return _visit(graph, graph.nodes[0], at, positions, Role(const_role))


def channel_map(op_type: str, inputs: Sequence, attrs: dict | None = None, *, side: str = "out", domain: str = "",
                outputs: int = 1, opset: int = 17) -> dict[Space, Visit]:
    """`visit` for every axis of every output (side "out") or run-time input (side "in") of known size."""
    graph = _graph(op_type, inputs, attrs, domain, outputs, opset)
    node = graph.nodes[0]
    names = node.outputs if side == "out" else [n for n in node.inputs if n and not graph.is_const(n)]
    ranks = {name: graph.rank(name) for name in names if name}
    return {(name, axis): _visit(graph, node, (name, axis), None, Role.OUT)
            for name, rank in ranks.items() if rank is not None
            for axis in range(rank) if graph.dim(name, axis)}


def roots(op_type: str, inputs: Sequence, attrs: dict | None = None, *, domain: str = "", outputs: int = 1,
          opset: int = 17) -> tuple[Space, ...]:
    """The channel spaces the rule starts at this node, axes made non-negative."""
    graph = _graph(op_type, inputs, attrs, domain, outputs, opset)
    node = graph.nodes[0]
    out = []
    for tensor, axis in rule_for(node).roots(node, graph):
        rank = graph.rank(tensor)
        out.append((tensor, axis + rank if axis < 0 and rank is not None else axis))
    return tuple(out)


def _visit(graph: Graph, node: Node, at: Space, positions: Iterable[int] | None, const_role: Role) -> Visit:
    tensor, axis = at
    if tensor in node.outputs:
        port = Port(PortKind.OUT, node.outputs.index(tensor))
    elif tensor in node.inputs:
        port = Port(PortKind.IN, node.inputs.index(tensor))
    else:
        raise BadInputError(f"'{tensor}' is neither an input nor an output of {node}: expected one of "
                         f"{[n for n in node.inputs + node.outputs if n]}")
    size = graph.dim(tensor, axis)
    if size is None:
        raise BadInputError(f"size of '{tensor}' along axis {axis} is unknown (shape {graph.shape(tensor)})")
    arriving = indexmap.identity(size) if positions is None else np.asarray(pairs(positions), dtype=np.int64)
    fx = Effects(node, graph, const_role=const_role)
    rule_for(node).propagate(node, graph, port, axis, arriving, fx)  # what depgraph._Growth._step does
    return _plain_effects(fx, at, size, arriving)


def _plain_effects(fx: Effects, at: Space, size: int, arriving: Pairs) -> Visit:
    prefix = f"{fx.node}: "
    moves: dict[Space, Pairs] = {}
    for name, axis, p, _ in fx.forwards:
        moves[(name, axis)] = np.concatenate([moves.get((name, axis), indexmap.empty()), p])
    if at in moves:  # back onto the arriving space: only new pairs count (depgraph merges them away)
        known, _ = indexmap.merge(None, arriving)
        _, fresh = indexmap.merge(known, moves.pop(at))
        if len(fresh):
            moves[at] = fresh
    cut_pairs: dict[Space, Pairs] = {}
    roles: dict[Space, set[str]] = {}
    for cut in fx.cuts:
        key = (cut.tensor, cut.axis)
        cut_pairs[key] = np.concatenate([cut_pairs.get(key, indexmap.empty()), cut.pairs])
        roles.setdefault(key, set()).add(cut.role)
    relations = [(p[:, 0], p[:, 1]) for p in [arriving, *moves.values(), *cut_pairs.values()] if len(p)]
    units = couple_units(size, relations)
    couplings = tuple(tuple(int(r) for r in np.flatnonzero(units == u)) for u in np.unique(units)
                      if np.count_nonzero(units == u) > 1)
    return Visit(
        moves={k: plain(v) for k, v in moves.items()},
        cuts={k: ("/".join(sorted(roles[k])), plain(v)) for k, v in cut_pairs.items()},
        scales=frozenset((c.tensor, c.axis) for c in fx.cuts if c.scale),
        edits=tuple(dataclasses.astuple(e) for e in fx.edits),
        couplings=couplings,
        frozen=_strip(fx.frozen_reason, prefix),
        inexact=tuple(_stripped(r, prefix) for r in fx.inexact_reasons),
        required=tuple((space, _stripped(r, prefix)) for space, r in fx.required),
        kinds=tuple(fx.kinds))


def _strip(reason: str | None, prefix: str) -> str | None:
    return None if reason is None else _stripped(reason, prefix)


def _stripped(reason: str, prefix: str) -> str:
    """The reason without the node's name in front (the harness names the node itself)."""
    return reason[len(prefix):] if reason.startswith(prefix) else reason


# -- pruning through the node -------------------------------------------------

@dataclass
class PruneThrough:
    """A tiny model around the node, analysed, planned, checked by the oracle and pruned."""

    node: str  # the node under test, as messages name it
    model: Any  # the built model (ModelProto)
    analysis: Any  # api.Analysis
    plan: Any  # planner.Plan
    oracle: Any  # oracle.OracleResult
    pruned: Any  # the pruned model (onnxprune.Model)

    @property
    def frozen(self) -> list[str]:
        return [g.frozen_reason for g in self.analysis.groups if g.frozen_reason]

    def check(self, min_groups: int = 1) -> "PruneThrough":
        """Raise CheckFailedError unless at least `min_groups` groups were pruned and the oracle passed."""
        if len(self.plan.groups) < min_groups:
            raise CheckFailedError(f"pruning through {self.node}: expected >= {min_groups} pruned groups, found "
                                   f"{len(self.plan.groups)}; frozen: {self.frozen}")
        if not self.oracle.passed:
            raise CheckFailedError(f"pruning through {self.node}: the dead-channel oracle failed: {self.oracle.detail}")
        return self


def prune_through(op_type: str, inputs: Sequence, attrs: dict | None = None, *, ratio: float = 0.5,
                  channel_axis: int | None = None, domain: str = "", outputs: int = 1, opset: int = 17,
                  inexact: bool = False) -> PruneThrough:
    """Prune a small model through the node: a producer for every float run-time input (its channels along
    `channel_axis`, default 1 for rank >= 3 else the last), a consumer for every output axis that those
    channels or the node's own roots reach; then analyse, plan at `ratio`, run the oracle and apply.
    Call `.check()` on the result to assert that something was pruned and the oracle passed."""
    from .api import analyze  # the staged public pipeline (imported late: it loads ONNX Runtime)
    from .config import PruneConfig

    model = _model_around(op_type, inputs, attrs, channel_axis, domain, outputs, opset)
    analysis = analyze(model)
    plan = analysis.plan(PruneConfig(ratio=ratio, round_to=1, inexact=inexact))
    result = analysis.verify(plan)
    pruned = analysis.apply(plan)
    return PruneThrough(f"{op_type} node 'node'", model, analysis, plan, result, pruned)


def _model_around(op_type: str, inputs: Sequence, attrs: dict | None, channel_axis: int | None, domain: str,
                  outputs: int, opset: int):
    specs, runtime, consts = _inputs(inputs)
    nodes, graph_inputs = [], {}
    fed = []
    for name, (shape, dtype) in runtime.items():
        if np.dtype(dtype) != np.float32 or len(shape) < 2:
            graph_inputs[name] = (shape, dtype)
            continue
        axis = channel_axis if channel_axis is not None else (1 if len(shape) >= 3 else len(shape) - 1)
        nodes += _producer(name, tuple(shape), axis % len(shape), graph_inputs, consts)
        fed.append((name, axis % len(shape)))
    outs = [f"out{j}" for j in range(outputs)]
    nodes.append((op_type, specs, outs, dict(attrs or {}), domain, "node"))
    graph = tiny_graph(tiny_model(nodes, graph_inputs, outs, consts, opset))
    producer = graph.producer("out0")
    assert producer is not None  # the node itself: tiny_model just wrote it
    reached = _reached_axes(graph, producer, fed)
    final = []
    for name in outs:
        found = reached.get(name)
        shape = graph.shape(name)
        if found is None or shape is None:
            final.append(name)
            continue
        nodes += _consumer(name, shape, found, consts)
        final.append(f"{name}_y")
    return tiny_model(nodes, graph_inputs, final, consts, opset)


def _reached_axes(graph: Graph, node: Node, fed: list[Space]) -> dict[str, int]:
    """For each output of the node, the first axis that a fed input's channels or a root of the node reach."""
    reached: dict[str, int] = {}
    starts = list(fed)
    for tensor, axis in rule_for(node).roots(node, graph):
        rank = graph.rank(tensor)
        if rank is not None:
            reached.setdefault(tensor, axis % rank)
            starts.append((tensor, axis % rank))
    for tensor, axis in starts:
        for name, out_axis in _visit(graph, node, (tensor, axis), None, Role.OUT).moves:
            if name in node.outputs:
                reached.setdefault(name, out_axis)
    return reached


def _producer(name: str, shape: tuple[int, ...], axis: int, graph_inputs: dict, consts: dict) -> list:
    """Nodes computing run-time tensor `name` of `shape` whose channels along `axis` come from a weight."""
    rng = np.random.default_rng(len(consts))
    c, src = shape[axis], f"{name}_x"
    if axis == 1 and len(shape) >= 3:
        graph_inputs[src] = ((shape[0], 3, *shape[2:]), np.float32)
        consts[f"{name}_w"] = rng.standard_normal((c, 3, *[1] * (len(shape) - 2))).astype(np.float32)
        return [("Conv", [src, f"{name}_w"], [name], {}, "")]
    last = shape[:axis] + shape[axis + 1:] + (c,)  # channels last, then moved to `axis`
    graph_inputs[src] = (last[:-1] + (3,), np.float32)
    consts[f"{name}_w"] = rng.standard_normal((3, c)).astype(np.float32)
    if axis == len(shape) - 1:
        return [("MatMul", [src, f"{name}_w"], [name], {}, "")]
    perm = list(range(axis)) + [len(shape) - 1] + list(range(axis, len(shape) - 1))
    return [("MatMul", [src, f"{name}_w"], [f"{name}_h"], {}, ""),
            ("Transpose", [f"{name}_h"], [name], {"perm": perm}, "")]


def _consumer(name: str, shape: tuple, axis: int, consts: dict) -> list:
    """Nodes reading every channel of `name` along `axis` (a 1x1 Conv or a MatMul), ending in `{name}_y`
    with one channel (a space of size 1 starts no group of its own)."""
    rng = np.random.default_rng(100 + len(consts))
    rank, c = len(shape), shape[axis]
    if axis == 1 and rank >= 3:
        consts[f"{name}_v"] = rng.standard_normal((1, c, *[1] * (rank - 2))).astype(np.float32)
        return [("Conv", [name, f"{name}_v"], [f"{name}_y"], {}, "")]
    consts[f"{name}_v"] = rng.standard_normal((c, 1)).astype(np.float32)
    if axis == rank - 1:
        return [("MatMul", [name, f"{name}_v"], [f"{name}_y"], {}, "")]
    perm = [a for a in range(rank) if a != axis] + [axis]
    return [("Transpose", [name], [f"{name}_t"], {"perm": perm}, ""),
            ("MatMul", [f"{name}_t", f"{name}_v"], [f"{name}_y"], {}, "")]


__all__ = ["Input", "PruneThrough", "Visit", "channel_map", "node_model", "pairs", "plain", "prune_through", "roots",
           "visit"]
