"""Per-root importance of a group, computed from its slices only (no op knowledge here).

Every criterion first scores each slice on its own (one value per position
along the slice's axis), maps positions to root indices (positions sharing a
root add up within a slice), then combines the slices of the group with the
group reduction (`sum`, `mean` or `max` over the slices that touch a root).

* ``l1`` / ``l2``: sum of |w| / w^2 over the other axes of the slice.
* ``bn``: like ``l1`` on normalisation scales only (falls back to ``l1``).
* ``lamp``: Layer-Adaptive Magnitude Pruning (Lee et al., ICLR 2021) on the
  reduced ``l2`` scores: with scores sorted ascending, score_i / sum_{j>=i} score_j.
  Order-preserving inside a group; it makes scores comparable across groups.
* ``fpgm``: filter pruning via geometric median (He et al., CVPR 2019): per
  slice, the sum of Euclidean distances from a position's vector to the
  vectors of every other position of that slice. Close to the median = redundant.
* ``random``: seeded uniform scores.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .group import Group, Slice
from .ir import Graph
from .options import REDUCTIONS, WEIGHT_CRITERIA as CRITERIA  # light constants, shared with the CLI
from .rules import rule_for

log = logging.getLogger(__name__)


_CHUNK_ELEMENTS = 1 << 20  # 4 MB of float32 per step: stays in cache between widening, squaring and summing
_PARALLEL_ELEMENTS = 1 << 22  # from 16 MB of float32 on, chunks are spread over the cores
_THREADS = max(1, min(4, os.cpu_count() or 1))


def slice_norms(values: np.ndarray, axis: int, power: int) -> np.ndarray:
    """Sum of |w| (or w^2) over every axis but `axis`, per index of `axis`.

    Works through the leading axis in chunks, on every core for large weights (numpy releases the
    GIL while it widens and sums): the magnitude of a 1 GB weight is never materialised at once, and
    a memory-mapped external weight is read while it is summed. Accumulates in float64.
    """
    if values.ndim == 0:
        return np.abs(np.atleast_1d(values)).astype(np.float64)
    rows = max(1, _CHUNK_ELEMENTS // max(1, values[0].size))
    other = tuple(i for i in range(values.ndim) if i != axis)

    def part(start: int) -> np.ndarray:
        chunk = _wide(values[start:start + rows])
        mag = np.square(chunk) if power == 2 else np.abs(chunk)
        return mag.sum(axis=other, dtype=np.float64) if other else mag.astype(np.float64)

    starts = range(0, values.shape[0], rows)
    if values.size >= _PARALLEL_ELEMENTS and _THREADS > 1 and len(starts) > 1:
        with ThreadPoolExecutor(_THREADS) as pool:
            parts = list(pool.map(part, starts))
    else:
        parts = [part(s) for s in starts]
    if axis == 0:
        return np.concatenate(parts)
    return np.sum(parts, axis=0) if len(parts) > 1 else parts[0]


def _wide(chunk: np.ndarray) -> np.ndarray:
    """float32 / float64 as they are; narrower types widened exactly before squaring: numpy emulates fp16
    arithmetic (25x slower than float32 on a 4096 x 11008 weight, and its squares round), and int8
    squares overflow."""
    if chunk.dtype.kind == "f" and chunk.dtype.itemsize >= 4:
        return chunk
    return chunk.astype(np.float32 if chunk.dtype.itemsize <= 2 else np.float64)


def _geometric_median_distance(values: np.ndarray, axis: int, positions: np.ndarray) -> np.ndarray:
    """Per position (of `positions`), the sum of L2 distances to the other positions' vectors."""
    vectors = np.moveaxis(values.astype(np.float64, copy=False), axis, 0)[positions].reshape(len(positions), -1)
    sq = np.einsum("ij,ij->i", vectors, vectors)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (vectors @ vectors.T), 0.0)
    return np.sqrt(d2).sum(axis=1)


def slice_scores(s: Slice, values: np.ndarray, criterion: str) -> np.ndarray:
    """Score of each entry of `s.positions` (aligned with `s.positions` / `s.roots`)."""
    if criterion == "fpgm":
        unique, inverse = np.unique(s.positions, return_inverse=True)
        return _geometric_median_distance(values, s.axis, unique)[inverse]
    power = 2 if criterion in ("l2", "lamp") else 1
    return slice_norms(values, s.axis, power)[s.positions]


def _scored_slices(group: Group, criterion: str) -> list[Slice]:
    if criterion != "bn":
        return list(group.slices)
    scales = [s for s in group.slices if s.scale]
    if not scales:
        log.debug("group %d has no normalisation scale; scoring it by L1 magnitude", group.id)
    return scales or list(group.slices)


def lamp(scores: np.ndarray) -> np.ndarray:
    """LAMP normalisation: score / (sum of the scores not smaller than it), in (0, 1]."""
    order = np.argsort(scores, kind="stable")
    tail = np.cumsum(scores[order][::-1])[::-1]
    out = np.zeros_like(scores, dtype=np.float64)
    out[order] = np.divide(scores[order], tail, out=np.zeros(len(order)), where=tail > 0)
    return out


def root_scores(group: Group, graph: Graph, criterion: str, rng: np.random.Generator | None = None,
                reduction: str = "sum") -> np.ndarray:
    """Importance per root index, the slices combined by `reduction` (larger = keep)."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown importance criterion '{criterion}'; choose from {', '.join(CRITERIA)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown group reduction '{reduction}'; choose from {', '.join(REDUCTIONS)}")
    if criterion == "random":
        return (rng or np.random.default_rng(0)).random(group.size)
    total = np.zeros(group.size, dtype=np.float64)
    count = np.zeros(group.size, dtype=np.int64)
    for s in _scored_slices(group, criterion):
        values = float_values(graph, s.tensor)
        if values is None:
            continue
        per_root = np.bincount(s.roots, weights=slice_scores(s, values, criterion), minlength=group.size)
        touched = np.bincount(s.roots, minlength=group.size) > 0
        total = np.maximum(total, per_root) if reduction == "max" else total + per_root
        count += touched
    if reduction == "mean":
        total = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return lamp(total) if criterion == "lamp" else total


def float_values(graph: Graph, name: str) -> np.ndarray | None:
    """An initializer's values as its consumer computes with them: floats as they are, a quantized
    weight dequantized by the consumer's rule (`Rule.float_view`), other integers as numbers."""
    values = graph.const(name)
    if values is None or np.issubdtype(values.dtype, np.floating):
        return values
    if not np.issubdtype(values.dtype, np.integer):
        return None
    for node, _ in graph.consumers(name):
        view = rule_for(node).float_view(node, graph, name)
        if view is not None:
            return view
    return values.astype(np.float32)


def unit_scores(group: Group, scores: np.ndarray) -> np.ndarray:
    """Importance per coupled unit: the sum over its roots."""
    return np.bincount(group.units, weights=scores, minlength=group.unit_count)
