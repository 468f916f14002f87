"""What the user reads: size, compute and speed before and after, groups, frozen reasons."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from . import paths
from .formats import bytes_text, count_text
from .group import Group
from .ir import Graph
from .planner import Plan
from .rules import packing, root_op_types, rule_for


@dataclass
class ModelStats:
    params: int
    macs: int
    file_bytes: int | None = None


def model_stats(graph: Graph) -> ModelStats:
    """Parameters (initializer elements but int64 / bool ones) and MACs of Conv / Gemm / MatMul nodes."""
    params = graph.param_count(packing=packing(graph))
    macs = sum(rule_for(n).macs(n, graph) for n in graph.nodes)
    return ModelStats(params, macs)




@dataclass
class PruneReport:
    model: str
    output: str | None
    before: ModelStats
    after: ModelStats | None
    groups_total: int
    groups_pruned: int
    groups_frozen: int
    groups_inexact_pruned: int
    channels_removed: int
    frozen_reasons: list[tuple[str, int]]
    group_rows: list[dict] = field(default_factory=list)
    validation: dict = field(default_factory=dict)
    timings_s: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    calibration: dict = field(default_factory=dict)  # samples, compensation, fidelity (see calib.fidelity)
    nothing_pruned: str | None = None  # one line saying why, when the plan removes no channel
    sensitivity: dict | None = None  # measured per-group curves (see sensitivity.measure), with --sensitivity
    # the model's inputs / outputs whose shape the plan changed (KV cache, --prune-cache): the new signature
    signature: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    def save_json(self, path: str) -> None:
        paths.write_text(path, json.dumps(self.to_json(), indent=1, default=str))


FIDELITY_SAMPLES = 100  # held-out samples under which the fidelity line says it is a rough estimate


def signature_rows(graph: Graph, interface: Mapping[str, tuple[int, list[int]]]) -> list[dict]:
    """One row per graph input / output whose shape changes: name, kind, declared dims before and after
    (symbolic dims keep their names)."""
    from .ir import Model
    model = Model(graph.proto)
    declared = {s.name: list(s.dims) for s in model.inputs + model.outputs}
    rows = []
    for name, (axis, removed) in sorted(interface.items()):
        before = declared.get(name) or list(graph.shape(name) or ())
        after = list(before)
        size = graph.dim(name, axis)
        if 0 <= axis < len(after) and size is not None:
            after[axis] = size - len(removed)
        rows.append({"tensor": name, "kind": "input" if graph.is_graph_input(name) else "output", "axis": axis,
                     "removed": list(removed), "before": before, "after": after})
    return rows


def frozen_reasons(groups: list[Group], top: int = 8) -> list[tuple[str, int]]:
    """Most common reasons, with the node name stripped so that like reasons count together."""
    counts = Counter(_generic(g.frozen_reason) for g in groups if g.frozen_reason)
    return counts.most_common(top)


def _generic(reason: str) -> str:
    head, _, tail = reason.partition(": ")
    return tail if tail and ("node '" in head) else reason


def nothing_pruned_reason(graph: Graph, groups: list[Group], plan: Plan, ratio: float, round_to: int,
                          inexact: bool, plan_in: str | None = None, prune_cache: bool = False) -> str | None:
    """One line saying why the plan removes nothing (None when it removes channels)."""
    if any(pg.pruned for pg in plan.groups):
        return None
    if not groups:
        ops = Counter(n.op_type for n in graph.nodes)
        have = ", ".join(f"{op} x{k}" if k > 1 else op for op, k in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])))
        return (f"nothing pruned: no prunable roots: the model has no {'/'.join(root_op_types())} node with a "
                f"constant weight (it has: {have or 'no nodes'})")
    prunable = [g for g in groups if g.prunable]
    if not prunable:
        top = "; ".join(f"{count}x {reason}" for reason, count in frozen_reasons(groups, 3))
        return f"nothing pruned: all {len(groups)} groups are frozen ({top})"
    if plan_in:
        return f"nothing pruned: the plan '{plan_in}' removes no channels"
    if not prune_cache and all(g.interface for g in prunable):
        return (f"nothing pruned: the {len(prunable)} prunable groups all reach the KV-cache inputs and outputs; "
                "--prune-cache prunes them (the model's signature changes)")
    eligible = [g for g in prunable if (g.exact or inexact) and (prune_cache or not g.interface)]
    if not eligible:
        return (f"nothing pruned: the {len(prunable)} prunable groups are all inexact (normalisation over the "
                "pruned axis); --inexact prunes them")
    sizes = sorted(g.size for g in eligible)
    return (f"nothing pruned: {len(eligible)} prunable groups (size {sizes[0]}"
            f"{'-' + str(sizes[-1]) if sizes[-1] != sizes[0] else ''}) keep every channel at --ratio {ratio:g} "
            f"with --round-to {round_to}")


def group_rows(groups: list[Group], plan: Plan, scores: Mapping[int, np.ndarray] | None = None) -> list[dict]:
    """One row per group (in graph order); with `scores` (group id -> unit scores, as planned),
    a scored group's row also holds `score_hist` and `score_cut` (see `score_summary`)."""
    pruned = {pg.id: pg for pg in plan.groups}
    rows = []
    for g in groups:
        pg = pruned.get(g.id)
        removed = sorted(set(g.units[list(pg.pruned)].tolist())) if pg and pg.pruned else []
        rows.append({"id": g.id, "root": g.root_label, "node": g.root_node, "size": g.size,
                     "pruned": len(pg.pruned) if pg else 0, "exact": g.exact,
                     "kind": ", ".join(g.kinds), "units": g.unit_count, "units_pruned": len(removed),
                     "frozen": g.frozen_reason, "inexact": list(g.inexact_reasons)})
        if scores is not None and g.id in scores:
            rows[-1].update(score_summary(np.asarray(scores[g.id], dtype=np.float64), removed))
    return rows


