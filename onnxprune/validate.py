"""Run models in ONNX Runtime: random inputs, outputs, latency, comparison, checker."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import onnx

from . import ir
from .errors import BadInputError, CheckFailedError
from .rules import rule_for

log = logging.getLogger(__name__)

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def available_providers() -> list[str]:
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    return [short for short, full in PROVIDERS.items() if full in have]


def check_model(model: onnx.ModelProto | str) -> None:
    """onnx.checker with full checks (shape inference included); a model over 2 GB is checked from
    its file. Raises CheckFailedError."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # checker raises ValidationError or InferenceError
        raise CheckFailedError(f"pruned model fails onnx.checker: {exc}") from None


def random_inputs(model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]], seed: int = 0,
                  int_high: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Seeded random feeds: floats ~ N(0,1); integer inputs in [0, high) (token ids) or ones (masks)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    highs = index_ranges(model)
    highs.update(int_high or {})
    for name, elem, dims in ir.input_specs(model):
        shape = input_shapes.get(name)
        if shape is None:
            if any(not isinstance(d, int) or d <= 0 for d in dims):
                raise BadInputError(f"input '{name}' has dynamic shape {list(dims)}; "
                                    f"give it with --input-shape {name}:d0,d1,...")
            shape = tuple(dims)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[name] = np.ones(shape, dtype=bool)
        elif name in highs:
            feeds[name] = rng.integers(0, highs[name], size=shape).astype(dtype)
        else:
            feeds[name] = np.ones(shape, dtype=dtype)
    return feeds


def index_ranges(model: onnx.ModelProto) -> dict[str, int]:
    """Upper bounds of index-valued tensors (token ids into an embedding table), from the rules."""
    graph = ir.Graph(model, {})
    ranges: dict[str, int] = {}
    for node in graph.nodes:
        ranges.update(rule_for(node).index_ranges(node, graph))
    return ranges


@dataclass
class RunResult:
    outputs: list[np.ndarray]
    names: list[str]
    latency_ms: float | None


def session(model: onnx.ModelProto | str, provider: str = "cpu", optimize: bool = True, threads: int = 0):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # Original and pruned are timed in turn in one process: spinning pool threads of one session
    # would take the cores of the other.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    full = PROVIDERS[provider]
    source = model if isinstance(model, str) else _bytes_or_path(model)
    try:
        return ort.InferenceSession(source, opts, providers=[full])
    except Exception as exc:
        raise CheckFailedError(f"ONNX Runtime ({provider}) cannot load the model: {_first_line(exc)}") from None


def _bytes_or_path(model: onnx.ModelProto):
    if not ir.is_large(model):
        return model.SerializeToString()
    raise BadInputError("models over 2 GB are validated from their saved file")


def run(model: onnx.ModelProto | str, feeds: dict[str, np.ndarray], provider: str = "cpu", optimize: bool = True,
        repeats: int = 0, threads: int = 0) -> RunResult:
    """Run once (plus `repeats` timed runs for a median latency)."""
    return run_interleaved([model], feeds, provider, optimize, repeats, threads)[0]


def run_interleaved(models: list, feeds: dict[str, np.ndarray], provider: str = "cpu", optimize: bool = True,
                    repeats: int = 0, threads: int = 0) -> list[RunResult]:
    """Run each model once, then time them taking turns `repeats` times (medians), so that drift
    in the machine's load hits every model alike."""
    sessions = [session(m, provider, optimize, threads) for m in models]
    times: list[list[float]] = [[] for _ in models]
    try:
        outputs = [s.run(None, feeds) for s in sessions]  # also the warm-up
        for _ in range(repeats):
            for s, t in zip(sessions, times):
                t0 = time.perf_counter()
                s.run(None, feeds)
                t.append((time.perf_counter() - t0) * 1000)
    except Exception as exc:
        raise CheckFailedError(f"ONNX Runtime ({provider}) failed to run the model: {_first_line(exc)}") from None
    return [RunResult(out, [o.name for o in s.get_outputs()], float(np.median(t)) if t else None)
            for out, s, t in zip(outputs, sessions, times)]


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@dataclass
class Comparison:
    max_abs: float
    scale: float
    relative: float
    shapes_match: bool
    finite: bool


