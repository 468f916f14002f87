"""Latency as a target (`--target-latency F`): keep fraction F of the original's measured latency.

Latency is not a sum over layers that shapes alone give: it depends on the provider, the kernels
ONNX Runtime picks and how the ops fuse. So it is measured, once per group: each scored group alone
loses half its lowest-scoring units, and that model is timed against the original (turn about, the
median of several runs, in chunks so that memory holds a few copies at most). The time a group saves
per unit removed gives an additive model of a plan's latency, which the target's bisection uses as
it uses parameter or MAC counts. The estimate misses what channel counts do to the kernels, so the
planned model is then timed and the bisection's goal corrected by the ratio of target to measurement,
up to ROUNDS times (`meet`).
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np

from .apply import apply_plan
from .group import Group
from .ir import Graph
from .planner import Plan, PlanGroup, Planner
from .progress import Progress
from .runtime import run_interleaved
from .sensitivity import group_plan, lowest_units
from .targets import plan_for_target
from .validate import random_inputs

log = logging.getLogger(__name__)

FRACTION = 0.5  # share of a group's units removed when it is timed
ROUNDS = 3  # plans measured to correct the estimate
MEASURED_TOLERANCE = 0.02  # |measured kept fraction - target| that ends the corrections
REPEATS = 15  # timed runs per model (medians)
CHUNK = 6  # pruned copies timed together with the original


class LatencyModel:
    """A plan's latency as a fraction of the original's, from a per-group table measured once."""

    def __init__(self, graph: Graph, groups: list[Group], scores: Mapping[int, np.ndarray], provider: str,
                 input_shapes: dict, seed: int = 0, repeats: int = REPEATS):
        self.groups = {g.id: g for g in groups}
        feeds = random_inputs(graph.proto, input_shapes, seed)
        timed = [g for g in groups if g.prunable and g.id in scores and g.unit_count > 1]
        progress = Progress(log, "latency table", len(timed), " groups")
        base: list[float] = []
        self.saved_per_unit: dict[int, float] = {}
        for start in range(0, len(timed), CHUNK):
            chunk = timed[start:start + CHUNK]
            plans = [_half(g, scores[g.id]) for g in chunk]
            models: list[Any] = [graph.proto] + [apply_plan(graph, groups, plan) for plan, _ in plans]
            results = run_interleaved(models, feeds, provider, repeats=repeats)
            first = results[0].latency_ms or 0.0
            base.append(first)
            for g, (_, units), result in zip(chunk, plans, results[1:]):
                self.saved_per_unit[g.id] = max(first - (result.latency_ms or first), 0.0) / max(units, 1)
                progress.add()
        progress.finish()
        if not base:  # nothing to time: a plan saves nothing
            base = [run_interleaved([graph.proto], feeds, provider, repeats=repeats)[0].latency_ms or 0.0]
        self.base_ms = float(np.median(base))
        self.provider = provider
        self._graph, self._all_groups, self._feeds, self._repeats = graph, groups, feeds, repeats

    def measured(self, plan: Plan) -> float:
        """The plan's real latency as a fraction of the original's (both timed now, turn about)."""
        original, pruned = run_interleaved([self._graph.proto, apply_plan(self._graph, self._all_groups, plan)],
                                           self._feeds, self.provider, repeats=self._repeats)
        return (pruned.latency_ms or 0.0) / original.latency_ms if original.latency_ms else 1.0

    def kept(self, plan: Plan, metric: str = "latency") -> float:
        """Estimated fraction of the original's latency the plan keeps (`metric` is "latency")."""
        if self.base_ms <= 0:
            return 1.0
        saved = sum(self.saved_per_unit.get(pg.id, 0.0) * _units(self.groups[pg.id], pg)
                    for pg in plan.groups if pg.id in self.groups)
        return max(self.base_ms - saved, 0.0) / self.base_ms

    def table(self) -> dict[str, Any]:
        """The measured table, for the plan's meta (and so the JSON report)."""
        return {"provider": self.provider, "original_ms": round(self.base_ms, 4), "fraction_timed": FRACTION,
                "saved_ms_per_unit": {str(k): round(v, 6) for k, v in self.saved_per_unit.items()}}


def meet(planner: Planner, cost: LatencyModel, target: float) -> Plan:
    """The plan whose measured latency is closest to `target`: the estimate's bisection, then up to
    ROUNDS corrections of the estimate's goal by what the planned model measures (the additive table
    misses what channel counts do to the kernels: on EfficientNet-Lite0 a plan estimated at 0.75
    measured 0.87)."""
    goal, best, tried = target, None, []
    for _ in range(ROUNDS):
        # the estimate moves in steps (a unit of a wide group saves much): its closest plan, whatever it is
        plan = plan_for_target(planner, cost, "latency", goal, tolerance=1.0)
        real = cost.measured(plan)
        tried.append({"goal": round(goal, 4), "measured": round(real, 4)})
        if best is None or abs(real - target) < abs(best[0] - target):
            best = (real, plan)
        if abs(real - target) <= MEASURED_TOLERANCE:
            break
        goal = min(max(goal * target / max(real, 1e-6), 0.01), 1.0)
    assert best is not None
    real, plan = best
    log.info("latency target %.3f: the plan measures %.3f of the original's latency (%d rounds)", target, real,
             len(tried))
    return plan.with_meta(latency_table={**cost.table(), "measured_kept": round(real, 4), "rounds": tried},
                          target={"metric": "latency", "fraction": target, "kept": round(real, 6),
                                  "estimated": round(cost.kept(plan), 6)})


def _half(group: Group, scores: np.ndarray) -> tuple[Plan, int]:
    """The plan removing FRACTION of the group's lowest-scoring units, and how many units that is."""
    (units,) = lowest_units(group, scores, [FRACTION])
    return group_plan(group, group.roots_of_units(units)), len(units)


def _units(group: Group, pg: PlanGroup) -> int:
    return len(np.unique(group.units[np.asarray(pg.pruned, dtype=np.int64)])) if pg.pruned else 0


def note(plan: Plan) -> str:
    """One line for the report: what the latency target rests on."""
    table, target = plan.meta["latency_table"], plan.meta.get("target", {})
    measured = table.get("measured_kept")
    then = f"; the planned model measured {measured:.3f} of it" if measured is not None else ""
    return (f"latency target: {target.get('fraction', 1.0):g} of the original's {table['original_ms']:.3g} ms on "
            f"{table['provider']}, planned from {len(table['saved_ms_per_unit'])} groups timed alone at "
            f"{table['fraction_timed']:g} of their units (one ratio for all groups){then}; timings on a busy "
            "machine vary by a few per cent")
