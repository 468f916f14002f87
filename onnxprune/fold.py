"""Fold shape arithmetic into constants when the model's inputs are fully static.

Exporters compute Reshape targets, Slice bounds and Resize sizes at run time
from `Shape` (Shape -> Gather -> Div -> Concat ...). With static input shapes
these values never change, so they are evaluated once with ONNX Runtime and
stored as initializers: the rules can then read and rewrite them like any
other constant. Models with a dynamic input dimension are left untouched.
"""
from __future__ import annotations

import logging

import numpy as np

from . import ir
from .ir import Graph, ModelProto
from .rules import rule_for
from .validate import evaluate, evaluate_constants

log = logging.getLogger(__name__)

MAX_FOLDED_ELEMENTS = 1 << 20
# A node reading only integer constants this small (shape-like: ConstantOfShape, Range, Where of
# shape vectors) is shape arithmetic too; float and larger constants are weights, left as they are.
MAX_SEED_ELEMENTS = 64


def foldable_tensors(graph: Graph, constants_only: bool = False) -> tuple[set[str], list[str]]:
    """(every tensor computed from shapes and constants only, the ones read by other nodes).

    A node counts when it reads a shape that shape inference knows statically (it then holds for
    every input value), or reads only such tensors and constants, or reads only small integer
    (shape-like) constants. Random ops never count. With `constants_only`, no shape read counts
    (for a model with dynamic inputs).

    Call only when every model input is static, or with `constants_only`.
    """
    derived: set[str] = set()
    derived_nodes = set()
    for node in graph.nodes:
        if node.has_subgraph or node.scope or not node.inputs:
            continue
        sources = [i for i in node.inputs if i]
        if not sources:
            continue
        rule = rule_for(node)
        if not rule.deterministic:
            continue
        if rule.reads_shape_only:
            if constants_only or not rule.static_shape_read(node, graph):
                continue  # a shape that depends on input values (Pad by an input's values, NonZero...)
        elif not (all(i in derived or graph.is_const(i) for i in sources)
                  and (any(i in derived for i in sources) or all(_small_const(graph, i) for i in sources)
                       or _parameter_of_readers(graph, node, sources))):
            continue
        derived.update(o for o in node.outputs if o)
        derived_nodes.add(node.index)
    frontier = []
    for name in derived:
        readers = graph.consumers(name)
        if graph.is_graph_output(name):
            continue
        if any(n.index not in derived_nodes for n, _ in readers) and _small(graph.shape(name)):
            frontier.append(name)
    return derived, sorted(frontier)


def _small_const(graph: Graph, name: str) -> bool:
    """A small integer (or boolean) constant: a shape vector or an element of one."""
    if _numel(graph, name) > MAX_SEED_ELEMENTS:
        return False
    kind = ir.constant(graph, name).dtype.kind
    return kind in "iub"


def _parameter_of_readers(graph: Graph, node, sources: list[str]) -> bool:
    """A node of small constants (any type) whose outputs are read only as their readers' own
    parameters (`Rule.parameter_inputs`, e.g. a Cast of Resize scales): shape arithmetic too."""
    if not all(graph.is_const(i) and _numel(graph, i) <= MAX_SEED_ELEMENTS for i in sources):
        return False
    readers = [r for o in node.outputs if o for r in graph.consumers(o)]
    return bool(readers) and all(i in rule_for(r).parameter_inputs for r, i in readers)


def _numel(graph: Graph, name: str) -> int:
    n = 1
    for d in graph.const_shape(name):
        n *= d
    return n


def _static(shape) -> bool:
    return shape is not None and None not in shape


def _small(shape) -> bool:
    if not _static(shape):
        return True  # shape arithmetic is small; unknown only until folded
    n = 1
    for d in shape:
        n *= d
    return n <= MAX_FOLDED_ELEMENTS


def fold_shape_arithmetic(graph: Graph) -> ModelProto | None:
    """A copy of the model with shape arithmetic replaced by initializers, or None if nothing folds.
    With a dynamic input dimension only constant arithmetic folds (shapes would bake one size in)."""
    static = ir.has_static_inputs(graph.proto)
    derived, frontier = foldable_tensors(graph, constants_only=not static)
    if not frontier:
        return None
    if static:
        producers = [node.name for node in (graph.producer(n) for n in frontier) if node is not None]
        values = evaluate(graph.proto, frontier, {n: tuple(graph.shape(n) or ()) for n in graph.graph_inputs},
                          producers)
    else:
        values = evaluate_constants(graph.proto, frontier)
    if values is not None:  # sequences and optionals stay computed
        values = {n: v for n, v in values.items() if isinstance(v, np.ndarray)}
    if not values:
        return None
    folded = ir.replace_with_constants(graph.proto, values, derived)
    ir.normalise(folded)  # a folded target read by several Reshapes (all layers) gets one copy per reader
    log.info("folded %d shape-arithmetic tensors into constants", len(values))
    return folded
