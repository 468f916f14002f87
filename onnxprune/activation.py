"""Activation-based importance: what each root channel contributes at the group's consumers.

For every "in" slice with a known source (the consumer's input tensor and
axis, recorded by the depgraph), a channel's score adds
E[a_c^2] * ||W[:, c]||^2: the expected energy it sends into that consumer
(ignoring correlations between channels). With `centered`, the variance
replaces E[a^2]: what is left once bias compensation restores the mean.
Groups with no such slice fall back to the L2 magnitude of their slices.
"""
from __future__ import annotations

import logging

import numpy as np

from .calib import ChannelStats
from .group import Group
from .importance import root_scores as weight_scores
from .importance import slice_norms
from .ir import Graph
from .options import ACTIVATION_CRITERIA

log = logging.getLogger(__name__)

CRITERIA = ACTIVATION_CRITERIA  # the list lives in options.py, shared with the CLI


def stat_spaces(groups: list[Group]) -> list[tuple[str, int]]:
    """(tensor, axis) read by every "in" slice of the groups: what statistics must cover."""
    return sorted({s.source for g in groups for s in g.slices if s.role == "in" and s.source})


def root_scores(group: Group, graph: Graph, stats: dict[tuple[str, int], ChannelStats],
                centered: bool = False) -> np.ndarray:
    """Importance per root index from calibration statistics (larger = keep)."""
    scores = np.zeros(group.size, dtype=np.float64)
    used = 0
    for s in group.slices:
        st = stats.get(s.source) if s.role == "in" and s.source else None
        values = graph.const(s.tensor)
        if st is None or values is None or not np.issubdtype(values.dtype, np.floating):
            continue
        col = slice_norms(values, s.axis, 2)
        energy = st.var if centered else st.mean_sq
        np.add.at(scores, s.roots, energy[s.positions] * col[s.positions])
        used += 1
    if not used:
        log.debug("group %d: no consumer statistics; scoring by L2 magnitude", group.id)
        return weight_scores(group, graph, "l2")
    return scores
