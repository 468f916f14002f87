"""The dead-channel oracle: the correctness check of a plan.

For the exact groups of a plan, zero every slice that consumes the removed
channels ("in" slices) in the original model: those channels then influence
nothing. Pruning that zeroed model with the same plan must give the same
outputs. A consumer the analysis missed makes the pruned model fail to run
or differ.

Groups whose channels reach a run-time quantization range (dynamic int8,
`Group.shared_range_reasons`) have their producers' slices zeroed too: the
removed channels are then exactly zero where the range is taken, as a range
that always holds 0 needs for the removal to be exact.

Quantized models: a removed slice of an int8 weight is set to its zero point
(what stands for 0, `Rule.zero_of`), and activation fake quantization
(QuantizeLinear -> DequantizeLinear pairs, `Rule.oracle_identity`) runs as
Identity in both models: its rounding would turn float32 summation-order
noise into whole quantization steps, while the analysis is what is checked.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import ir
from .apply import apply_plan
from .errors import CheckFailedError
from .group import Group
from .ir import Graph, ModelProto
from .planner import Plan
from .removal import collect, interface_changes
from .cache_io import slice_feeds, slice_outputs
from .rules import rule_for
from .runtime import run
from .validate import Comparison, compare, random_inputs

log = logging.getLogger(__name__)

# Max |difference| relative to the output's max magnitude: float32 sums
# reordered by removed channels stay far below this.
TOLERANCE = 1e-4


# An ill-conditioned model (random weights whose activations reach 1e10, a sigmoid of their difference)
# turns float32 summation noise into whole output steps; the oracle then compares against the model's
# own sensitivity to a change of its inputs this small, measured only when the plain check fails.
INPUT_JITTER = 1e-6
NOISE_FACTOR = 4


@dataclass
class OracleResult:
    passed: bool
    groups_checked: int
    comparison: Comparison
    detail: str


def zero_consumers(graph: Graph, groups: list[Group], plan: Plan) -> ModelProto:
    """Copy of the model with every "in" slice of the plan's removed channels set to zero (every slice,
    for groups that reach a run-time quantization range)."""
    removal = collect(graph, groups, plan)
    zeroed = {}
    for name, axes in removal.silenced.items():
        value = ir.constant(graph, name).copy()
        zero = _zero_of(graph, name)
        for axis, idx in axes.items():
            index: list[Any] = [slice(None)] * value.ndim
            index[axis] = np.asarray(sorted(idx), dtype=np.int64)
            value[tuple(index)] = 0 if zero is None else np.broadcast_to(zero, value.shape)[tuple(index)]
        zeroed[name] = value
    return ir.copy_model(graph.proto, zeroed)


def _unsigned_weights(graph: Graph) -> set[str]:
    """The int8 weights and zero points (Rule.integer_weights) the oracle may store as uint8: constants,
    every reader of which reads them as such a pair, the weight's zero point given as a constant."""
    claimed: dict[str, set[int]] = {}
    for node in graph.nodes:
        for w_input, zp_input in rule_for(node).integer_weights(node, graph):
            w, zp = node.input(w_input), node.input(zp_input)
            if not zp or not all(_is_int8_constant(graph, t) for t in (w, zp)):
                continue
            for t in (w, zp):
                claimed.setdefault(t, set()).add(node.index)
    return {t for t, readers in claimed.items() if {n.index for n, _ in graph.consumers(t)} == readers}


def _is_int8_constant(graph: Graph, name: str) -> bool:
    value = graph.const(name)
    return value is not None and value.dtype == np.int8 and not graph.is_graph_input(name)


def _as_unsigned(model: ModelProto, names: set[str]) -> ModelProto:
    read = ir.initializer_reader(model)
    values: dict[str, Any] = {t: (v.astype(np.int16) + 128).astype(np.uint8)
                              for t in names for v in (read(t),) if v is not None}
    return ir.copy_model(model, values)


def _zero_of(graph: Graph, name: str):
    """What stands for zero in initializer `name` (a quantized weight's zero point), None for 0."""
    for node, _ in graph.consumers(name):
        zero = rule_for(node).zero_of(node, graph, name)
        if zero is not None:
            return zero
    return None


