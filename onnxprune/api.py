"""The public pipeline: load -> analyse -> score -> plan -> apply -> validate -> save -> report."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np

from . import ir
from .apply import apply_plan
from .depgraph import build_groups
from .errors import BadInputError
from .group import Group
from .importance import CRITERIA, REDUCTIONS, root_scores, unit_scores
from .ir import Graph
from .oracle import OracleResult, run_oracle
from .planner import Plan, Planner, PlanOptions
from .selection import group_ratios, ignored_groups
from .targets import CostModel, plan_for_target
from .report import PruneReport, frozen_reasons, group_rows, model_stats
from .validate import PROVIDERS, available_providers, file_size, random_inputs, validate_pruned

log = logging.getLogger(__name__)


@dataclass
class PruneConfig:
    """Everything a pruning run can be told. Defaults are what `onnxprune MODEL` does."""

    ratio: float = 0.3
    importance: str = "l1"
    group_reduction: str = "sum"
    global_ranking: bool = False
    max_ratio: float = 0.9
    round_to: int = 8  # see tools/bench_round_to.py: channel counts off multiples of 8 drop ORT's NCHWc kernels
    target_params: float | None = None
    target_macs: float | None = None
    ignore: list[str] = field(default_factory=list)
    ratio_for: list[tuple[str, float]] = field(default_factory=list)
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    plan_in: str | None = None
    plan_out: str | None = None
    validate: bool = True
    providers: list[str] | None = None  # None: cpu, plus cuda when available
    seed: int = 0
    latency_repeats: int = 10

    def check(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise BadInputError(f"--ratio must be in [0, 1), got {self.ratio}")
        if self.importance not in CRITERIA:
            raise BadInputError(f"--importance must be one of {', '.join(CRITERIA)}, got '{self.importance}'")
        for p in self.providers or []:
            if p not in PROVIDERS:
                raise BadInputError(f"--providers accepts {', '.join(PROVIDERS)}, got '{p}'")
        self._check_planner()

    def _check_planner(self) -> None:
        if self.group_reduction not in REDUCTIONS:
            raise BadInputError(f"--group-reduction must be one of {', '.join(REDUCTIONS)}, "
                                f"got '{self.group_reduction}'")
        if not 0.0 < self.max_ratio < 1.0:
            raise BadInputError(f"--max-ratio must be in (0, 1), got {self.max_ratio}")
        if self.round_to < 1:
            raise BadInputError(f"--round-to must be a positive integer, got {self.round_to}")
        for name, value in (("--target-params", self.target_params), ("--target-macs", self.target_macs)):
            if value is not None and not 0.0 < value <= 1.0:
                raise BadInputError(f"{name} must be in (0, 1], got {value}")
        if self.target_params is not None and self.target_macs is not None:
            raise BadInputError("--target-params and --target-macs are exclusive; give one")
        for pattern, ratio in self.ratio_for:
            if not 0.0 <= ratio < 1.0:
                raise BadInputError(f"--ratio-for {pattern}={ratio}: the ratio must be in [0, 1)")
        if self.plan_in and self.planner_flags():
            raise BadInputError(f"--plan-in applies the saved plan exactly; drop {', '.join(self.planner_flags())}")

    def planner_flags(self) -> list[str]:
        """Planner options set away from their defaults (they cannot apply to a saved plan)."""
        default = PruneConfig()
        names = {"global_ranking": "--global", "max_ratio": "--max-ratio", "round_to": "--round-to",
                 "target_params": "--target-params", "target_macs": "--target-macs", "ignore": "--ignore",
                 "ratio_for": "--ratio-for", "group_reduction": "--group-reduction"}
        return [flag for attr, flag in names.items() if getattr(self, attr) != getattr(default, attr)]

    def plan_options(self, analysis: "Analysis") -> PlanOptions:
        """Planner options with the user's patterns resolved to the analysed groups."""
        return PlanOptions(ratio=self.ratio, global_ranking=self.global_ranking, max_ratio=self.max_ratio,
                           round_to=self.round_to,
                           ratio_for=group_ratios(analysis.groups, analysis.graph, self.ratio_for),
                           ignored=ignored_groups(analysis.groups, analysis.graph, self.ignore))


