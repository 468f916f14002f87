"""Public helpers for tests and tools that need more than the pipeline.

The pipeline is `onnxprune.analyze` -> `Analysis.plan` -> `Analysis.apply` (or `prune` in one
call, `verify` for the oracle). Around it, a test or a benchmark needs random feeds, ONNX Runtime
runs, output comparisons, model statistics, plans from explicit choices and the pieces of the
dead-channel oracle: they are here, under names that stay when the internal modules move.

Models may be given as a `Model`, an `onnx.ModelProto` or (where noted) a file path; models are
returned as `Model`.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterable, Mapping, Union

import numpy as np

from . import apply as _apply, importance as _importance, oracle as _oracle, planner as _planner
from . import report as _report, validate as _validate
from .api import Analysis, static_shapes
from .group import Group
from .ir import Graph, Model
from .planner import Plan, PlanGroup, PlanOptions
from .report import ModelStats
from .validate import Comparison, RunResult

if TYPE_CHECKING:
    from .ir import ModelProto

ModelLike = Union[Model, "ModelProto"]

TOLERANCE: float = _oracle.TOLERANCE
"""The oracle's bound on the relative output difference of float32 models."""

__all__ = ["TOLERANCE", "Comparison", "ModelStats", "PlanOptions", "RunResult", "available_providers", "compare",
           "frozen_reasons", "make_plan", "model_stats", "oracle_models", "plan_removing", "random_inputs",
           "run_model", "slices_json", "tolerance_for", "validate_pruned", "weight_scores", "zero_consumers"]


def _proto(model: ModelLike) -> ModelProto:
    return model.proto if isinstance(model, Model) else model


def _raw(model: ModelLike | str | os.PathLike) -> ModelProto | str:
    """A model file's path as a string, else the protobuf."""
    return os.fspath(model) if isinstance(model, (str, os.PathLike)) else _proto(model)


# -- running models ----------------------------------------------------------

def available_providers() -> list[str]:
    """The ONNX Runtime providers this machine has, by short name ("cpu", "cuda")."""
    return _validate.available_providers()


def random_inputs(model: ModelLike, input_shapes: dict | None = None, seed: int = 0,
                  int_high: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Seeded random feeds for the graph inputs: floats ~ N(0, 1); integer inputs in [0, high)
    (token ids; `int_high` overrides the range per input) or ones (masks). `input_shapes` fixes
    dynamic dims."""
    return _validate.random_inputs(_proto(model), input_shapes or {}, seed, int_high)


def run_model(model: ModelLike | str, feeds: dict[str, np.ndarray], provider: str = "cpu", optimize: bool = True,
              repeats: int = 0, threads: int = 0) -> RunResult:
    """Run `model` (or a model file) with ONNX Runtime once, plus `repeats` timed runs for a median
    latency; `optimize=False` turns ORT's graph optimisations off (as the oracle does)."""
    return _validate.run(_raw(model), feeds, provider, optimize, repeats, threads)


def compare(reference: list[np.ndarray], candidate: list[np.ndarray]) -> Comparison:
    """Max abs difference over all outputs, relative to the reference's largest magnitude, over the
    positions where both are finite; `shapes_match` and `finite` say whether that means anything."""
    return _validate.compare(reference, candidate)


def validate_pruned(original_path: str, pruned: ModelLike | str, feeds: dict[str, np.ndarray],
                    providers: Iterable[str] = ("cpu",), repeats: int = 0) -> dict:
    """The pipeline's validation: run the original file and `pruned` on `feeds` on each provider;
    raises CheckFailedError when the pruned model is broken."""
    return _validate.validate_pruned(original_path, _raw(pruned), feeds, list(providers), repeats)


# -- describing models and analyses ---------------------------------------------

def model_stats(model: Analysis | ModelLike, input_shapes: dict | None = None) -> ModelStats:
    """Parameters and MACs: of the analysed model for an Analysis, else of `model` with
    `input_shapes` fixing its dynamic inputs (as the pruning report counts them)."""
    if isinstance(model, Analysis):
        return _report.model_stats(model.graph)
    proto = _proto(model)
    return _report.model_stats(Graph(proto, static_shapes(proto, input_shapes or {})))


def frozen_reasons(analysis: Analysis, top: int | None = None) -> list[tuple[str, int]]:
    """(reason, count) of the frozen groups, most common first, node names stripped so like reasons
    count together; all of them unless `top` is given."""
    return _report.frozen_reasons(analysis.groups, top if top is not None else len(analysis.groups) or 1)


def slices_json(group: Group, pruned: Iterable[int]) -> list[dict]:
    """The plan-file slices of `group` when its root indices `pruned` go (tensor, axis, indices)."""
    return _planner.slices_json(group, pruned)


# -- plans -------------------------------------------------------------------

def weight_scores(analysis: Analysis, criterion: str = "l1", reduction: str = "sum",
                  groups: Iterable[Group] | None = None) -> dict[int, np.ndarray]:
    """Unit scores (group id -> one score per unit) of the prunable groups (or `groups`) by a
    weight criterion ("l1", "l2", "fpgm", "lamp", "random"), as `make_plan` takes them."""
    rng = np.random.default_rng(0)
    return {g.id: _importance.unit_scores(g, _importance.root_scores(g, analysis.graph, criterion, rng, reduction))
            for g in (analysis.prunable if groups is None else groups)}


def make_plan(analysis: Analysis, scores: Mapping[int, np.ndarray], ratio: float,
              options: PlanOptions | None = None) -> Plan:
    """Plan at `ratio` from explicit unit scores (group id -> scores, lowest go first): local
    pruning by default; `options` adds global ranking, rounding, per-group ratios and ignores."""
    return _planner.make_plan(analysis.groups, scores, ratio, options)


def plan_removing(analysis: Analysis, removed: Mapping[str, Iterable[int]]) -> Plan:
    """A plan that removes exactly the given root indices: root tensor name -> indices."""
    by_root = {g.root[0]: g for g in analysis.groups}
    missing = sorted(set(removed) - set(by_root))
    if missing:
        raise KeyError(f"no group has root tensor {missing}; roots: {sorted(by_root)}")
    return Plan(tuple(PlanGroup(g.id, g.root, g.exact, g.size, tuple(int(i) for i in removed[name]))
                      for name, g in ((n, by_root[n]) for n in removed)))


# -- the dead-channel oracle -----------------------------------------------------

def zero_consumers(analysis: Analysis, plan: Plan) -> Model:
    """A copy of the analysed model with every consumer of the plan's removed channels zeroed."""
    return Model(_oracle.zero_consumers(analysis.graph, analysis.groups, plan))


def oracle_models(analysis: Analysis, plan: Plan) -> tuple[Model, Model]:
    """The oracle's two models for the exact groups of `plan`: the consumers of the removed channels
    zeroed, and that model pruned. Their outputs agree within `tolerance_for` when the analysis is right."""
    exact = plan.only_exact()
    zeroed = _oracle.zero_consumers(analysis.graph, analysis.groups, exact)
    return Model(zeroed), Model(_apply.apply_plan(analysis.graph, analysis.groups, exact, source=zeroed))


def tolerance_for(analysis: Analysis, tensors: list[str]) -> float:
    """TOLERANCE, or a few units of the narrowest float type the given weights compute in (a float16
    model's sums, reordered by the removed channels, differ by about its epsilon)."""
    return _oracle.tolerance_for(analysis.graph, tensors)