def noise_floor(model: ModelProto, feeds: dict, reference: list, interface: dict, provider: str) -> float:
    """Relative output change of `model` when its float inputs change by INPUT_JITTER (seeded)."""
    rng = np.random.default_rng(1)
    jittered = {k: (v * (1 + INPUT_JITTER * rng.standard_normal(v.shape)).astype(v.dtype)
                    if np.issubdtype(v.dtype, np.floating) else v) for k, v in feeds.items()}
    if all(jittered[k] is feeds[k] for k in feeds):
        return 0.0
    ran = run(model, jittered, provider, optimize=False)
    return compare(reference, slice_outputs(ran.names, ran.outputs, interface)).relative


def removal_tensors(graph: Graph, groups: list[Group], plan: Plan) -> list[str]:
    """The initializers the plan cuts."""
    return list(collect(graph, groups, plan).slices)


def tolerance_for(graph: Graph, tensors: list[str]) -> float:
    """TOLERANCE, or a few units of the narrowest float type the cut weights compute in: a float16
    model's sums, reordered by the removed channels, differ by about its epsilon (1e-3)."""
    eps = [e for e in (graph.float_eps(t) for t in tensors if t in graph.initializers) if e is not None]
    return max([TOLERANCE] + [4 * e for e in eps])


def run_oracle(graph: Graph, groups: list[Group], plan: Plan, input_shapes: dict | None = None,
               seed: int = 0, provider: str = "cpu") -> OracleResult:
    """Check the exact groups of `plan` on seeded random inputs (ORT, optimisations off)."""
    exact = plan.only_exact()
    zeroed = zero_consumers(graph, groups, exact)
    pruned = apply_plan(graph, groups, exact, source=zeroed)
    unsigned = _unsigned_weights(graph)
    if unsigned:  # exact integer products on every CPU (Rule.integer_weights)
        zeroed, pruned = _as_unsigned(zeroed, unsigned), _as_unsigned(pruned, unsigned)
    feeds = random_inputs(graph.proto, input_shapes or {}, seed)
    fake_quant = [n.index for n in graph.nodes if rule_for(n).oracle_identity(n, graph)]
    if fake_quant:  # compare the float computation: the analysis is what is checked
        zeroed, pruned = ir.as_identity(zeroed, fake_quant), ir.as_identity(pruned, fake_quant)
    interface = interface_changes(graph, groups, exact)  # KV-cache I/O: compared at the kept heads
    ran = run(zeroed, feeds, provider, optimize=False)
    reference = slice_outputs(ran.names, ran.outputs, interface)
    try:
        candidate = run(pruned, slice_feeds(feeds, interface), provider, optimize=False).outputs
    except CheckFailedError as exc:  # a missed consumer often makes the pruned model unrunnable
        cmp = Comparison(float("inf"), 0.0, float("inf"), False, False)
        return OracleResult(False, len(exact.groups), cmp, f"pruned model does not run: {exc}")
    cmp = compare(reference, candidate)
    tolerance = tolerance_for(graph, removal_tensors(graph, groups, exact))
    passed = cmp.shapes_match and cmp.finite and cmp.relative <= tolerance
    detail = (f"{len(exact.groups)} exact groups, max |diff| {cmp.max_abs:.3g} "
              f"(relative {cmp.relative:.3g}, tolerance {tolerance:g})")
    if not passed and cmp.shapes_match and cmp.finite:
        noise = noise_floor(zeroed, feeds, reference, interface, provider)
        if cmp.relative <= NOISE_FACTOR * noise:
            passed = True
            detail += (f"; within {NOISE_FACTOR}x the model's own noise on these inputs ({noise:.3g}: a "
                       f"{INPUT_JITTER:g} relative change of its float inputs moves its outputs that much)")
    if not cmp.shapes_match:
        detail = "output shapes differ: " + detail
    log.info("oracle %s: %s", "passed" if passed else "FAILED", detail)
    return OracleResult(passed, len(exact.groups), cmp, detail)
