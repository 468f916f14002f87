"""Compensation: adjust the consumers of removed channels so the pruned model reproduces the original.

* bias: the mean contribution of every removed input channel (calibration
  mean times the removed weights) is folded into the consumer's bias; a bias
  is added where none exists.
* lsq: each consumer's kept weights and bias are refit, by ridge-regularised
  least squares, to the original consumer's outputs on sampled calibration
  rows. Consumers are refit in topological order, each on the activations of
  the already pruned and refit upstream. The ridge pulls towards the kept
  original weights, so a consumer whose removed weights were zero keeps its
  weights exactly (the dead-channel oracle stays meaningful).

What a consumer computes comes from its rule (`Rule.linear_form`); this
module has no op knowledge. Values are written by `apply.apply_values`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from . import calib, ir
from .apply import apply_values
from .calib import CalibData, ChannelStats
from .group import Group
from .ir import Graph, ModelProto
from .options import COMPENSATIONS
from .planner import Plan
from .removal import Removal, collect
from .rules import rule_for
from .rules.forms import LinearForm

log = logging.getLogger(__name__)

MODES = COMPENSATIONS  # the list lives in options.py, shared with the CLI
# measured on tools/bench_fidelity.py: lsq wins on the CNN but hurts MiniLM; bias is the safer default
DEFAULT_MODE = "bias"
MAX_ROWS = 8192  # sampled rows per consumer for the least-squares fit
RIDGE = 1e-3  # ridge strength relative to the mean diagonal of the Gram matrix
# The bias row is all but unregularised: the bias is what absorbs the removed channels' mean
# contribution, so it must not be pulled back to its old value; a tiny ridge rather than none
# keeps the normal equations positive definite when float64 round-off eats the constant column.
BIAS_RIDGE = 1e-6  # relative to the weights' ridge


@dataclass
class Consumer:
    """A linear consumer of removed channels, in original coordinates."""

    form: LinearForm
    x_axis: int
    kept_in: np.ndarray
    removed_in: np.ndarray
    kept_out: np.ndarray
    order: int


@dataclass
class Values:
    """New initializer values (pruned coordinates) and biases to add, for `apply.apply_values`."""

    weights: dict[str, np.ndarray] = field(default_factory=dict)
    new_biases: list[tuple[str, str, tuple, np.ndarray]] = field(default_factory=list)


def consumers(graph: Graph, groups: list[Group], plan: Plan) -> list[Consumer]:
    """Every node that reads removed channels and has a linear form, in topological order.

    A weight read by several nodes (tied embeddings, a MatMul weight shared by two layers) is left
    out: refitting it for one reader changes it for the others, and each reader would need its own
    bias from its own inputs."""
    removal = collect(graph, groups, plan)
    found = []
    for weight, axes in removal.consumed.items():
        readers = sorted({n.index: n for n, _ in graph.consumers(weight)}.values(), key=lambda n: n.index)
        if len(readers) > 1:
            log.info("'%s' is a tied weight, read by %s: not compensated (a refit or bias for one reader would be "
                     "wrong for the others); left as pruned", weight, ", ".join(str(n) for n in readers))
            continue
        node = readers[0]
        form = rule_for(node).linear_form(node, graph) if not node.scope else None  # not inside a body
        if form is None or form.weight != weight or set(axes) != {form.w_in_axis}:
            log.info("%s: no linear form for compensation; left as pruned", node)
            continue
        found.append(_consumer(graph, removal, form, node.index))
    return sorted(found, key=lambda c: c.order)


def _consumer(graph: Graph, removal: Removal, form: LinearForm, order: int) -> Consumer:
    shape = graph.const_shape(form.weight)
    removed_in = np.array(sorted(removal.consumed[form.weight][form.w_in_axis]), dtype=np.int64)
    removed_out = sorted(removal.slices[form.weight].get(form.w_out_axis, ()))
    x_axis = form.x_axis + (graph.rank(form.x) or 0) if form.x_axis < 0 else form.x_axis
    return Consumer(form, x_axis, np.setdiff1d(np.arange(shape[form.w_in_axis]), removed_in), removed_in,
                    np.setdiff1d(np.arange(shape[form.w_out_axis]), removed_out), order)


def stat_spaces(found: list[Consumer]) -> list[tuple[str, int]]:
    return [(c.form.x, c.x_axis) for c in found]


def compensate(graph: Graph, found: list[Consumer], pruned: ModelProto, data: CalibData | None,
               stats: dict[tuple[str, int], ChannelStats] | None, mode: str) -> dict:
    """Adjust `pruned` (in place) by `mode`; return a summary for the report."""
    if mode == "none" or not found:
        return {"mode": mode, "consumers": 0}
    if mode == "bias":
        if stats is None:
            raise ValueError("bias compensation needs the channel statistics of the consumers' inputs")
        values = Values()
        for c in found:
            _bias_values(graph, c, pruned, stats[(c.form.x, c.x_axis)].mean, values)
        apply_values(pruned, values.weights, values.new_biases)
    elif mode == "lsq":
        if data is None:
            raise ValueError("least-squares compensation needs calibration data")
        _least_squares(graph, found, pruned, data)
    else:
        raise ValueError(f"unknown compensation '{mode}'")
    return {"mode": mode, "consumers": len(found)}


def _current(pruned: ModelProto, c: Consumer, original: Graph) -> tuple[np.ndarray, np.ndarray]:
    """The consumer's weight and bias as they are now in the pruned model (bias zeros when absent)."""
    read = ir.initializer_reader(pruned)
    w = read(c.form.weight)
    if w is None:
        raise KeyError(f"the pruned model has no initializer '{c.form.weight}' (the weight of {c.form.node})")
    bias = read(c.form.bias) if c.form.bias else None
    if bias is not None:
        return w, bias.astype(np.float64)
    return w, np.zeros(len(c.kept_out))


