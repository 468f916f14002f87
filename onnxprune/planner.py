"""From groups and scores to a plan: which root channels of which group go.

The plan is the tool's central artefact, JSON-serialisable (see DESIGN.md).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from . import indexmap, paths
from .errors import PlanError
from .group import Group

PLAN_VERSION = 1
MAX_PLAN_BYTES = 1 << 28  # a plan lists root indices and slices: megabytes even for a large model
# Added to `count * ratio` before flooring it to a whole number of units: the product of a count
# and a decimal ratio can land a hair below the whole number it means (100 * 0.29 = 28.999999999999996),
# and the floor would then drop a unit. Far below any real step (1 / count).
RATIO_SLACK = 1e-9

# internal tensor name -> (tensor of the input model, consuming node, input index), for the
# load-time copies of shared constants (ir.Graph.input_coordinates)
Names = Mapping[str, tuple[str, str, int]]


@dataclass(frozen=True)
class PlanGroup:
    """One pruned group of a plan: the root indices (`pruned`) removed from root space `root`."""

    id: int
    root: tuple[str, int]
    exact: bool
    size: int
    pruned: tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    """The pruned groups, the frozen spaces with their reasons, and how the plan was made (`meta`).

    A plan never changes: `meta` is a read-only copy of the mapping it was made with (`with_meta`
    makes a plan with more of it), so plans derived from one another share nothing mutable.
    """

    groups: tuple[PlanGroup, ...]
    frozen: tuple[tuple[str, str], ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "meta", MappingProxyType(copy.deepcopy(dict(self.meta))))

    def __hash__(self) -> int:  # meta (a mapping) is left out: equal plans still hash alike
        return hash((self.groups, self.frozen))

    def __reduce__(self):  # pickle and copy.deepcopy: a mappingproxy cannot be pickled, its dict can
        return (Plan, (self.groups, self.frozen, dict(self.meta)))

    def with_meta(self, **entries: Any) -> "Plan":
        """The same plan with `entries` added to (or replacing those of) its meta."""
        return dataclasses.replace(self, meta={**self.meta, **entries})

    def only_exact(self) -> "Plan":
        """The plan without its inexact groups (same frozen spaces and meta)."""
        return Plan(tuple(g for g in self.groups if g.exact), self.frozen, self.meta)

    def to_json(self, groups: list[Group] | None = None, names: Names | None = None) -> dict:
        """The plan file's content, in the input model's coordinates when `names` is given: a
        slice of a load-time copy of a shared constant names the constant itself plus the
        consuming `node` and `input` index (see ir.Graph.input_coordinates). Roots are node
        outputs, never copies, so a plan read back (`--plan-in`) needs no translation."""
        names = names or {}
        by_id = {g.id: g for g in groups or []}
        out = []
        for pg in self.groups:
            item = {"id": pg.id, "root": {"tensor": pg.root[0], "axis": pg.root[1]}, "exact": pg.exact,
                    "size": pg.size, "pruned": list(pg.pruned)}
            if pg.id in by_id:
                item["slices"] = slices_json(by_id[pg.id], pg.pruned, names)
            out.append(item)
        return {"version": PLAN_VERSION, "groups": out,
                "frozen": [_frozen_json(s, r, names) for s, r in self.frozen], "meta": copy.deepcopy(dict(self.meta))}

    @staticmethod
    def from_json(data: dict, origin: str = "plan is malformed") -> "Plan":
        """A plan from its JSON form; raises PlanError naming the first bad field."""
        if not isinstance(data, dict):
            raise PlanError(f"{origin}: expected a JSON object with 'groups', found {type(data).__name__}")
        version = data.get("version", PLAN_VERSION)
        if version != PLAN_VERSION or isinstance(version, bool):
            raise PlanError(f"{origin}: plan version {version!r} is not supported (expected {PLAN_VERSION})")
        groups = _field(data, "groups", list, origin)
        frozen = data.get("frozen", [])
        meta = data.get("meta", {})
        if not isinstance(frozen, list) or not all(isinstance(f, dict) for f in frozen):
            raise PlanError(f"{origin}: 'frozen' must be a list of objects, found {_json_type(frozen)}")
        if not isinstance(meta, dict):
            raise PlanError(f"{origin}: 'meta' must be an object, found {_json_type(meta)}")
        try:
            plan_groups = tuple(_plan_group(g, f"{origin}: groups[{i}]") for i, g in enumerate(groups))
            frozen_spaces = tuple((str(f["space"]), str(f["reason"])) for f in frozen)
        except KeyError as exc:
            raise PlanError(f"{origin}: missing field {exc}") from None
        ids = [g.id for g in plan_groups]
        if len(set(ids)) != len(ids):
            raise PlanError(f"{origin}: group ids repeat: {sorted(i for i, n in Counter(ids).items() if n > 1)[:5]}")
        return Plan(plan_groups, frozen_spaces, dict(meta))

    def save(self, path: str, groups: list[Group] | None = None, names: Names | None = None) -> None:
        """Write the plan file; `names` (ir.Graph.input_coordinates) puts it in the input model's coordinates."""
        paths.write_text(path, json.dumps(self.to_json(groups, names), indent=1))

    @staticmethod
    def load(path: str) -> "Plan":
        """Read a plan file; raises PlanError when it cannot be read or is not a plan."""
        try:
            size = os.path.getsize(path)
            if os.path.isdir(path):
                raise PlanError(f"plan path '{path}' is a directory, not a JSON file")
            if size > MAX_PLAN_BYTES:
                raise PlanError(f"plan '{path}' is {size} bytes; plans over {MAX_PLAN_BYTES} bytes are refused")
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as exc:
            raise PlanError(f"cannot read plan '{path}': {exc.strerror}") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise PlanError(f"plan '{path}' is not UTF-8 text (byte {raw[exc.start:exc.start + 1]!r} at "
                            f"position {exc.start}); is it a plan written by --plan-out?") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"plan '{path}' is not valid JSON: {exc}") from None
        except RecursionError:
            raise PlanError(f"plan '{path}' nests its JSON too deeply to be a plan") from None
        return Plan.from_json(data, f"plan '{path}' is malformed")


