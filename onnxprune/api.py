"""The public pipeline: load -> analyse -> score -> plan -> apply -> validate -> save -> report."""
from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from . import activation, cache_io, calib, compensate, genai_config, ir, latency, paths, saliency, sensitivity
from .apply import apply_plan
from .depgraph import build_groups
from .errors import BadInputError, CheckFailedError, OnnxPruneError, OutputWriteError
from .fold import fold_shape_arithmetic
from .fold_bodies import fold_body_arithmetic
from .group import Group
from .config import PruneConfig
from .importance import root_scores, unit_scores
from .ir import Graph, Model
from .ir.model import IN_MEMORY, read_checked
from .oracle import OracleResult, run_oracle
from .planner import Plan, Planner
from .allocation import allocate, allocation_note, compare_allocations
from .targets import CostModel, plan_for_target
from .removal import interface_changes
from .report import (PruneReport, frozen_reasons, group_rows, model_stats, nothing_pruned_reason,
                     signature_rows)
from .progress import Progress
from .validate import available_providers, check_like_original, file_size, random_inputs, validate_pruned

if TYPE_CHECKING:
    from .ir import ModelProto

log = logging.getLogger(__name__)

ModelSource = Union[str, "os.PathLike[str]", Model, "ModelProto"]  # what analyze / prune / verify take

MAX_FOLD_ROUNDS = 32  # stops at the first round that folds nothing


@dataclass
class Analysis:
    """What `analyze` found: the read-only `graph`, its `groups` (pruning units and frozen spaces)
    and the fixed shapes of dynamic inputs that were used. Plan, apply and verify from here."""

    graph: Graph
    groups: list[Group]
    input_shapes: dict = field(default_factory=dict)  # the fixed shapes of dynamic inputs that were used

    @property
    def prunable(self) -> list[Group]:
        """The groups that can lose channels (not frozen)."""
        return [g for g in self.groups if g.prunable]

    @property
    def model(self) -> Model:
        """The analysed model: a checked, normalised copy of the input, shared with `graph`
        (read it, do not edit it)."""
        return Model(self.graph.proto)

    def plan(self, config: PruneConfig | None = None, stats: dict | None = None,
             covariances: dict | None = None) -> Plan:
        """A plan from `config` (default PruneConfig()): the saved plan if `plan_in` is set, else
        scored by its importance criterion; `stats` are calibration statistics for activation criteria,
        `covariances` the consumers' input covariances for `obs` (`saliency.covariances`)."""
        config = config or PruneConfig()
        config.check()
        return plan_for(self, config, stats, covariances=covariances)

    def apply(self, plan: Plan) -> Model:
        """The pruned model (a new one: the analysed model is not changed), sharing constants as the input did."""
        pruned = apply_plan(self.graph, self.groups, plan)
        ir.reshare_clones(pruned)
        return Model(pruned)

    def verify(self, plan: Plan, seed: int = 0, input_shapes: dict | None = None,
               provider: str = "cpu") -> OracleResult:
        """The dead-channel oracle for the exact groups of `plan` on seeded random inputs;
        `input_shapes` sizes dynamic inputs for those (default: the shapes the analysis used)."""
        shapes = self.input_shapes if input_shapes is None else input_shapes
        return run_oracle(self.graph, self.groups, plan, shapes, seed, provider)


def analyze(model: ModelSource, input_shapes: dict | None = None, shape_hint: dict | None = None) -> Analysis:
    """Load a model (a path, an onnx.ModelProto or a Model) and find its groups and frozen spaces.

    Writes nothing and leaves a given model object unchanged (the analysis works on a checked,
    normalised copy). `input_shapes` fixes dynamic inputs (name -> dims); `shape_hint` (e.g. the
    sample shapes of calibration data) fixes those that `input_shapes` leaves open.
    """
    given = dict(input_shapes or {})
    proto = read_checked(model)
    inferred = ir.infer_shapes(proto, given)
    shapes = _effective_shapes(proto, given, shape_hint or {})
    if ir.has_static_inputs(proto):
        graph = _folded(Graph(proto, inferred))  # the shape arithmetic becomes constants of the pruned model too
    else:
        folded = fold_shape_arithmetic(Graph(proto, inferred))  # what depends on constants alone
        if folded is not None:
            proto, inferred = folded, ir.infer_shapes(folded, given)
        graph = Graph(proto, {**inferred, **static_shapes(proto, shapes)})
    return Analysis(graph, build_groups(graph), shapes)


