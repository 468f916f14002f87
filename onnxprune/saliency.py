"""Reconstruction-aware importance (`--importance obs`): the error a unit's removal leaves after the
consumers are refit, Optimal-Brain-Surgeon style, chosen greedily.

For a linear consumer Y = A M + b (rows A of its input, M [n, N] with n = channels x taps), removing
the columns S and refitting the rest by least squares (as `--compensate lsq` then does) leaves the
output error tr(M_S^T (H^-1_SS)^-1 M_S), with H the covariance of A's columns (centred: the bias
absorbs the removed means). Units are removed one at a time, the cheapest first, and after each
removal the remaining weights and H^-1 are updated as the refit would change them (ZipLM-style
structured OBS), so a unit that only duplicated a removed one is seen to matter once its twin is gone.
A unit's score is the cumulative error (relative to the consumer's output variance, summed over the
group's consumers) at the step it was removed: larger = keep, and the order is the removal order.

Groups whose consumers have no linear form, or more than `MAX_COLUMNS` input columns, are scored by
`act` (centred): the diagonal of the same objective, without the refit.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, fields

import numpy as np

from . import calib
from .activation import root_scores as activation_scores
from .calib import CalibData, ChannelStats
from .group import Group, Slice
from .ir import Graph
from .kinds import Role
from .options import RECONSTRUCTION_CRITERIA
from .rules import rule_for
from .rules.forms import LinearForm

log = logging.getLogger(__name__)

CRITERIA = RECONSTRUCTION_CRITERIA  # the list lives in options.py, shared with the CLI

MAX_COLUMNS = 4096  # a 4096 x 4096 float64 covariance is 134 MB; wider consumers fall back to `act`
MAX_ROWS = 8192  # sampled input rows per covariance
DAMPING = 1e-2  # added to H's diagonal, relative to its mean: keeps H^-1 finite for dead or collinear columns
# units removed greedily (with updates); the rest keep their order after, by their saliency at that point:
# no plan removes more than this share of a group, and the updates cost O(n^2) per step
GREEDY_FRACTION = 0.8
# units removed together per step, as a share of the group: one at a time costs O(n^3) for n columns
# (80 s on EfficientNet-Lite0); 1/64 of a group keeps the order all but unchanged
GREEDY_STEP = 1 / 64


@dataclass
class Covariance:
    """Centred covariance of a consumer input's columns (channels x taps), from sampled rows."""

    matrix: np.ndarray  # [n, n] float64
    mean: np.ndarray  # [n]
    rows: int


def consumer_form(graph: Graph, s: Slice) -> LinearForm | None:
    """The linear form of the single consumer that reads slice `s` along its input channels, or None."""
    if s.role != Role.IN or s.source is None:
        return None
    readers = {n.index: n for n, _ in graph.consumers(s.tensor)}
    if len(readers) != 1:
        return None
    (node,) = readers.values()
    form = rule_for(node).linear_form(node, graph) if not node.scope else None
    if form is None or form.weight != s.tensor or form.w_in_axis != s.axis or form.x != s.source[0]:
        return None
    values = graph.const(form.weight)
    if values is None or not np.issubdtype(values.dtype, np.floating):  # a quantized weight: no float refit
        return None
    return form


def _columns(graph: Graph, form: LinearForm) -> int:
    """n of the form's M [C, K, N] reshaped to [n, N]: every weight element over the output channels."""
    shape = graph.const_shape(form.weight)
    return int(np.prod(shape)) // max(int(shape[form.w_out_axis]), 1)


def _unit_columns(channels, taps: int) -> list[int]:
    """The columns of M's [C x K, N] form that input `channels` (sorted) own: K taps each."""
    return [col for pos in channels for col in range(pos * taps, pos * taps + taps)]


def _row_key(form: LinearForm) -> tuple:
    """What the sampled rows depend on: the input and how the form cuts it (not which weight reads it).
    q, k and v projections of one input share a covariance."""
    per_weight = {"node", "weight", "w_in_axis", "w_out_axis", "bias", "bias_attach"}
    return (type(form).__name__,) + tuple(getattr(form, f.name) for f in fields(form) if f.name not in per_weight)


