"""Shared pieces of the latency benchmarks: prune zoo models through the public API and time
them in ONNX Runtime on CPU with interleaved repeated runs (medians)."""
from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

import zoo  # noqa: E402
from onnxprune import PruneConfig, prune  # noqa: E402
from onnxprune.validate import random_inputs  # noqa: E402
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
            from onnxprune.api import analyze
            from onnxprune.report import model_stats
            stats = model_stats(analyze(str(src)).graph)
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


def table(name: str, variants: list[Variant], latency: dict[str, float]) -> str:
    base = variants[0]
    lines = [f"{name}  (ORT {ort.__version__}, CPU, median ms)",
             f"  {'variant':24s} {'ms':>8s} {'speedup':>8s} {'MACs':>10s} {'MACs x':>7s} {'params':>10s}"]
    for v in variants:
        lines.append(f"  {v.label:24s} {latency[v.label]:8.2f} {latency[base.label] / latency[v.label]:7.2f}x "
                     f"{v.macs / 1e6:9.1f}M {base.macs / max(v.macs, 1):6.2f}x {v.params / 1e6:9.2f}M")
    return "\n".join(lines)