def static_shapes(proto, input_shapes: dict) -> dict:
    """Shapes of a model with dynamic inputs for the given input shapes.

    ONNX shape inference cannot follow shape arithmetic such as Shape -> Div -> Concat;
    a copy with fixed inputs and that arithmetic folded tells the shapes, while the
    model itself keeps its dynamic inputs.
    """
    shapes = ir.infer_shapes(proto, input_shapes)
    names = {n for n, _, _ in ir.input_specs(proto)}
    if not input_shapes or not names <= set(input_shapes):
        return shapes
    fixed = ir.with_input_shapes(proto, input_shapes)
    probe = _folded(Graph(fixed, ir.infer_shapes(fixed, {})))
    shapes.update(probe.shapes)
    return shapes


def _folded(graph: Graph) -> Graph:
    """The graph with its shape arithmetic folded to constants (its inputs must be static)."""
    for _ in range(MAX_FOLD_ROUNDS):  # each fold makes more shapes static, which can fold more
        folded = fold_shape_arithmetic(graph) or fold_body_arithmetic(graph)
        if folded is None:
            break
        graph = Graph(folded, ir.infer_shapes(folded, {}))
    return graph


def _effective_shapes(proto, given: dict, hint: dict) -> dict:
    shapes = dict(given)
    for name, _, dims in ir.input_specs(proto):
        dynamic = any(not isinstance(d, int) or d <= 0 for d in dims)
        fits = name in hint and len(hint[name]) == len(dims) and all(
            not isinstance(d, int) or d <= 0 or d == h for d, h in zip(dims, hint[name]))
        if name not in shapes and dynamic and fits:  # a hint that does not fit is reported by calib.check
            shapes[name] = tuple(hint[name])
    return shapes


def _scored_groups(analysis: Analysis, config: PruneConfig) -> list[Group]:  # those the config lets go
    return [g for g in analysis.prunable if (g.exact or config.inexact) and (not g.interface or config.prune_cache)]


def group_scores(analysis: Analysis, config: PruneConfig, stats: dict | None = None,
                 covariances: dict | None = None) -> dict:
    """Unit scores (group id -> array, larger = keep) of the groups the config lets the planner prune."""
    rng = np.random.default_rng(config.seed)
    todo = _scored_groups(analysis, config)
    if config.criterion in saliency.CRITERIA and covariances is None:
        raise ValueError(f"importance '{config.criterion}' needs the consumers' input covariances "
                         "(saliency.covariances on calibration data)")
    progress = Progress(log, "scoring", len(todo), " groups")
    scores = {}
    for g in todo:
        scores[g.id] = (saliency.group_unit_scores(g, analysis.graph, covariances or {}, stats or {})
                        if config.criterion in saliency.CRITERIA
                        else unit_scores(g, _root_scores(g, analysis.graph, config, rng, stats)))
        progress.add()
    progress.finish()
    return scores


