"""Compensation: adjust the consumers of removed channels so the pruned model reproduces the original.

* bias: the mean contribution of every removed input channel (calibration
  mean times the removed weights) is folded into the consumer's bias; a bias
  is added where none exists.
* moments: bias, then each consumer's output channels are scaled and shifted
  so that their mean and standard deviation on the calibration rows are the
  original's (a folded normalisation re-estimated: removing channels shrinks
  the spread of what the next layer sees, and ReLU-like activations cut it
  at the wrong place). Consumers are corrected in topological order, each on
  the already corrected upstream.
* lsq: each consumer's kept weights and bias are refit, by ridge-regularised
  least squares, to the original consumer's outputs on sampled calibration
  rows. Consumers are refit in topological order, each on the activations of
  the already pruned and refit upstream. The ridge strength is chosen per
  consumer by how well a fit on half the samples predicts the other half: a
  fixed small ridge overfits where a layer has about as many inputs as the
  calibration set has rows (MiniLM's FFN: cosine 0.55 against 0.72 for bias),
  and the largest strength is bias compensation. The ridge pulls towards the kept
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
from .allocation import fidelity_measures, no_worse
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
STAT_MODES = ("bias", "moments", "auto")  # the modes that read the consumers' input channel means
# measured on tools/bench_fidelity.py: with its ridge validated on held-out rows lsq beats bias on
# EfficientNet-Lite0 (top-1 agreement at -25 % MACs 0.75 against 0.43) and on MiniLM (cosine at -25 %
# parameters 0.753 against 0.720); a fixed ridge overfit MiniLM's FFN (0.551)
DEFAULT_MODE = "auto"
AUTO_MODES = ("lsq", "bias")  # what auto compares, the first kept on a tie or without held-out samples
MAX_ROWS = 8192  # sampled rows per consumer for the least-squares fit
# calibration samples a refit runs on (the refits share one pass over the network, calib.Stepwise); on
# EfficientNet-Lite0 at -25 % MACs 256 give 77.8 % top-1 agreement, 128 give 75.0 % (about 100 and 60 s
# on 2 cores); more sampled rows per consumer (32768 against MAX_ROWS) change nothing there
LSQ_SAMPLES = 256
# ridge strengths (relative to the mean diagonal of the Gram matrix) tried per consumer, the one that
# predicts held-out rows best is taken (`_validated_ridge`)
RIDGES = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 1e3)
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
               stats: dict[tuple[str, int], ChannelStats] | None, mode: str,
               held_out: CalibData | None = None) -> dict:
    """Adjust `pruned` (in place) by `mode`; return a summary for the report (with auto, also the
    held-out fidelity of the model kept, under "fidelity")."""
    if mode == "none" or not found:  # auto with nothing to compare: what it would have kept first
        return {"mode": AUTO_MODES[0] if mode == "auto" else mode, "consumers": 0}
    if mode == "auto":
        return _closer_of(graph, found, pruned, data, stats, held_out)
    if mode == "bias":
        if stats is None:
            raise ValueError("bias compensation needs the channel statistics of the consumers' inputs")
        _fold_removed_means(graph, found, pruned, stats)
    elif mode == "moments":
        if data is None or stats is None:
            raise ValueError("moment compensation needs calibration data and channel statistics")
        _fold_removed_means(graph, found, pruned, stats)
        _restore_moments(graph, found, pruned, data)
    elif mode == "lsq":
        if data is None:
            raise ValueError("least-squares compensation needs calibration data")
        _least_squares(graph, found, pruned, data)
    else:
        raise ValueError(f"unknown compensation '{mode}'")
    return {"mode": mode, "consumers": len(found)}


def _closer_of(graph: Graph, found: list[Consumer], pruned: ModelProto, data: CalibData | None,
               stats: dict[tuple[str, int], ChannelStats] | None, held_out: CalibData | None) -> dict:
    """lsq, unless bias compensation leaves the model closer to the original on the held-out samples.
    Each refit is the best for its own layer on held-out rows, yet on a causal LM the refits together
    did worse than bias at the output (perplexity 75.7 against 72.6 at 20 % fewer parameters): only the
    whole model, run on samples the fit did not see, tells."""
    first, second = AUTO_MODES
    if held_out is None:
        summary = compensate(graph, found, pruned, data, stats, first)
        return {**summary, "auto": {"kept": first, "why": "no held-out samples to compare on"}}
    other = ir.copy_model(pruned)
    compensate(graph, found, other, data, stats, second)
    compensate(graph, found, pruned, data, stats, first)
    reference = calib.outputs(graph.proto, held_out, "fidelity (original)")  # once for both
    fidelity = {first: calib.fidelity(graph.proto, pruned, held_out, reference),
                second: calib.fidelity(graph.proto, other, held_out, reference)}
    measures = {m: fidelity_measures(f) for m, f in fidelity.items()}
    kept = first if no_worse(measures[first], measures[second]) else second
    if kept == second:
        ir.overwrite(pruned, other)
    log.info("compensation auto: %s %s, %s %s on %d held-out samples: keeping %s", first, measures[first], second,
             measures[second], held_out.count, kept)
    return {"mode": kept, "consumers": len(found), "fidelity": fidelity[kept],
            "auto": {"kept": kept, "samples": held_out.count, **measures}}


def _added_bias(c: Consumer) -> str:
    return f"{c.form.weight}__bias"


def _current(pruned: ModelProto, c: Consumer, original: Graph) -> tuple[np.ndarray, np.ndarray]:
    """The consumer's weight and bias as they are now in the pruned model (bias zeros when absent)."""
    read = ir.initializer_reader(pruned)
    w = read(c.form.weight)
    if w is None:
        raise KeyError(f"the pruned model has no initializer '{c.form.weight}' (the weight of {c.form.node})")
    bias = read(c.form.bias or _added_bias(c))
    if bias is not None:
        return w, bias.astype(np.float64)
    return w, np.zeros(len(c.kept_out))


