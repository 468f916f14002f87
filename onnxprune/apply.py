"""The only mutator: remove the planned channels from a copy of the model.

All groups are applied at once: `removal.collect` gathers the removed indices
per initializer axis and per tensor space; here each initializer's kept part,
the new values of attributes and shape constants (from the new sizes of the
spaces they follow) and the new dims are computed, written by `ir.cut_model`,
and checked against ONNX shape inference.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import numpy as np

from . import ir
from .errors import CheckFailedError, PlanError
from .group import Group
from .ir import Graph, ModelProto
from .planner import Plan
from .removal import Removal, collect, matched_groups

__all__ = ["Removal", "apply_plan", "apply_values", "collect", "kept_part", "matched_groups"]

log = logging.getLogger(__name__)


def apply_plan(graph: Graph, groups: list[Group], plan: Plan, source: ModelProto | None = None) -> ModelProto:
    """A pruned copy of `source` (default: the analysed model); `graph` is never changed."""
    removal = collect(graph, groups, plan)
    base = source if source is not None else graph.proto
    read = graph.const if source is None else ir.initializer_reader(source)
    stays = ir.on_disk(base)  # external weights: cut when the output is written, never read whole here
    shapes = ir.initializer_shapes(base, [name for name in removal.slices if name in stays])
    cut = {name: ir.Kept(kept_indices(shapes[name], axes)) if name in stays
           else kept_part(_present(read(name), name), axes) for name, axes in removal.slices.items()}
    elements, attrs = _edits(graph, removal)
    dims: dict[str, dict[int, int]] = defaultdict(dict)
    for space in removal.spaces:
        dims[space[0]][space[1]] = removal.new_size(graph, space)
    model = ir.cut_model(base, ir.Cut(cut, elements, attrs, dims))
    edited_consts = {e.target[1] for e in removal.edits if e.target[0] == "const"}
    edited_nodes = {graph.nodes[e.target[1]].name for e in removal.edits if e.target[0] == "attr"}
    seeds = set(cut) | edited_consts | {space[0] for space in removal.spaces}
    inferred = ir.refresh_annotations(model, ir.downstream(model, seeds, edited_nodes))
    _check_sizes(removal, graph, inferred)
    log.info("cut %d initializers, %d edits", len(removal.slices), len(removal.edits))
    return model


def _present(value: np.ndarray | None, name: str) -> np.ndarray:
    if value is None:
        raise PlanError(f"the plan cuts initializer '{name}', which the model has not")
    return value


def _check_sizes(removal: Removal, graph: Graph, inferred: dict) -> None:
    """Postcondition: ONNX shape inference on the pruned model agrees with the plan's new sizes."""
    for space in removal.spaces:
        shape = inferred.get(space[0])
        if shape is None or not 0 <= space[1] < len(shape) or shape[space[1]] is None:
            continue  # inference cannot tell (a dynamic or contrib-op shape): the runtime check decides
        expected = removal.new_size(graph, space)
        if shape[space[1]] != expected:
            raise CheckFailedError(f"pruned tensor '{space[0]}' axis {space[1]}: the plan gives it {expected} "
                                   f"channels, but ONNX shape inference of the pruned model finds {shape[space[1]]}")


def kept_indices(shape: tuple[int, ...], removed: dict[int, set[int]]) -> dict[int, np.ndarray]:
    """Axis -> the indices kept along it, for each axis that loses some."""
    keep = {}
    for axis, idx in removed.items():
        mask = np.ones(shape[axis], dtype=bool)
        mask[np.fromiter(idx, dtype=np.int64)] = False
        if not mask.all():
            keep[axis] = np.nonzero(mask)[0]
    return keep


def kept_part(value: np.ndarray, removed: dict[int, set[int]]) -> np.ndarray:
    """`value` without the removed indices along each axis, gathered in one pass (np.delete per
    axis copies a 400 MB matrix once per axis)."""
    return ir.take_kept(value, kept_indices(value.shape, removed))


def _edits(graph: Graph, removal: Removal) -> tuple[dict[str, dict[int, Any]], list[ir.AttrEdit]]:
    """The new values of the shape constants and attributes the removal edits, in the order of its edits."""
    elements: dict[str, dict[int, Any]] = defaultdict(dict)
    attrs = []
    for edit in removal.edits:
        value = removal.new_value(graph, edit)
        if edit.target[0] == "const":
            elements[edit.target[1]][edit.target[2]] = value
        else:
            _, node_index, attr, element = edit.target
            node = graph.nodes[node_index]  # node.local within the graph at node.scope (a body)
            default = tuple(node.attr(attr)) if element >= 0 else ()
            attrs.append(ir.AttrEdit(node.scope, node.local, attr, element, value, default))
    return elements, attrs


def apply_values(model: ModelProto, weights: dict[str, np.ndarray],
                 new_biases: list[tuple[str, str, tuple, np.ndarray]] | tuple = ()) -> None:
    """Write compensated values into an already pruned model (in place; shapes may not change).

    new_biases: (node name, new initializer name, attach, value); attach ("input", i) makes it input i
    of the node, ("add",) inserts an Add of it behind the node.
    """
    shapes = ir.initializer_shapes(model, weights)
    for name, value in weights.items():
        if tuple(value.shape) != shapes[name]:
            raise PlanError(f"compensation would change '{name}' from {list(shapes[name])} to {list(value.shape)}")
    ir.set_initializers(model, weights)
    for node_name, bias_name, attach, value in new_biases:
        ir.add_initializer(model, bias_name, value)
        if attach[0] == "input":
            ir.set_node_input(model, node_name, attach[1], bias_name)
        else:
            ir.add_after(model, node_name, "Add", bias_name)
