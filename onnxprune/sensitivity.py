"""Measured sensitivity: how much removing a fraction of one group's units changes the outputs.

For each prunable exact group and each fraction, the lowest-scoring units of that group alone are
made dead (every consumer of their channels zeroed, as the oracle does) and the model is run over
calibration samples; the distortion is the relative L2 error of all float outputs against the
original's, which are computed once (and, for outputs shaped [N, classes], the mean KL of
their softmax). The work is bounded by a time budget and a group count:
what was not measured is listed with the reason.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Mapping, Sequence

import numpy as np

from . import saliency
from .apply import apply_values
from .calib import CalibData, outputs
from .group import Group
from .ir import Graph, ModelProto
from .oracle import zero_consumers
from .planner import Plan, PlanGroup, UnitTable, local_count

log = logging.getLogger(__name__)

FRACTIONS = (0.1, 0.2, 0.3, 0.5)
ALLOCATION_FRACTIONS = (0.1, 0.2, 0.3, 0.5, 0.7, 0.9)  # allocation.py may spend up to 0.9 of a group
BUDGET_S = 60.0
MAX_GROUPS = 200
LOG_EVERY_S = 5.0


def units_at(group: Group, fraction: float) -> int:
    """Units removed at `fraction`: the planner's count (rounded down, at least one unit stays),
    but at least one when the fraction is positive and the group has more than one unit."""
    n = group.unit_count
    if fraction <= 0 or n <= 1:
        return 0
    return max(1, local_count(n, fraction))


def _outputs(model: ModelProto, data: CalibData, label: str) -> list[np.ndarray]:
    """The model's float outputs over all of `data`, as float64, concatenated along the sample axis
    (no per-batch progress lines: `measure` reports its own over the many runs)."""
    _, values = outputs(model, data, label, progress=False)
    return [a.astype(np.float64) for a in values if np.issubdtype(a.dtype, np.floating)]


def relative_error(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    """||y' - y|| / ||y|| over all float outputs together."""
    num = sum(float(np.sum((b - a) ** 2)) for a, b in zip(reference, candidate))
    den = sum(float(np.sum(a * a)) for a in reference)
    return math.sqrt(num) / max(math.sqrt(den), 1e-30)