def _json_type(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def _field(data: dict, key: str, kind: type, where: str):
    if key not in data:
        raise PlanError(f"{where}: missing field '{key}'")
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PlanError(f"{where}: '{key}' must be {_json_type(kind())}, found {_json_type(value)} {str(value)[:40]}")
    return value


def _plan_group(g, where: str) -> PlanGroup:
    if not isinstance(g, dict):
        raise PlanError(f"{where} must be an object, found {_json_type(g)}")
    root = _field(g, "root", dict, where)
    pruned = _field(g, "pruned", list, where)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in pruned):
        bad = next(i for i in pruned if not isinstance(i, int) or isinstance(i, bool))
        raise PlanError(f"{where}: 'pruned' must hold integer channel indices, found {_json_type(bad)} {str(bad)[:40]}")
    exact = g.get("exact", True)
    if not isinstance(exact, bool):
        raise PlanError(f"{where}: 'exact' must be true or false, found {_json_type(exact)}")
    size = _field(g, "size", int, where)
    if len(set(pruned)) != len(pruned):
        repeated = sorted(i for i, n in Counter(pruned).items() if n > 1)[:5]
        raise PlanError(f"{where}: 'pruned' repeats channel indices {repeated}")
    if size <= 0 or any(i < 0 or i >= size for i in pruned):
        raise PlanError(f"{where}: 'pruned' indices must lie in [0, size={size}), found "
                        f"{[i for i in pruned if i < 0 or i >= size][:5] or 'size <= 0'}")
    return PlanGroup(_field(g, "id", int, where), (str(_field(root, "tensor", str, where + ".root")),
                                                   _field(root, "axis", int, where + ".root")),
                     exact, size, tuple(pruned))