def _write(c: Consumer, w_like: np.ndarray, m: np.ndarray | None, bias: np.ndarray, values: Values,
           pruned: ModelProto | None = None) -> None:
    """Queue the consumer's new weight (`m`, None: unchanged) and bias; a bias is added to a consumer
    without one, once (a later write to it, given `pruned`, updates the added one)."""
    if m is not None:
        values.weights[c.form.weight] = c.form.weight_from(m, w_like)
    if c.form.bias:
        values.weights[c.form.bias] = bias.astype(w_like.dtype)
    elif pruned is not None and ir.initializer_reader(pruned)(_added_bias(c)) is not None:
        values.weights[_added_bias(c)] = bias.astype(w_like.dtype)
    else:
        values.new_biases.append((c.form.node, _added_bias(c), c.form.bias_attach, bias.astype(w_like.dtype)))


def _fold_removed_means(graph: Graph, found: list[Consumer], pruned: ModelProto,
                        stats: dict[tuple[str, int], ChannelStats]) -> None:
    """Bias compensation of every consumer, written into `pruned`."""
    values = Values()
    for c in found:
        _bias_values(graph, c, pruned, stats[(c.form.x, c.x_axis)].mean, values)
    apply_values(pruned, values.weights, values.new_biases)


def _original_linear(graph: Graph, c: Consumer) -> tuple[np.ndarray, np.ndarray | float]:
    """The original consumer's M [C, K, kept N] and bias (0.0 when none), in float64."""
    m = c.form.matrix(ir.constant(graph, c.form.weight).astype(np.float64))[:, :, c.kept_out]
    b = ir.constant(graph, c.form.bias)[c.kept_out].astype(np.float64) if c.form.bias else 0.0
    return m, b


def _first(data: CalibData, samples: int) -> CalibData:
    """The first `samples` samples (at least one batch)."""
    return data.take(0, min(data.count, max(samples, data.batch)))


def _bias_values(graph: Graph, c: Consumer, pruned: ModelProto, mean: np.ndarray, values: Values) -> None:
    m_orig = c.form.matrix(ir.constant(graph, c.form.weight).astype(np.float64))
    removed = m_orig[c.removed_in][:, :, c.kept_out].sum(axis=1)  # [R, N]
    delta = mean[c.removed_in] @ removed
    w, b = _current(pruned, c, graph)
    if np.any(delta != 0):
        _write(c, w, None, b + delta, values)