@dataclass
class Analysis:
    graph: Graph
    groups: list[Group]

    @property
    def prunable(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]


def analyze(model_path: str, input_shapes: dict | None = None) -> Analysis:
    """Load a model and find its groups and frozen spaces; writes nothing."""
    graph = ir.load(model_path, input_shapes or {})
    return Analysis(graph, build_groups(graph))


def plan_for(analysis: Analysis, config: PruneConfig) -> Plan:
    """A plan from the config: the saved plan if `plan_in` is set, else scored by `importance`."""
    if config.plan_in:
        return Plan.load(config.plan_in)
    rng = np.random.default_rng(config.seed)
    scores = {g.id: unit_scores(g, root_scores(g, analysis.graph, config.importance, rng, config.group_reduction))
              for g in analysis.prunable}
    planner = Planner(analysis.groups, scores, config.plan_options(analysis))
    if config.target_params is not None or config.target_macs is not None:
        metric = "params" if config.target_params is not None else "macs"
        target = config.target_params if config.target_params is not None else config.target_macs
        plan = plan_for_target(planner, CostModel(analysis.graph, analysis.groups), metric, target)
    else:
        plan = planner.plan()
    plan.meta.update(importance=config.importance, group_reduction=config.group_reduction)
    return plan


def default_output(model_path: str) -> str:
    root, ext = os.path.splitext(model_path)
    return f"{root}.pruned{ext or '.onnx'}"


def prune(model_path: str, output_path: str | None = None, config: PruneConfig | None = None) -> PruneReport:
    """Prune `model_path`, validate, write `output_path` (default MODEL.pruned.onnx), return the report."""
    config = config or PruneConfig()
    config.check()
    output_path = output_path or default_output(model_path)
    if os.path.abspath(output_path) == os.path.abspath(model_path):
        raise BadInputError(f"output '{output_path}' is the input model; choose another path with -o")
    timings: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timings[name] = now - t
        t = now

    log.info("loading %s", model_path)
    analysis = analyze(model_path, config.input_shapes)
    lap("analyse")
    plan = plan_for(analysis, config)
    lap("plan")
    pruned = apply_plan(analysis.graph, analysis.groups, plan)
    lap("apply")
    report = _report(model_path, output_path, analysis, plan, pruned, config)
    if config.validate:
        feeds = random_inputs(analysis.graph.proto, config.input_shapes, config.seed)
        providers = config.providers or ["cpu", "cuda"]
        report.validation = validate_pruned(model_path, pruned, feeds, providers, config.latency_repeats)
        lap("validate")
    else:
        report.validation = {"skipped": "--no-validate"}
    if config.plan_out:
        plan.save(config.plan_out, analysis.groups)
    ir.save(pruned, output_path)
    lap("save")
    report.after.file_bytes = file_size(output_path)
    report.timings_s = timings
    return report


def _report(model_path: str, output_path: str, analysis: Analysis, plan: Plan, pruned, config) -> PruneReport:
    before = model_stats(analysis.graph)
    before.file_bytes = file_size(model_path)
    after = model_stats(Graph(pruned, ir.infer_shapes(pruned, config.input_shapes)))
    by_id = {g.id: g for g in analysis.groups}
    notes = []
    target = plan.meta.get("target")
    if target:
        notes.append(f"target {target['metric']} {target['fraction']:g}: the plan keeps {target['kept']:.4f} "
                     f"(planner ratio {plan.meta.get('ratio', 0):.4f})")
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
        frozen_reasons=frozen_reasons(analysis.groups), group_rows=group_rows(analysis.groups, plan), notes=notes)


def verify(model_path: str, config: PruneConfig | None = None) -> OracleResult:
    """Run the dead-channel oracle for the plan the config gives (exact groups only)."""
    config = config or PruneConfig()
    config.check()
    analysis = analyze(model_path, config.input_shapes)
    plan = plan_for(analysis, config)
    return run_oracle(analysis.graph, analysis.groups, plan, config.input_shapes, config.seed)


__all__ = ["Analysis", "PruneConfig", "PruneReport", "analyze", "available_providers", "prune", "verify"]