def compare(reference: list[np.ndarray], candidate: list[np.ndarray]) -> Comparison:
    """Max abs difference over all outputs, relative to the reference's max magnitude."""
    shapes = all(a.shape == b.shape for a, b in zip(reference, candidate)) and len(reference) == len(candidate)
    finite = all(np.all(np.isfinite(b)) for b in candidate if np.issubdtype(b.dtype, np.floating))
    if not shapes:
        return Comparison(float("inf"), 0.0, float("inf"), False, finite)
    diffs = [float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
             for a, b in zip(reference, candidate)]
    scales = [float(np.max(np.abs(a.astype(np.float64)))) if a.size else 0.0 for a in reference]
    max_abs, scale = max(diffs), max(scales)
    return Comparison(max_abs, scale, max_abs / scale if scale > 0 else max_abs, shapes, finite)


def file_size(path: str) -> int:
    size = os.path.getsize(path)
    data = path + ".data"
    return size + (os.path.getsize(data) if os.path.exists(data) else 0)


def validate_pruned(original_path: str, pruned: onnx.ModelProto | str, feeds: dict[str, np.ndarray],
                    providers: list[str], repeats: int = 10, threads: int = 0) -> dict:
    """Run original and pruned on the same feeds on each provider; raise CheckFailedError on a broken model."""
    check_model(pruned)
    have = available_providers()
    result: dict = {"providers": {}}
    for provider in providers:
        if provider not in have:
            result["providers"][provider] = {"skipped": f"ONNX Runtime has no {PROVIDERS[provider]} here "
                                                        f"(install onnxruntime-gpu for CUDA)"}
            log.info("validation on %s skipped: provider not available", provider)
            continue
        log.info("validating on %s", provider)
        try:
            before, after = run_interleaved([original_path, pruned], feeds, provider, repeats=repeats, threads=threads)
        except CheckFailedError as exc:
            raise CheckFailedError(_which_broke(original_path, feeds, provider, exc)) from None
        cmp = compare(before.outputs, after.outputs)
        if not cmp.shapes_match:
            shapes = [(n, list(a.shape), list(b.shape)) for n, a, b in zip(before.names, before.outputs, after.outputs)]
            raise CheckFailedError(f"pruned model's output shapes differ from the original on {provider}: {shapes}")
        if not cmp.finite:
            raise CheckFailedError(f"pruned model produces non-finite outputs on {provider}")
        result["providers"][provider] = {"latency_before_ms": before.latency_ms, "latency_after_ms": after.latency_ms,
                                         "relative_change": cmp.relative, "max_abs_change": cmp.max_abs}
    return result


def _which_broke(original_path: str, feeds: dict[str, np.ndarray], provider: str, exc: CheckFailedError) -> str:
    """Say whether the pruning broke the model: the original alone on the same inputs decides."""
    try:
        run(original_path, feeds, provider)
    except CheckFailedError:
        return f"the original model does not run on {provider} either: {exc}"
    return f"the pruned model is broken (the original runs on the same inputs): {exc}"


def evaluate(model: onnx.ModelProto, names: list[str], input_shapes: dict[str, tuple[int, ...]]) -> dict | None:
    """Values of intermediate tensors `names` for seeded random inputs, or None when the model cannot run."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    for name in names:
        probe.graph.output.add().name = name
    try:
        feeds = random_inputs(model, input_shapes)
        outputs = run(probe, feeds, optimize=False).outputs
    except Exception as exc:  # best effort: an unfoldable model stays as it is
        log.info("shape arithmetic not folded: the model does not run on random inputs: %s", exc)
        return None
    return dict(zip(names, outputs))