def slices_json(group: Group, pruned, names: Names | None = None) -> list[dict]:
    """The plan-file slices of `group` when root indices `pruned` go (tensor coordinates; with
    `names`, a shared constant's copy is named as the constant and its consuming node and input)."""
    mask = group.mask(pruned)
    out = []
    for s in group.slices:
        idx = s.indices(mask)
        if len(idx):
            out.append({**tensor_ref(s.tensor, names or {}), "axis": s.axis, "indices": idx.tolist(), "role": s.role})
    return out


def tensor_ref(name: str, names: Names) -> dict:
    """`{"tensor": ...}` in the input model's names, plus `node` and `input` for a shared constant's copy."""
    if name in names:
        tensor, node, index = names[name]
        return {"tensor": tensor, "node": node, "input": index}
    return {"tensor": name}


def _frozen_json(space: str, reason: str, names: Names) -> dict:
    """A frozen entry (its space is a root, a node output); a load-time copy a reason quotes
    is named as its constant."""
    if names:
        reason = _QUOTED.sub(lambda m: f"'{names[m.group(1)][0]}'" if m.group(1) in names else m.group(0), reason)
    return {"space": space, "reason": reason}


_QUOTED = re.compile(r"'([^']*)'")


@dataclass(frozen=True)
class PlanOptions:
    """How many units of which group go. Group ids are already resolved (see selection.py).

    * `ratio`: local mode, the fraction of units removed from every group; global
      mode, the fraction of all ranked units removed.
    * `global_ranking`: rank the units of all groups together, each group's unit
      scores divided by their mean (mean normalisation), at most `max_ratio` of
      any group's units removed.
    * `round_to`: keep a multiple of this many root channels in every pruned group; the kept
      count is rounded up, so a little less than `ratio` goes (targets compensate), and a
      group smaller than `round_to` is left whole.
    * `ratio_for`: group id -> its own local ratio (outside the global ranking).
    * `ignored`: group ids that are never pruned.
    """

    ratio: float = 0.3
    global_ranking: bool = False
    max_ratio: float = 0.9
    round_to: int = 1
    ratio_for: Mapping[int, float] = field(default_factory=dict)
    ignored: frozenset[int] = frozenset()