def _write(c: Consumer, w_like: np.ndarray, m: np.ndarray | None, bias: np.ndarray, values: Values) -> None:
    if m is not None:
        values.weights[c.form.weight] = c.form.weight_from(m, w_like)
    if c.form.bias:
        values.weights[c.form.bias] = bias.astype(w_like.dtype)
    else:
        values.new_biases.append((c.form.node, f"{c.form.weight}__bias", c.form.bias_attach, bias.astype(w_like.dtype)))


def _bias_values(graph: Graph, c: Consumer, pruned: ModelProto, mean: np.ndarray, values: Values) -> None:
    m_orig = c.form.matrix(ir.constant(graph, c.form.weight).astype(np.float64))
    removed = m_orig[c.removed_in][:, :, c.kept_out].sum(axis=1)  # [R, N]
    delta = mean[c.removed_in] @ removed
    w, b = _current(pruned, c, graph)
    if np.any(delta != 0):
        _write(c, w, None, b + delta, values)


def _least_squares(graph: Graph, found: list[Consumer], pruned: ModelProto, data: CalibData) -> None:
    batches = max(1, -(-data.count // data.batch))
    per_batch = max(1, MAX_ROWS // batches)
    targets: list[list[np.ndarray]] = [[] for _ in found]

    def keep_targets(i: int, values: dict[str, np.ndarray]) -> None:
        for j, c in enumerate(found):
            a = c.form.rows(values[c.form.x], np.random.default_rng((j, i)), per_batch).astype(np.float64)
            m = c.form.matrix(ir.constant(graph, c.form.weight).astype(np.float64))[:, :, c.kept_out]
            b = ir.constant(graph, c.form.bias)[c.kept_out] if c.form.bias else 0.0
            targets[j].append(np.einsum("rck,ckn->rn", a, m) + b)

    calib.run_batches(graph.proto, data, sorted({c.form.x for c in found}), keep_targets, "lsq targets")
    for j, c in enumerate(found):
        gram, rhs = _normal_equations(pruned, c, j, data, per_batch, targets[j])
        w, b = _current(pruned, c, graph)
        theta0 = np.concatenate([c.form.matrix(w.astype(np.float64)).reshape(-1, len(b)), b[None, :]])
        ridge = RIDGE * max(float(np.mean(np.diag(gram)[:-1])), 1e-12)
        reg = np.full(len(gram), ridge)
        reg[-1] = ridge * BIAS_RIDGE
        theta = np.linalg.solve(gram + np.diag(reg), rhs + reg[:, None] * theta0)
        values = Values()
        m = theta[:-1].reshape(len(c.kept_in), -1, len(b))
        _write(c, w, m, theta[-1], values)
        apply_values(pruned, values.weights, values.new_biases)
        targets[j] = []
        log.info("lsq %d/%d: %s refit on %d channels", j + 1, len(found), c.form.node, len(c.kept_in))


def _normal_equations(pruned: ModelProto, c: Consumer, j: int, data: CalibData, per_batch: int,
                      targets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    acc: dict[str, np.ndarray] = {}

    def visit(i: int, values: dict[str, np.ndarray]) -> None:
        a = c.form.rows(values[c.form.x], np.random.default_rng((j, i)), per_batch).astype(np.float64)
        z = np.concatenate([a.reshape(len(a), -1), np.ones((len(a), 1))], axis=1)
        acc["g"] = acc.get("g", 0.0) + z.T @ z
        acc["h"] = acc.get("h", 0.0) + z.T @ targets[i]

    calib.run_batches(pruned, data, [c.form.x], visit, f"lsq {c.form.node}")
    return acc["g"], acc["h"]
