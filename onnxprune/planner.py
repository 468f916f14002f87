"""From groups and scores to a plan: which root channels of which group go.

The plan is the tool's central artefact, JSON-serialisable (see DESIGN.md).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from .errors import PlanError
from .group import Group

PLAN_VERSION = 1


@dataclass(frozen=True)
class PlanGroup:
    id: int
    root: tuple[str, int]
    exact: bool
    size: int
    pruned: tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    groups: tuple[PlanGroup, ...]
    frozen: tuple[tuple[str, str], ...] = ()
    meta: dict = field(default_factory=dict)

    def only_exact(self) -> "Plan":
        return Plan(tuple(g for g in self.groups if g.exact), self.frozen, self.meta)

    def to_json(self, groups: list[Group] | None = None) -> dict:
        by_id = {g.id: g for g in groups or []}
        out = []
        for pg in self.groups:
            item = {"id": pg.id, "root": {"tensor": pg.root[0], "axis": pg.root[1]}, "exact": pg.exact,
                    "size": pg.size, "pruned": list(pg.pruned)}
            if pg.id in by_id:
                item["slices"] = slices_json(by_id[pg.id], pg.pruned)
            out.append(item)
        return {"version": PLAN_VERSION, "groups": out,
                "frozen": [{"space": s, "reason": r} for s, r in self.frozen], "meta": self.meta}

    @staticmethod
    def from_json(data: dict) -> "Plan":
        try:
            groups = tuple(
                PlanGroup(int(g["id"]), (str(g["root"]["tensor"]), int(g["root"]["axis"])), bool(g.get("exact", True)),
                          int(g["size"]), tuple(int(i) for i in g["pruned"]))
                for g in data["groups"])
            frozen = tuple((str(f["space"]), str(f["reason"])) for f in data.get("frozen", []))
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"plan is malformed: missing or bad field {exc}") from None
        return Plan(groups, frozen, dict(data.get("meta", {})))

    def save(self, path: str, groups: list[Group] | None = None) -> None:
        with open(path, "w") as f:
            json.dump(self.to_json(groups), f, indent=1)

    @staticmethod
    def load(path: str) -> "Plan":
        try:
            with open(path) as f:
                data = json.load(f)
        except OSError as exc:
            raise PlanError(f"cannot read plan '{path}': {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise PlanError(f"plan '{path}' is not valid JSON: {exc}") from None
        return Plan.from_json(data)


def slices_json(group: Group, pruned) -> list[dict]:
    mask = group.mask(pruned)
    return [{"tensor": s.tensor, "axis": s.axis, "indices": s.indices(mask).tolist(), "role": s.role}
            for s in group.slices if len(s.indices(mask))]


def choose_units(group: Group, unit_scores: np.ndarray, n_prune: int) -> np.ndarray:
    """The n_prune lowest-scoring units that leave every space of the group non-empty."""
    order = np.argsort(unit_scores, kind="stable")
    kept = {(s.tensor, s.axis): s.size for s in group.spaces}
    n_units = group.unit_count
    per_unit: list[dict] = [dict() for _ in range(n_units)]
    for s in group.spaces:
        # a position shared by coupled roots belongs to one unit: count it once
        keys = np.unique(s.positions * n_units + group.units[s.roots])
        counts = np.bincount(keys % n_units, minlength=n_units)
        for u in np.nonzero(counts)[0]:
            per_unit[u][(s.tensor, s.axis)] = int(counts[u])
    chosen = []
    for u in order:
        if len(chosen) >= n_prune:
            break
        if all(kept[k] - c >= 1 for k, c in per_unit[u].items()):
            for k, c in per_unit[u].items():
                kept[k] -= c
            chosen.append(int(u))
    return np.array(sorted(chosen), dtype=np.int64)


def local_count(units: int, ratio: float) -> int:
    """Units to remove at a per-group channel ratio; at least one unit always stays."""
    return max(0, min(units - 1, int(math.floor(units * ratio + 1e-9))))


def make_plan(groups: list[Group], scores: dict[int, np.ndarray], ratio: float) -> Plan:
    """Local pruning: remove `ratio` of the units of every prunable group, lowest scores first."""
    chosen = []
    for g in groups:
        if not g.prunable or g.id not in scores:
            continue
        units = choose_units(g, scores[g.id], local_count(g.unit_count, ratio))
        if len(units):
            roots = g.roots_of_units(units)
            chosen.append(PlanGroup(g.id, g.root, g.exact, g.size, tuple(int(r) for r in roots)))
    frozen = tuple((g.root_label, g.frozen_reason) for g in groups if g.frozen_reason)
    return Plan(tuple(chosen), frozen, {"ratio": ratio})