def covariances(graph: Graph, groups: list[Group], data: CalibData) -> dict[tuple, Covariance]:
    """The input covariance of every consumer of the groups that `obs` can use, keyed by `_row_key`,
    in one batched pass over `data`."""
    forms: dict[tuple, LinearForm] = {}
    for g in groups:
        for s in g.slices:
            form = consumer_form(graph, s)
            if form is not None and _row_key(form) not in forms and _columns(graph, form) <= MAX_COLUMNS:
                forms[_row_key(form)] = form
    if not forms:
        return {}
    keys = list(forms)
    batches = max(1, -(-data.count // data.batch))
    per_batch = max(1, MAX_ROWS // batches)
    sums: dict[tuple, list] = {}

    def visit(i: int, values: dict[str, np.ndarray]) -> None:
        for j, key in enumerate(keys):
            form = forms[key]
            a = form.rows(values[form.x], np.random.default_rng((j, i)), per_batch).astype(np.float64)
            z = a.reshape(len(a), -1)
            acc = sums.setdefault(key, [0.0, 0.0, 0])
            acc[0] = acc[0] + z.sum(0)
            acc[1] = acc[1] + z.T @ z
            acc[2] += len(z)

    calib.run_batches(graph.proto, data, sorted({f.x for f in forms.values()}), visit, "obs: input covariances")
    out = {}
    for key, (s1, s2, n) in sums.items():
        mean = s1 / n
        out[key] = Covariance(s2 / n - np.outer(mean, mean), mean, n)
    return out


@dataclass
class _Consumer:
    """One consumer's state during the greedy removal: current weights and inverse covariance."""

    weights: np.ndarray  # [n, N], refit as units go
    inverse: np.ndarray  # [n, n]
    blocks: np.ndarray  # [units, b] column indices of each unit (all units have b columns here)
    has: np.ndarray  # [units] bool: the unit has columns in this consumer
    energy: float  # output variance of the original consumer, tr(M^T H M)


def _consumer_state(graph: Graph, group: Group, s: Slice, form: LinearForm, cov: Covariance) -> _Consumer | None:
    m = form.matrix(np.asarray(graph.const(form.weight), dtype=np.float64))  # [C, K, N]
    c, k, n_out = m.shape
    flat = m.reshape(c * k, n_out)
    h = cov.matrix
    inverse = np.linalg.inv(_damped(h))
    # a position may stand for several roots of one unit (a head's coupled q / k / v indices)
    channels: list[set[int]] = [set() for _ in range(group.unit_count)]
    for pos, root in zip(s.positions.tolist(), s.roots.tolist()):
        channels[group.units[root]].add(pos)
    per_unit = [_unit_columns(sorted(chs), k) for chs in channels]
    sizes = {len(cols) for cols in per_unit if cols}
    if len(sizes) != 1 or sum(map(len, channels)) != len(set().union(*channels)):
        return None  # units of different widths, or sharing a channel: no batched, disjoint blocks
    width = sizes.pop()
    has = np.array([bool(cols) for cols in per_unit])
    blocks = np.array([cols if cols else [0] * width for cols in per_unit], dtype=np.int64)
    energy = float(np.sum(flat * (h @ flat)))
    return _Consumer(flat, inverse, blocks, has, max(energy, 1e-30))


def _saliency(state: _Consumer, alive: np.ndarray) -> np.ndarray:
    """Per unit, the relative output error its removal (with refit) adds now; 0 for units elsewhere."""
    out = np.zeros(len(alive))
    idx = np.nonzero(alive & state.has)[0]
    if not len(idx):
        return out
    cols = state.blocks[idx]  # [u, b]
    h_blocks = state.inverse[cols[:, :, None], cols[:, None, :]]  # [u, b, b]
    w_blocks = state.weights[cols]  # [u, b, N]
    if cols.shape[1] == 1:
        err = np.sum(w_blocks[:, 0, :] ** 2, axis=1) / np.maximum(h_blocks[:, 0, 0], 1e-300)
    else:
        err = np.sum(w_blocks * np.linalg.solve(h_blocks, w_blocks), axis=(1, 2))
    out[idx] = np.maximum(err, 0.0) / state.energy
    return out


def _remove(state: _Consumer, units: np.ndarray) -> float:
    """Update the weights and H^-1 as a refit without the units' columns would; return the relative output
    error that removal adds (all of them at once)."""
    units = units[state.has[units]]
    if not len(units):
        return 0.0
    cols = state.blocks[units].reshape(-1)
    h_ss = state.inverse[np.ix_(cols, cols)]
    h_s = state.inverse[:, cols]  # [n, b]
    w_s = state.weights[cols]
    gain = np.linalg.solve(h_ss, np.eye(len(cols)))  # (H^-1_SS)^-1
    error = float(np.sum(w_s * (gain @ w_s)))
    state.weights -= h_s @ (gain @ w_s)
    state.inverse -= h_s @ gain @ h_s.T
    state.weights[cols] = 0.0
    state.inverse[cols, :] = 0.0
    state.inverse[:, cols] = 0.0
    return max(error, 0.0) / state.energy


def unit_scores(group: Group, graph: Graph, covs: dict[tuple, Covariance]) -> np.ndarray | None:
    """Per unit: the cumulative relative error at its greedy removal step (larger = keep); None when the
    group's consumers cannot all be modelled (the caller then scores it by `act`)."""
    states = []
    for s in group.slices:
        if s.role != Role.IN or s.source is None:
            continue
        form = consumer_form(graph, s)
        cov = covs.get(_row_key(form)) if form is not None else None
        state = _consumer_state(graph, group, s, form, cov) if form is not None and cov is not None else None
        if state is None:
            return None
        states.append(state)
    if not states:
        return None
    units = group.unit_count
    alive = np.ones(units, dtype=bool)
    scores = np.zeros(units)
    total = 0.0
    chunk = max(1, int(units * GREEDY_STEP))
    left = min(units - 1, int(np.ceil(GREEDY_FRACTION * units)))
    while left > 0:
        saliency = np.sum([_saliency(st, alive) for st in states], axis=0)
        candidates = np.flatnonzero(alive)
        taken = candidates[np.argsort(saliency[candidates], kind="stable")[:min(chunk, left)]]
        # each alone costs no more than all together: scores stay in removal order
        scores[taken] = total + saliency[taken]
        total += sum(_remove(st, taken) for st in states)
        alive[taken] = False
        left -= len(taken)
    rest = np.sum([_saliency(st, alive) for st in states], axis=0)
    scores[alive] = total + rest[alive] + 1e-12  # after every greedy step, in their saliency order
    return scores


def group_unit_scores(group: Group, graph: Graph, covs: dict[tuple, Covariance],
                      stats: dict[tuple[str, int], ChannelStats]) -> np.ndarray:
    """`unit_scores`, or the group's centred `act` scores summed per unit when OBS cannot model it."""
    scores = unit_scores(group, graph, covs)
    if scores is not None:
        return scores
    log.debug("group %d: consumers without a modelled covariance; scored by centred act", group.id)
    roots = activation_scores(group, graph, stats, centered=True)
    return np.bincount(group.units, weights=roots, minlength=group.unit_count)


def _damped(h: np.ndarray) -> np.ndarray:
    return h + DAMPING * max(float(np.mean(np.diag(h))), 1e-12) * np.eye(len(h))


def refit_values(graph: Graph, group: Group, roots: np.ndarray, covs: dict[tuple, Covariance]
                 ) -> tuple[dict[str, np.ndarray], list[tuple[str, str, tuple, np.ndarray]]]:
    """New values for the group's modelled consumers when `roots` go (original shapes, the removed
    columns zero), refit by least squares from the original input covariance, with the bias taking the
    mean: what `--compensate lsq` does when this group alone is pruned. Returns the initializer values
    and the biases to add (for `apply.apply_values`)."""
    weights: dict[str, np.ndarray] = {}
    biases: list[tuple[str, str, tuple, np.ndarray]] = []
    gone = np.zeros(group.size, dtype=bool)
    gone[np.asarray(roots, dtype=np.int64)] = True
    for s in group.slices:
        form = consumer_form(graph, s)
        cov = covs.get(_row_key(form)) if form is not None else None
        if form is None or cov is None or form.weight in weights:
            continue
        original = np.asarray(graph.const(form.weight))
        m = form.matrix(original.astype(np.float64))
        c, k, n_out = m.shape
        flat = m.reshape(c * k, n_out)
        removed = np.zeros(c * k, dtype=bool)
        removed[_unit_columns(np.unique(s.positions[gone[s.roots]]).tolist(), k)] = True
        keep = ~removed
        h = cov.matrix
        refit = np.zeros_like(flat)
        refit[keep] = np.linalg.solve(_damped(h[np.ix_(keep, keep)]), h[keep] @ flat)
        shift = cov.mean @ flat - cov.mean @ refit
        weights[form.weight] = form.weight_from(refit.reshape(c, k, n_out), original)
        if form.bias:
            weights[form.bias] = (np.asarray(graph.const(form.bias), dtype=np.float64) + shift).astype(original.dtype)
        else:
            biases.append((form.node, f"{form.weight}__refit_bias", form.bias_attach, shift.astype(original.dtype)))
    return weights, biases
