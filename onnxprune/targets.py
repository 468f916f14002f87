"""Prune to a target: keep a fraction of the parameters or MACs, found by bisection.

Counting a candidate plan never touches the model: the plan's removed indices
(removal.collect) give the new size of every sliced initializer axis and every
channel space; parameters are the float initializers' new element counts, and
MACs are the rules' own `macs` asked through a view of the graph with those
new shapes. Bisection runs on the planner's ratio (local or global mode), so
every other planner option holds while it searches.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol, cast

from .removal import collect
from .errors import BadInputError
from .group import Group
from .ir import Graph, Shape
from .planner import Plan, Planner
from .rules import packing, rule_for

log = logging.getLogger(__name__)

TOLERANCE = 0.01  # |kept fraction - target|, absolute


class _PrunedShapes:
    """A read-only view of `graph` whose shapes are those after a removal."""

    def __init__(self, graph: Graph, shapes: dict[str, Shape]):
        self._graph = graph
        self._shapes = shapes

    def shape(self, name: str) -> Shape | None:
        return self._shapes.get(name) or self._graph.shape(name)

    def const_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._shapes.get(name) or self._graph.const_shape(name))

    def dim(self, name: str, axis: int) -> int | None:
        shape = self.shape(name)
        return None if shape is None or not -len(shape) <= axis < len(shape) else shape[axis]

    def rank(self, name: str) -> int | None:
        shape = self.shape(name)
        return None if shape is None else len(shape)

    def __getattr__(self, attr: str):
        return getattr(self._graph, attr)


@dataclass(frozen=True)
class Counts:
    """Float parameters and MACs of a (planned) model."""

    params: int
    macs: int


class CostModel:
    """Parameters and MACs of the model a plan would produce, without applying it."""

    def __init__(self, graph: Graph, groups: list[Group]):
        self.graph = graph
        self.groups = groups
        self.packing = packing(graph)
        self.before = self.counts(Plan(()))

    def counts(self, plan: Plan) -> Counts:
        """Counts of the model `plan` would produce (equal to report.model_stats after apply)."""
        removal = collect(self.graph, self.groups, plan)
        shapes: dict[str, list] = {}
        for (tensor, axis), idx in removal.spaces.items():
            shape = self.graph.shape(tensor)
            if shape is None:  # unknown before, unknown after: the rules count no MACs on it
                continue
            shapes.setdefault(tensor, list(shape))[axis] -= len(idx)
        for tensor, axes in removal.slices.items():
            dims = shapes.setdefault(tensor, list(self.graph.const_shape(tensor)))
            for axis, idx in axes.items():
                dims[axis] = self.graph.const_shape(tensor)[axis] - len(idx)
        view = _PrunedShapes(self.graph, {k: tuple(v) for k, v in shapes.items()})
        params = self.graph.param_count(view.const_shape, cut=removal.slices, packing=self.packing)
        graph = cast(Graph, view)  # answers the rules' shape queries as the pruned graph would
        macs = sum(rule_for(n).macs(n, graph) for n in self.graph.nodes)
        return Counts(params, macs)

    def kept(self, plan: Plan, metric: str) -> float:
        """Fraction of `metric` ("params" or "macs") the plan keeps."""
        before = getattr(self.before, metric)
        return getattr(self.counts(plan), metric) / before if before else 1.0


class Cost(Protocol):
    """What the bisection needs: the fraction of a metric a plan keeps (CostModel; latency.LatencyModel)."""

    def kept(self, plan: Plan, metric: str) -> float: ...


def plan_for_target(planner: Planner, cost: Cost, metric: str, target: float, steps: int = 30,
                    tolerance: float = TOLERANCE) -> Plan:
    """The plan whose kept fraction of `metric` is closest to `target` (within `tolerance`, else
    BadInputError naming the closest reachable fraction)."""
    hi = planner.options.max_ratio if planner.options.global_ranking else 1.0
    lo_ratio, hi_ratio = 0.0, hi
    best: tuple[float, float, Plan] | None = None
    for _ in range(steps):
        mid = (lo_ratio + hi_ratio) / 2
        plan = planner.plan(mid, fine=True)
        kept = cost.kept(plan, metric)
        if best is None or abs(kept - target) < abs(best[0] - target):
            best = (kept, mid, plan)
        if abs(kept - target) <= TOLERANCE / 10:
            break
        lo_ratio, hi_ratio = (mid, hi_ratio) if kept > target else (lo_ratio, mid)
    if best is None:
        raise ValueError(f"plan_for_target needs at least one bisection step, got steps={steps}")
    kept, ratio, plan = best
    if abs(kept - target) > tolerance:
        floor = cost.kept(planner.plan(hi, fine=True), metric)
        raise BadInputError(f"--target-{metric} {target:g} is out of reach: the closest plan keeps {kept:.3f} "
                            f"(pruning the most allowed keeps {floor:.3f}; frozen and ignored groups stay whole)")
    log.info("target %s %.3f: ratio %.4f keeps %.4f", metric, target, ratio, kept)
    return plan.with_meta(target={"metric": metric, "fraction": target, "kept": round(kept, 6)})
