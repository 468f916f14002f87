"""Per-root importance of a group, computed from its slices only (no op knowledge here)."""
from __future__ import annotations

import logging

import numpy as np

from .group import Group
from .ir import Graph

log = logging.getLogger(__name__)

CRITERIA = ("l1", "l2", "bn", "random")


def _slice_norms(values: np.ndarray, axis: int, power: int) -> np.ndarray:
    # Stay in the weight's own dtype (no float64 copy of a 400 MB matrix); accumulate in float64.
    mag = np.square(values) if power == 2 else np.abs(values)
    other = tuple(i for i in range(values.ndim) if i != axis)
    return mag.sum(axis=other, dtype=np.float64) if other else mag.astype(np.float64)


def root_scores(group: Group, graph: Graph, criterion: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """Importance per root index: the sum over every coupled slice (larger = keep)."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown importance criterion '{criterion}'; choose from {', '.join(CRITERIA)}")
    if criterion == "random":
        return (rng or np.random.default_rng(0)).random(group.size)
    slices = [s for s in group.slices if criterion != "bn" or s.scale]
    if criterion == "bn" and not slices:
        log.debug("group %d has no normalisation scale; scoring it by L1 magnitude", group.id)
        slices = list(group.slices)
    power = 2 if criterion == "l2" else 1
    scores = np.zeros(group.size, dtype=np.float64)
    for s in slices:
        values = graph.const(s.tensor)
        if values is None or not np.issubdtype(values.dtype, np.floating):
            continue
        norms = _slice_norms(values, s.axis, power)
        np.add.at(scores, s.roots, norms[s.positions])
    return scores


def unit_scores(group: Group, scores: np.ndarray) -> np.ndarray:
    """Importance per coupled unit: the sum over its roots."""
    return np.bincount(group.units, weights=scores, minlength=group.unit_count)
