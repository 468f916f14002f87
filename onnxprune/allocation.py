"""Allocation to a cost target from measured sensitivity: spend the pruning where it hurts least.

With calibration data and `--target-macs` / `--target-params`, each group's measured curve (relative
output error when its lowest-scoring 10 / 20 / 30 / 50 % of units are dead, sensitivity.measure) and
what removing that share of it saves (targets.CostModel, one group at a time) give, per group, a few
steps of (added error, saved cost). Steps are taken greedily, the cheapest error per saved unit of
cost first, until the target is met; a group whose curve was not measured (time budget) takes the
mean curve of the measured ones. Each group's chosen fraction becomes its own ratio (the planner's
`ratio_for`), so `--round-to`, `--ignore` and coupled units hold as for any plan, and the exact cost
of the resulting plan decides when to stop.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from typing import Any, Mapping

import numpy as np

from .group import Group
from .planner import Plan, Planner
from .targets import TOLERANCE, CostModel

log = logging.getLogger(__name__)


@dataclass
class _Step:
    group: int
    fraction: float
    error: float  # added measured error of this step
    saving: float  # added share of the metric this step removes


def curves(measured: Mapping[str, Any], groups: list[Group]) -> tuple[dict[int, list[tuple[float, float]]], int]:
    """Group id -> [(fraction, error)] from 0, for every planned group; and how many took the mean curve."""
    fractions = [float(f) for f in measured.get("fractions") or []]
    rows = measured.get("groups") or {}
    found = {int(k): list(zip(fractions, [float(e) for e in row["relative_error"]])) for k, row in rows.items()}
    if not found:
        return {}, 0
    mean = [(f, float(np.mean([c[i][1] for c in found.values()]))) for i, f in enumerate(fractions)]
    result, fallback = {}, 0
    for g in groups:
        if g.id not in found:
            fallback += 1
        result[g.id] = [(0.0, 0.0)] + _monotone(found.get(g.id, mean))
    return result, fallback


def _monotone(curve: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Errors never fall as more units go (measurement noise aside)."""
    out, top = [], 0.0
    for f, e in curve:
        top = max(top, e)
        out.append((f, top))
    return out


def allocate(planner: Planner, cost: CostModel, metric: str, target: float, measured: Mapping[str, Any]) -> Plan | None:
    """The plan meeting `target` (kept fraction of `metric`) with the least summed measured error, or None
    when nothing was measured. Every step is priced by error per saved share of the metric."""
    by_group, fallback = curves(measured, planner.groups)
    if not by_group:
        return None
    steps = _steps(planner, cost, metric, by_group)
    chosen: dict[int, float] = {}
    plan = _plan(planner, chosen)
    kept = cost.kept(plan, metric)
    queue = sorted(steps, key=lambda s: s.error / max(s.saving, 1e-12))
    for step in queue:
        if kept <= target + TOLERANCE / 2:
            break
        before = chosen.get(step.group, 0.0)
        if before >= step.fraction:
            continue
        chosen[step.group] = step.fraction
        plan = _plan(planner, chosen)
        kept = cost.kept(plan, metric)
        if kept < target - TOLERANCE / 2:  # the step overshoots: take only as much of it as the target needs
            plan, kept = _partial_step(planner, cost, metric, target, chosen, step.group, before)
    if kept > target + TOLERANCE:
        log.info("allocation reaches %.4f of %s, not %.4f: falling back to a uniform ratio", kept, metric, target)
        return None
    log.info("allocation: %d groups measured, %d on the mean curve; keeps %.4f of %s",
             len(by_group) - fallback, fallback, kept, metric)
    return plan.with_meta(allocation={"kind": "measured sensitivity", "metric": metric, "fraction": target,
                                      "kept": round(kept, 6), "mean_curve_groups": fallback,
                                      "ratios": {str(k): v for k, v in sorted(chosen.items())}},
                          target={"metric": metric, "fraction": target, "kept": round(kept, 6)})


def _partial_step(planner: Planner, cost: CostModel, metric: str, target: float, chosen: dict[int, float],
                  group: int, before: float, iterations: int = 20) -> tuple[Plan, float]:
    """Bisect `group`'s fraction between `before` and its chosen one for the plan nearest the target
    (`chosen` is updated to it)."""
    lo, hi = before, chosen[group]
    best: tuple[float, float, Plan] | None = None
    for _ in range(iterations):
        chosen[group] = (lo + hi) / 2
        plan = _plan(planner, chosen)
        kept = cost.kept(plan, metric)
        if best is None or abs(kept - target) < abs(best[1] - target):
            best = (chosen[group], kept, plan)
        if abs(kept - target) <= TOLERANCE / 10:
            break
        lo, hi = (chosen[group], hi) if kept > target else (lo, chosen[group])
    assert best is not None
    chosen[group] = best[0]
    return best[2], best[1]