SCORE_BINS = 24


def score_summary(unit_scores: np.ndarray, removed: list[int], bins: int = SCORE_BINS) -> dict:
    """A group's unit scores as a histogram of kept and removed units over [lo, hi], and the cut:
    the highest score of a removed unit (None when none goes). Fixed size, whatever the group's;
    a group of at most `bins` units (attention heads...) also lists its scores and removed units."""
    finite = unit_scores[np.isfinite(unit_scores)]
    lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 0.0)
    gone = np.zeros(len(unit_scores), dtype=bool)
    gone[np.asarray(removed, dtype=np.int64)] = True
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    clipped = np.clip(np.nan_to_num(unit_scores, nan=lo, posinf=hi, neginf=lo), lo, hi)
    kept_counts = np.histogram(clipped[~gone], edges)[0]
    removed_counts = np.histogram(clipped[gone], edges)[0]
    cut = float(unit_scores[gone].max()) if gone.any() else None
    summary: dict[str, Any] = {"score_hist": {"lo": lo, "hi": hi, "kept": kept_counts.tolist(),
                                              "removed": removed_counts.tolist()}, "score_cut": cut}
    if len(unit_scores) <= bins:
        summary.update(unit_scores=unit_scores.tolist(), removed_units=list(removed))
    return summary


def _change(a: float | None, b: float | None) -> str:
    if not a or b is None:
        return ""
    return f"({(b - a) / a * 100:+.1f}%)"


def _unit_lines(rows: list[dict]) -> list[str]:
    """Per labelled group (attention heads, recurrent hidden units...): units removed of units."""
    lines = []
    kinds = sorted({row["kind"] for row in rows if row.get("kind") and not row.get("frozen")})
    for kind in kinds:
        chosen = [row for row in rows if row.get("kind") == kind and not row.get("frozen")]
        gone, total = sum(row["units_pruned"] for row in chosen), sum(row["units"] for row in chosen)
        lines.append(f"  {kind}: {gone} of {total} removed in {len(chosen)} groups")
        for row in chosen:
            lines.append(f"    {row['node']}: {row['units_pruned']} of {row['units']}")
    return lines


