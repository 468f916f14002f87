"""Shared pieces of the latency benchmarks: prune zoo models through the public API and time
them in ONNX Runtime on CPU with interleaved repeated runs (medians)."""
from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnxruntime as ort  # noqa: E402

import zoo  # noqa: E402
from onnxprune import PruneConfig, prune  # noqa: E402
from onnxprune.testing import random_inputs  # noqa: E402
import onnx  # noqa: E402


@dataclass
class Variant:
    label: str
    path: str
    macs: int
    params: int


def prepare(name: str, work: Path, configs: dict[str, PruneConfig | None]) -> list[Variant]:
    """Fill zoo model `name` and prune it once per config (None: the unpruned model)."""
    src = zoo.write_filled(name, work)
    variants = []
    for label, config in configs.items():
        if config is None:
            from onnxprune import analyze
            from onnxprune.testing import model_stats
            stats = model_stats(analyze(str(src)))
            variants.append(Variant(label, str(src), stats.macs, stats.params))
            continue
        config.validate = False
        out = work / f"{name}.{label.replace(' ', '_').replace('=', '')}.onnx"
        report = prune(str(src), str(out), config)
        variants.append(Variant(label, str(out), report.after.macs, report.after.params))
    return variants


def session(path: str, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    # Several sessions take turns on 2 cores: an idle session's spinning pool threads would steal
    # the cores of the one being timed (two identical graphs measured 5.2 vs 7.1 ms with spinning).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def measure(variants: list[Variant], threads: int = 2, rounds: int = 7, runs: int = 10) -> dict[str, float]:
    """Median latency (ms) per variant; the variants take turns, `runs` runs each, `rounds` times."""
    feeds = random_inputs(onnx.load(variants[0].path, load_external_data=False), {})
    sessions = {v.label: session(v.path, threads) for v in variants}
    for s in sessions.values():  # warm-up
        for _ in range(3):
            s.run(None, feeds)
    times: dict[str, list[float]] = {v.label: [] for v in variants}
    for r in range(rounds):
        order = variants if r % 2 == 0 else variants[::-1]
        for v in order:
            for _ in range(runs):
                t0 = time.perf_counter()
                sessions[v.label].run(None, feeds)
                times[v.label].append((time.perf_counter() - t0) * 1000)
    return {label: statistics.median(t) for label, t in times.items()}


def kernel_ms(variants: list[Variant], threads: int = 2, rounds: int = 5, runs: int = 6) -> dict[str, float]:
    """Per variant, the sum over nodes of each node's median kernel time (ORT profiler), in ms; the
    variants take turns as in `measure`. Time spent outside the kernels on a loaded machine
    (descheduled pool threads, waits between nodes) is left out."""
    feeds = random_inputs(onnx.load(variants[0].path, load_external_data=False), {})
    folder = tempfile.mkdtemp(prefix="onnxprune-prof-")
    sessions = {}
    for i, v in enumerate(variants):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(folder, f"v{i}")
        sessions[v.label] = ort.InferenceSession(v.path, opts, providers=["CPUExecutionProvider"])
    for r in range(rounds):
        for v in (variants if r % 2 == 0 else variants[::-1]):
            for _ in range(runs):
                sessions[v.label].run(None, feeds)
    return {label: _summed_medians(sess.end_profiling()) for label, sess in sessions.items()}


def _summed_medians(profile: str) -> float:
    with open(profile) as f:
        events = json.load(f)
    os.remove(profile)
    per_node: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[e["name"]].append(e["dur"])
    return sum(statistics.median(d) for d in per_node.values()) / 1000


def table(name: str, variants: list[Variant], latency: dict[str, float],
          kernels: dict[str, float] | None = None) -> str:
    base = variants[0]
    kernels = kernels or {}
    lines = [f"{name}  (ORT {ort.__version__}, CPU, median ms)",
             f"  {'variant':24s} {'ms':>8s} {'speedup':>8s} {'MACs':>10s} {'MACs x':>7s} {'params':>8s}"
             + (f" {'kernel ms':>9s} {'kernel x':>8s}" if kernels else "")]
    for v in variants:
        line = (f"  {v.label:24s} {latency[v.label]:8.2f} {latency[base.label] / latency[v.label]:7.2f}x "
                f"{v.macs / 1e6:9.1f}M {base.macs / max(v.macs, 1):6.2f}x {v.params / 1e6:7.2f}M")
        if v.label in kernels:
            line += f" {kernels[v.label]:9.2f} {kernels[base.label] / kernels[v.label]:7.2f}x"
        lines.append(line)
    return "\n".join(lines)
