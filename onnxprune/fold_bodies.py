"""Fold shape arithmetic inside If / Loop / Scan bodies into constants (see fold.py for the top level).

A body's tensors cannot be exposed as outputs of the model, so each body's shape
arithmetic runs on its own in a probe model: the tensors its Shape / Size nodes read
become inputs of their static shape (zeros: only the shape is read), the constants it
reads come along, and the values found become initializers of the body.
"""
from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np

from . import ir
from .errors import BadInputError, CheckFailedError
from .fold import _small, _small_const
from .ir import Graph, ModelProto, Node
from .rules import rule_for
from .runtime import run

log = logging.getLogger(__name__)


def fold_body_arithmetic(graph: Graph) -> ModelProto | None:
    """A copy of the model with the shape arithmetic of its bodies folded, or None if none folds."""
    if not ir.has_static_inputs(graph.proto):
        return None
    by_scope: dict[tuple, list[Node]] = defaultdict(list)
    for node in graph.nodes:
        if node.scope:
            by_scope[node.scope].append(node)
    model = None
    for scope in sorted(by_scope, key=len, reverse=True):  # deeper first: a fold renumbers its own body only
        found = _fold_one(graph, scope, by_scope[scope])
        if found is None:
            continue
        if model is None:
            model = ir.copy_model(graph.proto)
        ir.fold_in_graph(model, scope, *found)
    return model


def _fold_one(graph: Graph, scope: tuple, nodes: list[Node]) -> tuple[dict, set[str]] | None:
    derived: set[str] = set()
    picked: list[Node] = []
    inputs: dict[str, tuple] = {}
    for node in nodes:
        sources = [i for i in node.inputs if i]
        if node.has_subgraph or not sources:
            continue
        if rule_for(node).reads_shape_only:
            if sources[0] not in derived and not graph.is_const(sources[0]):
                shape = graph.shape(sources[0])
                if shape is None or None in shape:
                    continue
                inputs[sources[0]] = tuple(shape)
        elif not (all(i in derived or graph.is_const(i) for i in sources)
                  and (any(i in derived for i in sources) or all(_small_const(graph, i) for i in sources))):
            continue
        derived.update(o for o in node.outputs if o)
        picked.append(node)
    picked_ids = {n.index for n in picked}
    frontier = sorted(name for name in derived  # a body output stays computed (its node stays)
                      if any(n.index not in picked_ids for n, _ in graph.consumers(name))
                      and _small(graph.shape(name)) and not graph.body_users(name))
    if not frontier:
        return None
    probe = ir.probe_model(graph.proto, scope, [n.local for n in picked], inputs, frontier)
    feeds = {name: np.zeros(shape, np.float32) for name, shape in inputs.items()}
    try:
        values = dict(zip(frontier, run(probe, feeds, optimize=False).outputs))
    except (CheckFailedError, BadInputError) as exc:  # ONNX Runtime cannot run it: the body stays as it is
        names = ", ".join(f"'{n.name}'" for n in picked[:5]) + (" ..." if len(picked) > 5 else "")
        log.info("shape arithmetic of a body not folded (nodes %s): %s", names, exc)
        return None
    log.info("folded %d shape-arithmetic tensors of a body into constants", len(values))
    return values, derived