def format_text(r: PruneReport) -> str:
    lines = [f"onnxprune: {r.model} -> {r.output or '(not written)'}"]
    after = r.after or ModelStats(0, 0)
    lines.append(f"  params   {count_text(r.before.params):>10} -> {count_text(after.params):>10} "
                 f"{_change(r.before.params, after.params)}")
    lines.append(f"  MACs     {count_text(r.before.macs):>10} -> {count_text(after.macs):>10} "
                 f"{_change(r.before.macs, after.macs)}")
    lines.append(f"  file     {bytes_text(r.before.file_bytes):>10} -> {bytes_text(after.file_bytes):>10} "
                 f"{_change(r.before.file_bytes, after.file_bytes)}")
    lines.append(f"  groups   {r.groups_total} found, {r.groups_pruned} pruned "
                 f"({r.groups_inexact_pruned} inexact), {r.groups_frozen} frozen; "
                 f"{r.channels_removed} channels removed")
    for reason, count in r.frozen_reasons:
        lines.append(f"    frozen x{count}: {reason}")
    if r.nothing_pruned:
        lines.append(f"  {r.nothing_pruned}")
    lines.extend(_unit_lines(r.group_rows))
    if r.signature:
        lines.append(f"  signature changed ({len(r.signature)} KV-cache inputs / outputs, --prune-cache):")
        lines.extend(f"    {row['kind']} {row['tensor']}: {_dims(row['before'])} -> {_dims(row['after'])}"
                     for row in r.signature)
    for provider, v in r.validation.get("providers", {}).items():
        if v.get("skipped"):
            lines.append(f"  {provider:5s}    skipped: {v['skipped']}")
            continue
        lines.append(f"  {provider:5s}    latency {v['latency_before_ms']:.2f} ms -> {v['latency_after_ms']:.2f} ms "
                     f"(x{v['latency_before_ms'] / max(v['latency_after_ms'], 1e-9):.2f}); "
                     f"output change {v['relative_change']:.3g} (relative max abs)")
    if r.validation.get("skipped"):
        lines.append(f"  validation skipped: {r.validation['skipped']}")
    lines.extend(_calibration_lines(r.calibration))
    if r.sensitivity:
        lines.append(_sensitivity_line(r.sensitivity))
    for note in r.notes:
        lines.append(f"  note: {note}")
    if r.timings_s:
        lines.append("  time     " + ", ".join(f"{k} {v:.2f}s" for k, v in r.timings_s.items()))
    return "\n".join(lines)


def _dims(dims: list) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _calibration_lines(c: dict) -> list[str]:
    """Fidelity of the pruned model on held-out calibration samples, one line per output."""
    if not c:
        return []
    comp = c.get("compensation", {})
    auto = comp.get("auto")
    chosen = ""
    if auto:
        other = "bias" if comp.get("mode") == "lsq" else "lsq"
        chosen = (f" (auto: closer than {other} on {auto['samples']} held-out samples)" if "samples" in auto
                  else " (auto: no held-out samples to compare on)")
    lines = [f"  calib    {c.get('samples', 0)} samples, compensation {comp.get('mode', 'none')}{chosen}"]
    fid = c.get("fidelity") or {}
    for name, row in fid.get("outputs", {}).items():
        top1 = f", top-1 agreement {row['top1_agreement'] * 100:.1f}%" if "top1_agreement" in row else ""
        if "token_kl" in row:
            top1 += (f", per-token KL {row['token_kl']:.4f} nats, top-1 tokens unchanged "
                     f"{row['token_top1_agreement'] * 100:.1f}%")
        lines.append(f"  fidelity {name}: cosine mean {row['cosine_mean']:.4f} (min {row['cosine_min']:.4f}), "
                     f"relative error {row['relative_error']:.3g}{top1} on {fid['samples']} held-out samples")
    if fid.get("outputs") and fid.get("samples", 0) < FIDELITY_SAMPLES:
        lines.append(f"  note: fidelity rests on {fid['samples']} held-out samples, under {FIDELITY_SAMPLES}: a rough "
                     "estimate (give --calib more samples than --calib-samples to hold out more)")
    return lines


def _sensitivity_line(s: dict) -> str:
    """One line: what was measured, on how many samples, in how long, and the most sensitive group."""
    from .sensitivity import most_sensitive
    groups, fractions = s.get("groups") or {}, s.get("fractions") or []
    line = (f"  sensitivity: {len(groups)} groups x {len(fractions)} fractions measured on {s.get('samples', 0)} "
            f"samples in {s.get('seconds', 0):.1f} s")
    top = most_sensitive(s)
    if top:
        line += f"; most sensitive: {top[0]} (rel err {top[1]:.3g} at {top[2]:g})"
    if s.get("skipped"):
        line += f"; {len(s['skipped'])} groups skipped ({s['skipped'][0]['reason']})"
    return line