def plan_for(analysis: Analysis, config: PruneConfig, stats: dict | None = None, scores: dict | None = None,
             measured: dict | None = None, covariances: dict | None = None) -> Plan:
    """A plan from a checked config: the saved plan if `plan_in` is set, else scored by `importance`
    (`scores`: those of `group_scores`, when the caller has them already).

    Internal (the CLI's pipeline); callers use `Analysis.plan`, which checks the config first."""
    if config.plan_in:
        return Plan.load(config.plan_in)
    scores = group_scores(analysis, config, stats, covariances) if scores is None else scores
    planner = Planner(analysis.groups, scores, config.plan_options(analysis))
    metric, target = config.target
    cost: Any = latency.LatencyModel(analysis.graph, analysis.groups, scores, (config.providers or ["cpu"])[0],
                                     analysis.input_shapes, config.seed) if metric == "latency" and target \
        else CostModel(analysis.graph, analysis.groups)
    allocated = allocate(planner, cost, metric, target, measured) \
        if target is not None and measured and config.measured_allocation else None
    if allocated is not None:
        plan = allocated
    elif target is not None:
        plan = latency.meet(planner, cost, target) if metric == "latency" else plan_for_target(planner, cost, metric,
                                                                                                  target)
    else:
        plan = planner.plan()
    return plan.with_meta(importance=config.criterion, group_reduction=config.group_reduction)


def _root_scores(g: Group, graph: Graph, config: PruneConfig, rng, stats: dict | None) -> np.ndarray:
    if config.criterion in activation.CRITERIA:
        return activation.root_scores(g, graph, stats or {}, centered=config.compensation != "none")
    return root_scores(g, graph, config.criterion, rng, config.group_reduction)


# -- calibration (issue 5): statistics before planning, compensation and fidelity after --

@dataclass
class Calibration:
    data: calib.CalibData
    held_out: calib.CalibData | None
    stats: dict
    covariances: dict | None = None  # consumers' input covariances, for `--importance obs`


def calibrate(analysis: Analysis, config: PruneConfig) -> Calibration | None:
    """Load the calibration file and collect per-channel statistics at every consumer of a prunable group."""
    if not config.calib:
        return None
    data, held = calib.split(calib.load(config.calib, analysis.graph.proto, config.input_shapes),
                             config.calib_samples)
    log.info("calibration: %d samples (%d held out for fidelity)", data.count, held.count if held else 0)
    stats = calib.collect_stats(analysis.graph.proto, data, activation.stat_spaces(analysis.prunable))
    covariances = None
    if config.criterion in saliency.CRITERIA and not config.plan_in:
        covariances = saliency.covariances(analysis.graph, _scored_groups(analysis, config), data)
    return Calibration(data, held, stats, covariances)


def finish_calibration(analysis: Analysis, plan: Plan, pruned, config: PruneConfig, cal: Calibration | None) -> dict:
    """Compensate `pruned` in place and measure its fidelity on the held-out samples."""
    if cal is None:
        return {}
    graph = analysis.graph
    found = compensate.consumers(graph, analysis.groups, plan)
    missing = [s for s in compensate.stat_spaces(found) if s not in cal.stats]
    if missing and config.compensation in compensate.STAT_MODES:
        cal.stats.update(calib.collect_stats(graph.proto, cal.data, missing))
    summary = compensate.compensate(graph, found, pruned, cal.data, cal.stats, config.compensation,
                                    cal.held_out)
    result = {"samples": cal.data.count, "compensation": summary}
    if cal.held_out is not None:  # auto measured the model it kept already
        result["fidelity"] = summary.pop("fidelity", None) or calib.fidelity(graph.proto, pruned, cal.held_out)
    return result


def measure_sensitivity(analysis: Analysis, config: PruneConfig, cal: Calibration | None,
                        scores: dict | None = None) -> dict | None:
    """With config.sensitivity: per-group relative output error at a few fractions removed, on the
    held-out samples (the calibration samples when none are held out); None otherwise."""
    if not (config.sensitivity or config.measured_allocation) or cal is None:
        return None
    if not scores:
        scores = group_scores(analysis, config, cal.stats, cal.covariances)
    data = cal.held_out if cal.held_out is not None else cal.data
    # an allocation may take a group past half its units: measure that far too
    fractions = sensitivity.ALLOCATION_FRACTIONS if config.measured_allocation else sensitivity.FRACTIONS
    # curves after a least-squares refit when the compensation refits and the covariances are at hand
    refit = cal.covariances if config.compensation == "lsq" else None
    return sensitivity.measure(analysis.graph, analysis.groups, scores, data, fractions,
                               budget_s=config.sensitivity_budget, covariances=refit)


