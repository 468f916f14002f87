"""The only mutator: remove the planned channels from a copy of the model.

All groups are applied at once: removed indices are gathered per initializer
axis and per tensor space first (several groups may share a Concat output or
a consumer's weight), then each initializer is cut once, and attributes and
shape constants are set from the new sizes of the spaces they follow.
"""
from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
import onnx

from . import ir
from .errors import CheckFailedError, PlanError
from .group import Group
from .ir import Graph
from .planner import Plan, PlanGroup

log = logging.getLogger(__name__)


class Removal:
    """Indices removed per initializer axis and per tensor space, over all planned groups."""

    def __init__(self) -> None:
        self.slices: dict[str, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
        self.spaces: dict[tuple[str, int], set[int]] = defaultdict(set)
        # the subset of slices that consume the channels (role "in"): the oracle zeroes these
        self.consumed: dict[str, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
        self.edits: dict = {}

    def add(self, group: Group, pruned: tuple[int, ...]) -> None:
        mask = group.mask(pruned)
        for s in group.slices:
            idx = s.indices(mask)
            if len(idx):
                self.slices[s.tensor][s.axis].update(idx.tolist())
                if s.role == "in":
                    self.consumed[s.tensor][s.axis].update(idx.tolist())
        for sp in group.spaces:
            idx = sp.indices(mask)
            if len(idx):
                self.spaces[(sp.tensor, sp.axis)].update(idx.tolist())
        for e in group.edits:
            self.edits[e] = None

    def removed(self, space: tuple[str, int]) -> set[int]:
        """Positions removed from a tensor space, or from an initializer axis (the source of a weight
        computed from constants, whose Slice bounds or Reshape targets follow its cut)."""
        return self.spaces.get(space) or self.slices.get(space[0], {}).get(space[1], set())

    def new_size(self, graph: Graph, space: tuple[str, int]) -> int:
        return int(graph.dim(*space)) - len(self.removed(space))

    def new_value(self, graph: Graph, edit) -> int:
        if edit.offset is not None:
            return edit.offset - sum(1 for p in self.removed(edit.space) if p < edit.offset)
        return self.new_size(graph, edit.space) * edit.mul // edit.div


def matched_groups(groups: list[Group], plan: Plan) -> list[tuple[Group, PlanGroup]]:
    """Pair every plan group with the analysed group it names; refuse a plan for another model."""
    by_id = {g.id: g for g in groups}
    pairs = []
    for pg in plan.groups:
        g = by_id.get(pg.id)
        if g is None or g.root != pg.root or g.size != pg.size:
            found = "no such group" if g is None else f"root {g.root_label} of size {g.size}"
            raise PlanError(f"plan group {pg.id} expects root '{pg.root[0]}' axis {pg.root[1]} of size {pg.size}; "
                            f"the model has {found}")
        if g.frozen_reason:
            raise PlanError(f"plan group {pg.id} ({g.root_label}) is frozen in this model: {g.frozen_reason}")
        bad = [r for r in pg.pruned if not 0 <= r < g.size]
        if bad:
            raise PlanError(f"plan group {pg.id} prunes indices {bad[:5]} outside 0..{g.size - 1}")
        units = set(g.units[list(pg.pruned)].tolist()) if pg.pruned else set()
        whole = set(g.roots_of_units(units).tolist())
        if whole != set(pg.pruned):
            raise PlanError(f"plan group {pg.id} ({g.root_label}) splits coupled channels: "
                            f"{sorted(whole - set(pg.pruned))[:5]} must go with the chosen ones")
        pairs.append((g, pg))
    return pairs


def collect(graph: Graph, groups: list[Group], plan: Plan) -> Removal:
    removal = Removal()
    for g, pg in matched_groups(groups, plan):
        removal.add(g, pg.pruned)
    for space, idx in removal.spaces.items():
        if len(idx) >= int(graph.dim(*space)):
            raise PlanError(f"the plan removes every channel of '{space[0]}' along axis {space[1]}")
    return removal


def apply_plan(graph: Graph, groups: list[Group], plan: Plan, source: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """A pruned copy of `source` (default: the analysed model); `graph` is never changed."""
    removal = collect(graph, groups, plan)
    base = source if source is not None else graph.proto
    originals = ir.initializer_map(base) if source is not None else None
    cut = {}
    for name, axes in removal.slices.items():
        value = graph.const(name) if source is None else ir.to_array(originals[name])
        cut[name] = kept_part(value, axes)
    model = ir.copy_model(base, cut)
    inits = ir.initializer_map(model)
    _apply_edits(graph, removal, model, inits)
    dims: dict[str, dict[int, int]] = defaultdict(dict)
    for space in removal.spaces:
        dims[space[0]][space[1]] = removal.new_size(graph, space)
    ir.set_value_dims(model, dims)
    edited_consts = {e.target[1] for e in removal.edits if e.target[0] == "const"}
    edited_nodes = {graph.nodes[e.target[1]].name for e in removal.edits if e.target[0] == "attr"}
    seeds = set(cut) | edited_consts | {space[0] for space in removal.spaces}
    inferred = ir.refresh_annotations(model, ir.downstream(model, seeds, edited_nodes))
    _check_sizes(removal, graph, inferred)
    log.info("cut %d initializers, %d edits", len(removal.slices), len(removal.edits))
    return model


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


def kept_part(value: np.ndarray, removed: dict[int, set[int]]) -> np.ndarray:
    """`value` without the removed indices along each axis, gathered in one pass (np.delete per
    axis copies a 400 MB matrix once per axis)."""
    keep = [np.arange(n) for n in value.shape]
    for axis, idx in removed.items():
        mask = np.ones(value.shape[axis], dtype=bool)
        mask[np.fromiter(idx, dtype=np.int64)] = False
        keep[axis] = np.nonzero(mask)[0]
    cut = [a for a in range(value.ndim) if len(keep[a]) < value.shape[a]]
    if not cut:
        return value
    if len(cut) == 1:
        return np.take(value, keep[cut[0]], axis=cut[0])
    return value[np.ix_(*keep)]


def _apply_edits(graph: Graph, removal: Removal, model: onnx.ModelProto, inits: dict) -> None:
    consts: dict[str, np.ndarray] = {}
    for edit in removal.edits:
        value = removal.new_value(graph, edit)
        kind = edit.target[0]
        if kind == "const":
            name, element = edit.target[1], edit.target[2]
            arr = consts.setdefault(name, ir.to_array(inits[name]).copy())
            arr.reshape(-1)[element] = value
        else:
            _, node_index, attr, element = edit.target
            node = graph.nodes[node_index]  # node.local within the graph at node.scope (a body)
            if element < 0:
                ir.set_node_attr(model, node.local, attr, int(value), node.scope)
            else:
                values = list(node.attr(attr))
                current = ir.get_node_attr(model, node.local, attr, values, node.scope)
                current[element] = int(value)
                ir.set_node_attr(model, node.local, attr, current, node.scope)
    for name, arr in consts.items():
        ir.replace_initializer(inits[name], arr)


def apply_values(model: onnx.ModelProto, weights: dict[str, np.ndarray],
                 new_biases: list[tuple[str, str, tuple, np.ndarray]] = ()) -> None:
    """Write compensated values into an already pruned model (in place; shapes may not change).

    new_biases: (node name, new initializer name, attach, value); attach ("input", i) makes it input i
    of the node, ("add",) inserts an Add of it behind the node.
    """
    inits = ir.initializer_map(model)
    for name, value in weights.items():
        old = tuple(inits[name].dims)
        if tuple(value.shape) != old:
            raise PlanError(f"compensation would change '{name}' from {list(old)} to {list(value.shape)}")
        ir.replace_initializer(inits[name], value)
    for node_name, bias_name, attach, value in new_biases:
        ir.add_initializer(model, bias_name, value)
        if attach[0] == "input":
            ir.set_node_input(model, node_name, attach[1], bias_name)
        else:
            ir.add_after(model, node_name, "Add", bias_name)