class UnitTable:
    """What removing each unit of a group costs each of its spaces; built once per group."""

    def __init__(self, group: Group):
        self.group = group
        n_units = group.unit_count
        self.roots_per_unit = np.bincount(group.units, minlength=n_units)
        self.space_size = {(s.tensor, s.axis): s.size for s in group.spaces}
        # per space, how many of its positions each unit holds
        self.positions_of: dict[tuple[str, int], np.ndarray] = {}
        for s in group.spaces:
            # a position shared by coupled roots belongs to one unit: count it once
            keys = indexmap.unique(s.positions * n_units + group.units[s.roots])
            counts = np.bincount(keys % n_units, minlength=n_units)
            self.positions_of[(s.tensor, s.axis)] = counts
        self.per_unit: list[dict] = []  # filled on first need: most plans never leave the prefix

    def choose(self, unit_scores: np.ndarray, n_prune: int, round_to: int = 1) -> np.ndarray:
        """The lowest-scoring units, about `n_prune` of them, leaving every space non-empty and
        the kept root count a non-zero multiple of `round_to`: the multiple nearest to what `n_prune`
        keeps (a tie keeps more), then larger ones while no set of units fits it exactly."""
        if n_prune <= 0:
            return np.zeros(0, dtype=np.int64)
        order = np.argsort(unit_scores, kind="stable")
        if round_to <= 1:
            return self._take(order, n_units=n_prune)
        size = self.group.size
        wanted = int(self.roots_per_unit[order[:n_prune]].sum())
        # nearest multiple, so the share removed stays as close to the ratio as the steps allow
        kept = max(1, math.floor((size - wanted) / round_to + 0.5)) * round_to
        while kept < size:
            chosen = self._take(order, n_roots=size - kept)
            if len(chosen):
                return chosen
            kept += round_to
        return np.zeros(0, dtype=np.int64)

    def _take(self, order: np.ndarray, n_units: int | None = None, n_roots: int | None = None) -> np.ndarray:
        """Greedy in score order: `n_units` units, or exactly `n_roots` roots (empty if impossible)."""
        order = np.asarray(order, dtype=np.int64)
        start = self._accepted_prefix(order, n_units, n_roots)
        taken = order[:start]
        kept = {k: size - int(self.positions_of[k][taken].sum()) for k, size in self.space_size.items()}
        chosen = [int(u) for u in taken]
        budget = None if n_roots is None else n_roots - int(self.roots_per_unit[taken].sum())
        for u in order[start:]:
            if (n_units is not None and len(chosen) >= n_units) or budget == 0:
                break
            cost = int(self.roots_per_unit[u])
            if budget is not None and cost > budget:
                continue
            holds = self._per_unit()[u]
            if all(kept[k] - c >= 1 for k, c in holds.items()):
                for k, c in holds.items():
                    kept[k] -= c
                chosen.append(int(u))
                budget = None if budget is None else budget - cost
        if budget:
            return np.zeros(0, dtype=np.int64)
        return np.array(sorted(chosen), dtype=np.int64)

    def _accepted_prefix(self, order: np.ndarray, n_units: int | None, n_roots: int | None) -> int:
        """How many leading units of `order` the greedy takes one after another without skipping: while
        every space keeps a position, the root budget holds, and the unit count is not reached."""
        limit = len(order) if n_units is None else min(n_units, len(order))
        if n_roots is not None:  # a unit is taken while roots are still wanted and it fits what is left
            after = np.cumsum(self.roots_per_unit[order[:limit]])
            before = after - self.roots_per_unit[order[:limit]]
            limit = min(int(np.searchsorted(after, n_roots, side="right")),
                        int(np.searchsorted(before, n_roots, side="left")))
        for key, size in self.space_size.items():
            used = np.cumsum(self.positions_of[key][order[:limit]])
            limit = min(limit, int(np.searchsorted(used, size - 1, side="right")))
        return limit

    def _per_unit(self) -> list[dict]:
        if not self.per_unit:
            self.per_unit = [dict() for _ in range(self.group.unit_count)]
            for key, counts in self.positions_of.items():
                for u in np.nonzero(counts)[0]:
                    self.per_unit[u][key] = int(counts[u])
        return self.per_unit


def local_count(units: int, ratio: float) -> int:
    """Units to remove at a per-group channel ratio; at least one unit always stays."""
    return max(0, min(units - 1, int(math.floor(units * ratio + RATIO_SLACK))))


def normalised(scores: np.ndarray) -> np.ndarray:
    """Mean normalisation for global ranking: scores / mean(scores) (all ones when the mean is 0)."""
    mean = float(np.mean(scores)) if len(scores) else 0.0
    return scores / mean if mean > 0 else np.ones_like(scores, dtype=np.float64)


def global_counts(groups: list[Group], scores: Mapping[int, np.ndarray], ratio: float,
                  max_ratio: float) -> dict[int, int]:
    """Units to remove per group when the lowest `ratio` of all units (normalised scores) go,
    no group losing more than `max_ratio` of its units."""
    if not groups:
        return {}
    gids = np.concatenate([np.full(g.unit_count, g.id) for g in groups])
    values = np.concatenate([normalised(scores[g.id]) for g in groups])
    order = np.lexsort((gids, values))
    caps = {g.id: local_count(g.unit_count, max_ratio) for g in groups}
    taken = {g.id: 0 for g in groups}
    budget = int(math.floor(len(values) * ratio + RATIO_SLACK))
    for gid in gids[order]:
        if budget <= 0:
            break
        gid = int(gid)
        if taken[gid] < caps[gid]:
            taken[gid] += 1
            budget -= 1
    return taken