def keep_better_allocation(analysis: Analysis, config: PruneConfig, cal: Calibration, scores: dict, plan: Plan,
                           pruned, calibration: dict) -> tuple[Plan, Any, dict]:
    """The measured allocation's plan, pruned model and calibration result, or those of one ratio for all
    groups when that model is closer to the original on the held-out samples (the calibration samples when
    none are held out). Per-group curves measured one group at a time do not always add up: on a real
    EfficientNet-Lite0 the measured allocation lost to the uniform one, and the default must never do worse
    than it. Both models' measures are kept in the plan's meta (allocation.compare_allocations)."""
    uniform = plan_for(analysis, config, cal.stats, scores, None)
    uniform_pruned = apply_plan(analysis.graph, analysis.groups, uniform)
    uniform_calibration = finish_calibration(analysis, uniform, uniform_pruned, config, cal)
    data = cal.held_out if cal.held_out is not None else cal.data
    fidelities = [calibration.get("fidelity") or calib.fidelity(analysis.graph.proto, model, data)
                  for calibration, model in ((calibration, pruned), (uniform_calibration, uniform_pruned))]
    check = compare_allocations(fidelities[0], fidelities[1], data.count, cal.held_out is not None)
    log.info("allocation: measured %s, uniform %s on %d samples: keeping %s", check["measured"], check["uniform"],
             data.count, check["kept"])
    if check["kept"] == "measured":
        return plan.with_meta(allocation={**plan.meta["allocation"], "check": check}), pruned, calibration
    return uniform.with_meta(allocation={"kind": "uniform", "check": check}), uniform_pruned, uniform_calibration


def default_output(model_path: str) -> str:
    root, ext = os.path.splitext(model_path)
    return f"{root}.pruned{ext or '.onnx'}"


def prune(model: ModelSource, output_path: str | None = None, config: PruneConfig | None = None) -> PruneReport:
    """Prune `model` (a path, an onnx.ModelProto or a Model), validate, write `output_path`, return the report.

    A path's default output is MODEL.pruned.onnx; the input is never overwritten. A model object
    needs `output_path`; it is written to a temporary file first, so that it is checked and
    validated exactly as a file is, and left unchanged.
    """
    if isinstance(model, (str, os.PathLike)):
        return _prune_file(os.fspath(model), output_path, config)
    if output_path is None:
        raise BadInputError("prune() of a model object needs output_path (only a model file has a default, "
                            "MODEL.pruned.onnx)")
    with tempfile.TemporaryDirectory(prefix="onnxprune-") as tmp:
        source = os.path.join(tmp, "model.onnx")
        Model.of(model).save(source)
        try:
            report = _prune_file(source, output_path, config)
        except OnnxPruneError as exc:
            if source not in str(exc):
                raise
            raise type(exc)(str(exc).replace(f"'{source}'", IN_MEMORY).replace(source, IN_MEMORY)) from None
    report.model = IN_MEMORY
    return report


