"""Subgraph bodies (If branches, Loop and Scan bodies): walking, addressing and normalising them.

A body is addressed by its scope: the path of (node index in the enclosing graph, attribute
name) from the top-level graph down to it; the top-level graph has the empty scope.
"""
from __future__ import annotations

from typing import Callable, Iterator

import onnx

Scope = tuple  # of (int, str)


def bodies(node: onnx.NodeProto) -> list[tuple[str, onnx.GraphProto]]:
    """(attribute name, graph) of every single-graph attribute of a node (If, Loop, Scan bodies)."""
    return [(a.name, a.g) for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]


def walk(graph: onnx.GraphProto, scope: Scope = ()) -> Iterator[tuple[Scope, onnx.GraphProto]]:
    """Every graph from `graph` down (the graph itself first), each with its scope."""
    yield scope, graph
    for i, n in enumerate(graph.node):
        for attr, body in bodies(n):
            yield from walk(body, scope + ((i, attr),))


def resolve(graph: onnx.GraphProto, scope: Scope) -> onnx.GraphProto:
    """The body at `scope` below `graph`."""
    for index, attr in scope:
        (body,) = [g for name, g in bodies(graph.node[index]) if name == attr]
        graph = body
    return graph


def normalise_bodies(model: onnx.ModelProto, constants_to_initializers: Callable[[onnx.GraphProto], None]) -> None:
    """Make body names unique over the whole model (sibling branches may reuse a name), turn
    body Constant nodes into body initializers and name every body node."""
    top = model.graph
    taken = _defined(top) | {n.name for n in top.node}
    for scope, body in list(walk(top))[1:]:
        _rename_clashes(body, taken)
        constants_to_initializers(body)
        for i, n in enumerate(body.node):
            name = n.name or f"{n.op_type}_{'_'.join(str(s[0]) for s in scope)}_{i}"
            while name in taken:
                name += "_"
            n.name = name
            taken.add(name)


def top_level_tensors(model: onnx.ModelProto) -> set[str]:
    """Tensor names of the top-level graph (those a model can expose as outputs; not body tensors)."""
    return _defined(model.graph)


def defined(g: onnx.GraphProto) -> set[str]:
    """Names a graph defines: its inputs, initializers and node outputs (not its bodies')."""
    return _defined(g)


def _defined(g: onnx.GraphProto) -> set[str]:
    names = {i.name for i in g.input} | {t.name for t in g.initializer}
    for n in g.node:
        names.update(o for o in n.output if o)
    return names


def _rename_clashes(body: onnx.GraphProto, taken: set[str]) -> None:
    """Rename the tensors `body` defines that another graph already defines (ONNX forbids
    shadowing an enclosing name, but sibling bodies may share names)."""
    alias: dict[str, str] = {}
    for name in sorted(_defined(body)):
        if name in taken:
            new = name
            while new in taken:
                new += "_"
            alias[name] = new
        taken.add(alias.get(name, name))
    if alias:
        _rename_in(body, alias)


def _rename_in(g: onnx.GraphProto, alias: dict[str, str]) -> None:
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        vi.name = alias.get(vi.name, vi.name)
    for t in g.initializer:
        t.name = alias.get(t.name, t.name)
    for n in g.node:
        n.input[:] = [alias.get(x, x) for x in n.input]
        n.output[:] = [alias.get(x, x) for x in n.output]
        for _, body in bodies(n):  # nested bodies read these names from their outer scope
            inner = {k: v for k, v in alias.items() if k not in _defined(body)}
            if inner:
                _rename_in(body, inner)