MOMENT_SAMPLES = 64  # calibration samples per consumer: means and spreads settle long before 256
SCALE_RANGE = (0.25, 4.0)  # a spread that collapsed (or exploded) is not rescued by a huge factor


def _restore_moments(graph: Graph, found: list[Consumer], pruned: ModelProto, data: CalibData) -> None:
    """Scale and shift each consumer's output channels so that their mean and standard deviation on
    the calibration rows match the original's: y' = s (y - mean_pruned) + mean_original, with
    s = std_original / std_pruned, folded into the consumer's weight and bias. Consumers are taken in
    topological order, each measured on the model with the ones before it corrected (corrected
    together, a chain corrects twice). A channel whose spread is unchanged (within 1e-4) or zero keeps
    its values exactly: dead channels stay dead."""
    data = _first(data, MOMENT_SAMPLES)
    target = _output_moments(graph.proto, graph, found, data, original=True)
    steps = calib.Stepwise(data, [c.form.x for c in found], "moments: pruned")
    corrected = 0
    for j, c in enumerate(found):
        ((mean_p, std_p),) = _output_moments(pruned, graph, [c], data, original=False, steps=steps)
        mean_o, std_o = target[j]
        scale = np.ones_like(std_p)
        live = (std_p > 1e-12) & (std_o > 1e-12)
        scale[live] = np.clip(std_o[live] / std_p[live], *SCALE_RANGE)
        scale[np.abs(scale - 1) < 1e-4] = 1.0
        shift = mean_o - scale * mean_p
        shift[np.abs(shift) <= 1e-4 * std_o] = 0.0
        if not np.any(scale != 1) and not np.any(shift != 0):
            continue
        values = Values()
        w, b = _current(pruned, c, graph)
        _write(c, w, c.form.matrix(w.astype(np.float64)) * scale, scale * b + shift, values, pruned)
        apply_values(pruned, values.weights, values.new_biases)
        steps.changed(_written(values))
        corrected += 1
    log.info("moments: %d of %d consumers corrected", corrected, len(found))