def _prune_file(model_path: str, output_path: str | None, config: PruneConfig | None) -> PruneReport:
    config = config or PruneConfig()
    config.check()
    output_path = default_output(model_path) if output_path is None else output_path
    check_paths(model_path, output_path, config)
    lap = _Laps()
    log.info("loading %s", model_path)
    analysis = analyze(model_path, config.input_shapes, calib.sample_shapes(config.calib) if config.calib else None)
    lap("analyse")
    cal = calibrate(analysis, config)
    log.info("scoring %d prunable groups and planning", len(analysis.prunable))
    scores = {} if config.plan_in else group_scores(analysis, config, cal.stats if cal else None,
                                                    cal.covariances if cal else None)
    if cal and config.sensitivity:
        lap("statistics")  # so that the sensitivity lap holds the measuring alone
    measured = measure_sensitivity(analysis, config, cal, scores)
    if measured is not None:
        lap("sensitivity")
    plan = plan_for(analysis, config, cal.stats if cal else None, scores, measured)
    lap("plan")
    log.info("removing %d channels from %d groups", sum(len(pg.pruned) for pg in plan.groups), len(plan.groups))
    pruned = apply_plan(analysis.graph, analysis.groups, plan)
    lap("apply")
    calibration = finish_calibration(analysis, plan, pruned, config, cal)
    if cal and plan.meta.get("allocation") and config.allocation == "auto":  # "measured" is taken as asked
        plan, pruned, calibration = keep_better_allocation(analysis, config, cal, scores, plan, pruned, calibration)
    if cal:
        lap("calibrate")
    ir.reshare_clones(pruned)  # after compensation, which may write into a cloned bias
    interface = interface_changes(analysis.graph, analysis.groups, plan)
    report = _report(model_path, output_path, analysis, plan, pruned, config, scores, interface)
    report.calibration = calibration
    if measured is not None:
        report.sensitivity = measured
        report.notes.append(allocation_note(plan, config.measured_allocation))
    if plan.meta.get("latency_table"):
        report.notes.append(latency.note(plan))
    if not cal:
        report.notes.append("no calibration data (--calib): only weight-based criteria apply, no compensation")
    _check_and_write(model_path, output_path, analysis, pruned, config, report, lap, interface)
    if config.plan_out:
        try:
            plan.save(config.plan_out, analysis.groups, analysis.graph.input_coordinates())
        except OutputWriteError:  # all or nothing: no model without its plan
            ir.remove_saved(output_path)
            raise
    genai = genai_config.update_beside(model_path, output_path, report.signature)
    if genai:
        report.notes.append(genai)
    if report.after is not None:  # always: _report counts the pruned model
        report.after.file_bytes = file_size(output_path)
    report.timings_s = lap.timings
    return report