def _steps(planner: Planner, cost: CostModel, metric: str,
           by_group: dict[int, list[tuple[float, float]]]) -> list[_Step]:
    """Each group's steps between consecutive measured fractions, with what each saves alone."""
    steps = []
    for gid, curve in by_group.items():
        previous_saving = 0.0
        for (_, e0), (f1, e1) in zip(curve, curve[1:]):
            saving = 1.0 - cost.kept(_plan(planner, {gid: f1}), metric)
            steps.append(_Step(gid, f1, max(e1 - e0, 0.0), max(saving - previous_saving, 0.0)))
            previous_saving = saving
    return steps


def _plan(planner: Planner, fractions: Mapping[int, float]) -> Plan:
    """The plan giving each group its fraction (0 for the rest); the planner's unit tables are reused."""
    fixed = copy.copy(planner)
    fixed.options = replace(planner.options, ratio_for={g.id: fractions.get(g.id, 0.0) for g in planner.groups})
    return fixed.plan()


def compare_allocations(measured: Mapping[str, Any], uniform: Mapping[str, Any], samples: int,
                        held_out: bool) -> dict[str, Any]:
    """The check of a measured allocation against one ratio for all groups, from the fidelity of each
    pruned model (calib.fidelity): the measured plan is kept when it is at least as close to the original
    on most of the measures its outputs give: the share of samples whose top-1 changes (outputs shaped
    [N, classes]), 1 - the mean cosine similarity, and the mean relative error. No one measure suits
    every model: on EfficientNet-Lite0 at 0.6 of the MACs the measured plan had the lower relative error
    and 20x the top-1 changes; MiniLM's sentence embeddings are [N, 384] too, where an argmax means
    nothing and the cosine does."""
    ours, theirs = fidelity_measures(measured), fidelity_measures(uniform)
    return {"kept": "measured" if no_worse(ours, theirs) else "uniform", "samples": samples,
            "held_out": held_out, "measured": ours, "uniform": theirs}


def no_worse(ours: Mapping[str, float], theirs: Mapping[str, float]) -> bool:
    """Whether `ours` is at least as close to the original as `theirs`: on the per-token KL for LM logits
    (the rise in cross-entropy against the original's predictions, which perplexity follows; on SmolLM2
    the logits' relative error and cosine favoured the lsq model whose perplexity was 4 % worse), else on
    most of the measures."""
    if "token_kl" in ours and "token_kl" in theirs:
        return ours["token_kl"] <= theirs["token_kl"]
    return 2 * sum(ours[k] <= theirs[k] for k in ours) > len(ours)


def fidelity_measures(fidelity: Mapping[str, Any]) -> dict[str, float]:
    """The measures (smaller = closer) a calib.fidelity result gives, averaged over its outputs."""
    rows = list(fidelity.get("outputs", {}).values())
    if not rows:
        return {"relative_error": 0.0}
    found = {"relative_error": round(float(np.mean([r["relative_error"] for r in rows])), 6),
             "cosine_gap": round(1.0 - float(np.mean([r["cosine_mean"] for r in rows])), 6)}
    for key, name in (("top1_agreement", "top1_changed"), ("token_top1_agreement", "token_top1_changed")):
        values = [r[key] for r in rows if key in r]
        if values:
            found[name] = round(1.0 - float(np.mean(values)), 6)
    kl = [r["token_kl"] for r in rows if "token_kl" in r]
    if kl:
        found["token_kl"] = round(float(np.mean(kl)), 6)
    return found


def closeness_text(check: Mapping[str, Any], kind: str) -> str:
    """'top-1 changed on 4.2 %, cosine gap 0.05, output error 0.31' for the measured or uniform model."""
    m = check[kind]
    parts = [f"top-1 changed on {m['top1_changed'] * 100:.1f} %"] if "top1_changed" in m else []
    if "cosine_gap" in m:
        parts.append(f"cosine gap {m['cosine_gap']:.3g}")
    parts.append(f"output error {m['relative_error']:.4g}")
    return ", ".join(parts)


def allocation_note(plan: Plan, measured_allocation: bool) -> str:
    """One line for the report: how the measured sensitivity was used (`measured_allocation`: whether the
    config asked to spread a target by it)."""
    used = plan.meta.get("allocation")
    check = (used or {}).get("check")
    if check and check["kept"] == "uniform":
        return (f"allocation: one ratio for all groups, not the measured allocation: on {check['samples']} "
                f"{'held-out ' if check['held_out'] else ''}samples it was closer to the original "
                f"(uniform: {closeness_text(check, 'uniform')}; measured: {closeness_text(check, 'measured')})")
    if used:
        fallback = used.get("mean_curve_groups", 0)
        rest = f"; {fallback} groups not measured took the mean curve" if fallback else ""
        if check:
            rest += (f"; on {check['samples']} {'held-out ' if check['held_out'] else ''}samples, measured: "
                     f"{closeness_text(check, 'measured')}; one ratio for all: {closeness_text(check, 'uniform')}")
        return f"allocation: measured sensitivity spreads the {used['metric']} target over the groups{rest}"
    if measured_allocation:
        return "allocation: the measured curves could not meet the target; one ratio for all groups instead"
    return "sensitivity is measured and reported only: the plan spreads a --target-* by it (with --calib)"