def _output_moments(model: ModelProto, graph: Graph, found: list[Consumer], data: CalibData,
                    original: bool, steps: calib.Stepwise | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per consumer, the mean and standard deviation of each kept output channel over sampled rows of
    its input in `model` (the original's weights when `original`, else the pruned model's). Given
    `steps`, whose next target is the input of the one consumer in `found`, `model` runs through it."""
    sums: list[list[np.ndarray]] = [[] for _ in found]
    forms = {}
    for j, c in enumerate(found):
        if original:
            forms[j] = _original_linear(graph, c)
        else:
            w, b = _current(model, c, graph)
            forms[j] = (c.form.matrix(w.astype(np.float64)), b)

    def visit(i: int, values: dict[str, np.ndarray]) -> None:
        for j, c in enumerate(found):
            a = c.form.rows(values[c.form.x], np.random.default_rng((j, i)), MAX_ROWS).astype(np.float64)
            m, b = forms[j]
            y = np.einsum("rck,ckn->rn", a, m) + b
            sums[j].append(np.stack([np.full(y.shape[1], len(y), dtype=np.float64), y.sum(0), (y * y).sum(0)]))

    if steps is not None:
        steps.next(model, visit)
    else:
        calib.run_batches(model, data, sorted({c.form.x for c in found}), visit,
                          "moments: original" if original else "moments: pruned", progress=False)
    out = []
    for parts in sums:
        n, s1, s2 = np.sum(parts, axis=0)
        mean = s1 / n
        out.append((mean, np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))))
    return out


def _least_squares(graph: Graph, found: list[Consumer], pruned: ModelProto, data: CalibData) -> None:
    data = _first(data, LSQ_SAMPLES)
    batches = max(1, -(-data.count // data.batch))
    per_batch = max(1, MAX_ROWS // batches)
    targets: list[list[np.ndarray]] = [[] for _ in found]
    originals = [_original_linear(graph, c) for c in found]  # once, not per batch

    def keep_targets(i: int, values: dict[str, np.ndarray]) -> None:
        for j, c in enumerate(found):
            a = c.form.rows(values[c.form.x], np.random.default_rng((j, i)), per_batch).astype(np.float64)
            m, b = originals[j]
            targets[j].append(np.einsum("rck,ckn->rn", a, m) + b)

    calib.run_batches(graph.proto, data, sorted({c.form.x for c in found}), keep_targets, "lsq targets")
    # each consumer's input in the pruned model as refit so far, one pass over the network for all
    steps = calib.Stepwise(data, [c.form.x for c in found], "lsq")
    for j, c in enumerate(found):
        halves = _normal_equations(steps, pruned, c, j, per_batch, targets[j])
        w, b = _current(pruned, c, graph)
        theta0 = np.concatenate([c.form.matrix(w.astype(np.float64)).reshape(-1, len(b)), b[None, :]])
        ridge = _validated_ridge(halves, theta0)
        theta = _ridge_solve(halves[0][0] + halves[1][0], halves[0][1] + halves[1][1], theta0, ridge)
        values = Values()
        m = theta[:-1].reshape(len(c.kept_in), -1, len(b))
        _write(c, w, m, theta[-1], values)
        apply_values(pruned, values.weights, values.new_biases)
        steps.changed(_written(values))
        targets[j] = []
        log.info("lsq %d/%d: %s refit on %d channels (ridge %g)", j + 1, len(found), c.form.node, len(c.kept_in),
                 ridge)


def _written(values: Values) -> set[str]:
    """The initializers `values` writes or adds."""
    return set(values.weights) | {name for _, name, _, _ in values.new_biases}


def _ridge_solve(gram: np.ndarray, rhs: np.ndarray, theta0: np.ndarray, ridge: float) -> np.ndarray:
    """Ridge least squares pulled towards `theta0`; `ridge` relative to the Gram's mean diagonal."""
    strength = ridge * max(float(np.mean(np.diag(gram)[:-1])), 1e-12)
    reg = np.full(len(gram), strength)
    reg[-1] = strength * BIAS_RIDGE
    return np.linalg.solve(gram + np.diag(reg), rhs + reg[:, None] * theta0)


def _validated_ridge(halves: list[tuple[np.ndarray, np.ndarray]], theta0: np.ndarray) -> float:
    """The ridge of RIDGES whose fit on one half of the calibration samples best predicts the other
    half (both ways). Few samples per weight (a transformer's FFN has as many inputs as a small
    calibration set has tokens) overfit at a small ridge; the largest keeps the kept weights and
    refits the bias only, which is what `bias` compensation does."""
    def held_error(fit: tuple[np.ndarray, np.ndarray], check: tuple[np.ndarray, np.ndarray], ridge: float) -> float:
        theta = _ridge_solve(fit[0], fit[1], theta0, ridge)
        return float(np.sum(theta * (check[0] @ theta)) - 2.0 * np.sum(theta * check[1]))

    errors = {r: held_error(halves[0], halves[1], r) + held_error(halves[1], halves[0], r) for r in RIDGES}
    return min(errors, key=errors.__getitem__)


def _normal_equations(steps: calib.Stepwise, pruned: ModelProto, c: Consumer, j: int, per_batch: int,
                      targets: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Gram matrix and right-hand side of the consumer's fit, for each half of every batch's sampled
    rows (rows are in sample order: the halves hold different samples, for validating the ridge); the
    consumer's input is the next target of `steps`."""
    acc = [[0.0, 0.0], [0.0, 0.0]]

    def visit(i: int, values: dict[str, np.ndarray]) -> None:
        a = c.form.rows(values[c.form.x], np.random.default_rng((j, i)), per_batch).astype(np.float64)
        z = np.concatenate([a.reshape(len(a), -1), np.ones((len(a), 1))], axis=1)
        half = len(z) // 2
        for k, part in enumerate((slice(0, half), slice(half, None))):
            acc[k][0] = acc[k][0] + z[part].T @ z[part]
            acc[k][1] = acc[k][1] + z[part].T @ targets[i][part]

    steps.next(pruned, visit)
    return [(np.asarray(g), np.asarray(h)) for g, h in acc]