class _Laps:
    """Wall time of each pipeline step, by name, in the order the steps ran."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._start = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = now - self._start
        self._start = now


def _check_and_write(model_path: str, output_path: str, analysis: Analysis, pruned, config: PruneConfig,
                     report: PruneReport, lap: _Laps, interface: dict | None = None) -> None:
    """Check the pruned model as the original is checked (whatever the flags), validate it against the
    original unless told not to, and write it; a model that fails is never left on disk."""
    # The checker and ONNX Runtime take a model over 2 GB, or one whose weights stay on disk, only as a file:
    # write it first, remove it if it fails
    saved_first = ir.saved_from_file(pruned)
    if saved_first:
        _save(pruned, output_path, lap)
    try:
        note = check_like_original(output_path if saved_first else pruned, model_path)
        if note:
            report.notes.append(note)
        if config.validate:
            feeds = random_inputs(analysis.graph.proto, analysis.input_shapes, config.seed)
            report.validation = validate_pruned(model_path, output_path if saved_first else pruned, feeds,
                                                config.providers or ["cpu", "cuda"], config.latency_repeats,
                                                interface=interface)
            report.notes.extend(report.validation.get("notes", []))
            lap("validate")
        else:
            report.validation = {"skipped": "--no-validate"}
    except CheckFailedError:
        if saved_first:
            ir.remove_saved(output_path)
        raise
    if not saved_first:
        _save(pruned, output_path, lap)


def check_paths(model_path: str, output_path: str, config: PruneConfig, names: dict[str, str] | None = None,
                **more: str | None) -> None:
    """Before any work: the outputs (`output_path`, `config.plan_out` and `more`, name -> path) can be
    written and overwrite no input. Errors name each path by `names` (field -> how the caller calls
    it: the CLI passes its flags), else by the Python names (output_path, plan_out, plan_in, calib)."""
    said = {"output_path": "output_path", **(names or {})}
    paths.check_outputs({said["output_path"]: output_path, said.get("plan_out", "plan_out"): config.plan_out,
                         **more},
                        {"the input model": model_path, f"the {said.get('plan_in', 'plan_in')} plan": config.plan_in,
                         f"the {said.get('calib', 'calib')} data": config.calib})


def _save(pruned, output_path: str, lap: _Laps) -> None:
    log.info("writing %s", output_path)
    try:
        ir.save(pruned, output_path)
    except OSError as exc:
        raise OutputWriteError(f"cannot write '{output_path}': {exc.strerror or exc}") from None
    lap("save")


def _report(model_path: str, output_path: str, analysis: Analysis, plan: Plan, pruned, config,
            scores: dict | None = None, interface: dict | None = None) -> PruneReport:
    before = model_stats(analysis.graph)
    before.file_bytes = file_size(model_path)
    interface = interface or {}
    after = model_stats(Graph(pruned, static_shapes(pruned, cache_io.slice_shapes(analysis.input_shapes, interface))))
    by_id = {g.id: g for g in analysis.groups}
    notes = []
    skipped = sum(1 for g in analysis.prunable if not g.exact) if not config.inexact else 0
    if skipped and not config.plan_in:
        notes.append(f"{skipped} inexact groups left unpruned (normalisation over the pruned axis); "
                     "--inexact prunes them too")
    cached = sum(1 for g in analysis.prunable if g.interface) if not config.prune_cache else 0
    if cached and not config.plan_in:
        notes.append(f"{cached} groups of attention heads left unpruned: they reach the KV-cache inputs and "
                     "outputs; --prune-cache prunes them (the model's signature changes)")
    target = plan.meta.get("target")
    if target and plan.meta.get("allocation", {}).get("kind") == "measured sensitivity":
        notes.append(f"target {target['metric']} {target['fraction']:g}: the plan keeps {target['kept']:.4f} "
                     "(per-group ratios from measured sensitivity)")
    elif target:
        notes.append(f"target {target['metric']} {target['fraction']:g}: the plan keeps {target['kept']:.4f} "
                     f"(planner ratio {plan.meta.get('ratio', 0):.4f})")
    ranged = sum(1 for pg in plan.groups if pg.id in by_id and by_id[pg.id].shared_range_reasons)
    if ranged:
        notes.append(f"{ranged} pruned groups feed dynamic (run-time) quantization: the kept channels alone "
                     "set its range, as they do in any run of the pruned model")
    inexact = [pg for pg in plan.groups if not pg.exact]
    if inexact:
        notes.append(f"{len(inexact)} pruned groups are inexact (normalisation over the pruned axis): "
                     "outputs change beyond the removed channels")
    return PruneReport(
        model=model_path, output=output_path, before=before, after=after,
        groups_total=len(analysis.groups), groups_pruned=len(plan.groups),
        groups_frozen=sum(g.frozen_reason is not None for g in analysis.groups),
        groups_inexact_pruned=sum(not by_id[pg.id].exact for pg in plan.groups if pg.id in by_id),
        channels_removed=sum(len(pg.pruned) for pg in plan.groups),
        frozen_reasons=frozen_reasons(analysis.groups), group_rows=group_rows(analysis.groups, plan, scores),
        notes=notes,
        signature=signature_rows(analysis.graph, interface),
        nothing_pruned=nothing_pruned_reason(analysis.graph, analysis.groups, plan,
                                             plan.meta.get("ratio", config.ratio), config.round_to, config.inexact,
                                             config.plan_in, config.prune_cache))


def verify(model: ModelSource, config: PruneConfig | None = None) -> OracleResult:
    """Run the dead-channel oracle for the plan the config gives (exact groups only)."""
    config = config or PruneConfig()
    config.check()
    analysis = analyze(model, config.input_shapes, calib.sample_shapes(config.calib) if config.calib else None)
    cal = calibrate(analysis, config) if config.criterion in activation.CRITERIA else None
    plan = plan_for(analysis, config, cal.stats if cal else None, covariances=cal.covariances if cal else None)
    return analysis.verify(plan, config.seed)


__all__ = ["Analysis", "Model", "ModelSource", "OracleResult", "Plan", "PruneConfig", "PruneReport", "analyze",
           "available_providers", "prune", "verify"]