def softmax_kl(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float | None:
    """Mean KL(softmax(y) || softmax(y')) per sample over the outputs shaped [N, classes]; None without any."""
    kls = []
    for a, b in zip(reference, candidate):
        if a.ndim == 2 and a.shape[1] > 1 and a.shape == b.shape:
            la = a - a.max(1, keepdims=True)
            lb = b - b.max(1, keepdims=True)
            la = la - np.log(np.exp(la).sum(1, keepdims=True))
            lb = lb - np.log(np.exp(lb).sum(1, keepdims=True))
            kls.append(float(np.mean(np.sum(np.exp(la) * (la - lb), 1))))
    return float(np.mean(kls)) if kls else None


def lowest_units(group: Group, scores: np.ndarray, fractions: Sequence[float]) -> list[np.ndarray]:
    """The units removed at each fraction (lowest scores first, every space left non-empty)."""
    table = UnitTable(group)
    return [table.choose(scores, units_at(group, f)) for f in fractions]


def group_plan(group: Group, roots: np.ndarray) -> Plan:
    """The plan removing `roots` of `group` alone."""
    return Plan((PlanGroup(group.id, group.root, group.exact, group.size, tuple(int(r) for r in roots)),))


def measure(graph: Graph, groups: list[Group], scores: Mapping[int, np.ndarray], data: CalibData,
            fractions: Sequence[float] = FRACTIONS, budget_s: float = BUDGET_S,
            max_groups: int = MAX_GROUPS, covariances: Mapping[tuple, Any] | None = None) -> dict[str, Any]:
    """Relative output error per prunable exact scored group at each fraction of its units removed.

    With `covariances` (`saliency.covariances`), the consumers of the removed units are refit by least
    squares from their input covariance, as the compensation will refit them, instead of only zeroed:
    a curve of what pruning the group costs after compensation.
    Largest groups first; a group not started within `budget_s` seconds, or beyond `max_groups`,
    is listed under "skipped" with the reason."""
    t0 = time.perf_counter()
    fractions = [float(f) for f in fractions]
    todo = sorted((g for g in groups if g.prunable and g.exact and g.id in scores), key=lambda g: (-g.size, g.id))
    skipped = [{"id": g.id, "root": g.root_label, "reason": f"beyond the first {max_groups} groups"}
               for g in todo[max_groups:]]
    todo = todo[:max_groups]
    reference = _outputs(graph.proto, data, "sensitivity (original)")
    measured: dict[str, dict] = {}
    last = time.perf_counter()
    for k, g in enumerate(todo):
        # not started once the budget is spent, or stopped between fractions (one group of a large
        # model can outlast the whole budget)
        row = None if time.perf_counter() - t0 >= budget_s else _measure_group(
            graph, groups, g, scores[g.id], data, fractions, reference, covariances, deadline=t0 + budget_s)
        if row is None:
            skipped += [{"id": h.id, "root": h.root_label, "reason": f"time budget {budget_s:g}s spent"}
                        for h in todo[k:]]
            break
        measured[str(g.id)] = row
        now = time.perf_counter()
        if now - last >= LOG_EVERY_S or k + 1 == len(todo):
            per = (now - t0) / (k + 1)
            left = min(per * (len(todo) - k - 1), max(budget_s - (now - t0), 0.0))
            log.info("sensitivity: %d/%d groups (%.1fs, about %.0fs left)", k + 1, len(todo), now - t0, left)
            last = now
    return {"metric": "relative_error", "fractions": fractions, "samples": data.count,
            "compensated": covariances is not None,
            "seconds": round(time.perf_counter() - t0, 3), "budget_s": budget_s, "groups": measured,
            "skipped": skipped}


def _measure_group(graph: Graph, groups: list[Group], g: Group, scores: np.ndarray, data: CalibData,
                   fractions: list[float], reference: list[np.ndarray],
                   covariances: Mapping[tuple, Any] | None = None,
                   deadline: float = math.inf) -> dict[str, Any] | None:
    errors: list[float] = []
    kl: list[float | None] = []
    removed: list[int] = []
    for f, units in zip(fractions, lowest_units(g, scores, fractions)):
        if time.perf_counter() >= deadline:
            return None
        removed.append(len(units))
        roots = g.roots_of_units(units)
        if not len(roots):
            errors.append(0.0)
            kl.append(softmax_kl(reference, reference))
            continue
        model = zero_consumers(graph, groups, group_plan(g, roots))
        if covariances is not None:
            apply_values(model, *saliency.refit_values(graph, g, roots, dict(covariances)))
        dead = _outputs(model, data, f"sensitivity of {g.root_label} at {f:g}")
        errors.append(relative_error(reference, dead))
        kl.append(softmax_kl(reference, dead))
    row: dict[str, Any] = {"root": g.root_label, "size": g.size, "units": g.unit_count, "units_removed": removed,
                           "relative_error": errors}
    if any(k is not None for k in kl):  # some output looks like class scores [N, classes]
        row["softmax_kl"] = kl
    return row


def most_sensitive(result: Mapping[str, Any], at: float = 0.3) -> tuple[str, float, float] | None:
    """(root, error, fraction) of the group with the largest error at `at` (or the nearest fraction)."""
    fractions = list(result.get("fractions") or [])
    groups = result.get("groups") or {}
    if not fractions or not groups:
        return None
    i = min(range(len(fractions)), key=lambda j: abs(fractions[j] - at))
    row = max(groups.values(), key=lambda r: r["relative_error"][i])
    return row["root"], row["relative_error"][i], fractions[i]