def proportional_counts(groups: list[Group], ratio: float) -> dict[int, int]:
    """Local pruning in steps of one unit: `ratio` of all units go, each group giving them up in
    proportion to its size (the i-th unit of a group of n comes at (i + 1) / n). At the ratios where
    every group's share is whole this is the uniform ratio; in between it moves one unit at a time,
    which lets targets land close on small models."""
    if not groups:
        return {}
    gids = np.concatenate([np.full(g.unit_count - 1, g.id) for g in groups])
    keys = np.concatenate([(np.arange(g.unit_count - 1) + 1) / g.unit_count for g in groups])
    order = np.lexsort((gids, keys))
    budget = int(math.floor(sum(g.unit_count for g in groups) * ratio + RATIO_SLACK))
    taken = np.bincount(np.searchsorted(sorted({g.id for g in groups}), gids[order[:budget]]),
                        minlength=len(groups))
    return {gid: int(n) for gid, n in zip(sorted({g.id for g in groups}), taken)}


class Planner:
    """Plans for one set of scored groups; cheap to call again at another ratio (targets bisect on it)."""

    def __init__(self, groups: list[Group], scores: Mapping[int, np.ndarray], options: PlanOptions):
        self.all_groups = groups
        self.groups = [g for g in groups if g.prunable and g.id in scores and g.id not in options.ignored]
        self.scores = scores
        self.options = options
        self.tables = {g.id: UnitTable(g) for g in self.groups}

    def counts(self, ratio: float, fine: bool = False) -> dict[int, int]:
        """Units to remove per group at `ratio` (before rounding and space constraints); `fine`
        spreads local pruning one unit at a time (proportional_counts) for target searches."""
        opts = self.options
        fixed = {g.id: local_count(g.unit_count, opts.ratio_for[g.id]) for g in self.groups if g.id in opts.ratio_for}
        free = [g for g in self.groups if g.id not in opts.ratio_for]
        if opts.global_ranking:
            fixed.update(global_counts(free, self.scores, ratio, opts.max_ratio))
        elif fine:
            fixed.update(proportional_counts(free, ratio))
        else:
            fixed.update({g.id: local_count(g.unit_count, ratio) for g in free})
        return fixed

    def plan(self, ratio: float | None = None, fine: bool = False) -> Plan:
        """The plan at `ratio` (default: the options' ratio); `fine`: see `counts`."""
        ratio = self.options.ratio if ratio is None else ratio
        counts = self.counts(ratio, fine)
        chosen = []
        for g in self.groups:
            units = self.tables[g.id].choose(self.scores[g.id], counts[g.id], self.options.round_to)
            if len(units):
                roots = g.roots_of_units(units)
                chosen.append(PlanGroup(g.id, g.root, g.exact, g.size, tuple(int(r) for r in roots)))
        frozen = tuple((g.root_label, g.frozen_reason) for g in self.all_groups if g.frozen_reason)
        return Plan(tuple(chosen), frozen, self._meta(ratio))

    def _meta(self, ratio: float) -> dict:
        opts = self.options
        meta: dict = {"ratio": ratio, "global": opts.global_ranking, "round_to": opts.round_to}
        if opts.global_ranking:
            meta.update(max_ratio=opts.max_ratio, normalisation="mean")
        if opts.ignored:
            meta["ignored"] = sorted(opts.ignored)
        if opts.ratio_for:
            meta["ratio_for"] = {str(k): v for k, v in sorted(opts.ratio_for.items())}
        return meta


def make_plan(groups: list[Group], scores: Mapping[int, np.ndarray], ratio: float,
              options: PlanOptions | None = None) -> Plan:
    """Plan at `ratio`: local pruning by default (`ratio` of the units of every prunable group,
    lowest scores first); `options` adds global ranking, rounding, per-group ratios and ignores."""
    options = options or PlanOptions(ratio=ratio)
    return Planner(groups, scores, options).plan(ratio)
