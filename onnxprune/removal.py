"""What a plan removes: the indices per initializer axis and per tensor space, over all its groups.

Several groups may share a Concat output or a consumer's weight, so the removed
indices are gathered per tensor first; `apply.py` then cuts each tensor once.
Nothing here touches the model.
"""
from __future__ import annotations

from collections import defaultdict

from . import cache_io, ir
from .errors import PlanError
from .group import Group
from .ir import Graph
from .planner import Plan, PlanGroup


class Removal:
    """Indices removed per initializer axis and per tensor space, over all planned groups."""

    def __init__(self) -> None:
        self.slices: dict[str, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
        self.spaces: dict[tuple[str, int], set[int]] = defaultdict(set)
        # the subset of slices that consume the channels (role "in"): the oracle zeroes these
        self.consumed: dict[str, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
        # and, for groups reaching a run-time quantization range, every slice (Group.shared_range_reasons)
        self.silenced: dict[str, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
        self.edits: dict = {}

    def add(self, group: Group, pruned: tuple[int, ...]) -> None:
        mask = group.mask(pruned)
        for s in group.slices:
            idx = s.indices(mask)
            if len(idx):
                self.slices[s.tensor][s.axis].update(idx.tolist())
                if s.role == "in":
                    self.consumed[s.tensor][s.axis].update(idx.tolist())
                if group.shared_range_reasons or s.role == "in":
                    self.silenced[s.tensor][s.axis].update(idx.tolist())
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
        return ir.static_dim(graph, *space) - len(self.removed(space))

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
    """The removal of every group of `plan`; raises PlanError for a plan that does not fit the groups or
    that would empty a tensor space."""
    removal = Removal()
    for g, pg in matched_groups(groups, plan):
        removal.add(g, pg.pruned)
    for space, idx in removal.spaces.items():
        if len(idx) >= ir.static_dim(graph, *space):
            raise PlanError(f"the plan removes every channel of '{space[0]}' along axis {space[1]}")
    return removal


def interface_changes(graph: Graph, groups: list[Group], plan: Plan) -> dict[str, tuple[int, list[int]]]:
    """The KV-cache graph inputs / outputs the plan changes (Group.interface): name -> (axis, removed)."""
    names = {t for g, _ in matched_groups(groups, plan) for t in g.interface}
    return cache_io.changes(collect(graph, groups, plan).spaces, names) if names else {}
