"""ONNX Runtime sessions: providers, session creation, runs and latency timing.

onnxruntime is imported inside the functions that need it, so that parsing the
command line (`onnxprune --help`) never loads it. Every failure of ONNX Runtime
to load or run a model becomes CheckFailedError; nothing else is caught here.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import ir
from .errors import BadInputError, CheckFailedError
from .ir import ModelProto
from .options import PROVIDERS  # light constants, shared with the CLI

ModelOrPath = ModelProto | str  # a model in memory, or the path of its file


def available_providers() -> list[str]:
    """The short names (options.PROVIDERS) of the execution providers this ONNX Runtime has."""
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    return [short for short, full in PROVIDERS.items() if full in have]


@dataclass
class RunResult:
    outputs: list[np.ndarray]
    names: list[str]
    latency_ms: float | None


def session(model: ModelOrPath, provider: str = "cpu", optimize: bool = True, threads: int = 0) -> Any:
    """An `onnxruntime.InferenceSession` of `model` on one provider; CheckFailedError when ONNX Runtime
    cannot load it, BadInputError for a model over 2 GB held in memory (it loads from its file only)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # errors come back as exceptions; ONNX Runtime need not print them too
    # Original and pruned are timed in turn in one process: spinning pool threads of one session
    # would take the cores of the other.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    full = PROVIDERS[provider]
    arrays: dict[str, np.ndarray] = {}
    if isinstance(model, str):
        source = _path_source(model)
    else:
        source, arrays = _from_memory(model)
    values = [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays.values()]
    if values:  # external weights, mapped from their files: ONNX Runtime uses them in place
        opts.add_external_initializers(list(arrays), values)
    try:
        created = ort.InferenceSession(source, opts, providers=[full])
        created._onnxprune_arrays = (arrays, values)  # ORT does not own them: they live as long as the session
        return created
    except Exception as exc:  # ONNX Runtime's own exception types differ across versions and builds
        raise CheckFailedError(f"ONNX Runtime ({provider}) cannot load the model: {first_line(exc)}") from None


def _path_source(path: str) -> str | bytes:
    """ONNX Runtime opens UTF-8 paths only: a file name that is not UTF-8 is handed over as its bytes."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        with open(path, "rb") as f:
            return f.read()


def _from_memory(model: ModelProto) -> tuple[bytes, dict[str, np.ndarray]]:
    source, arrays = ir.session_parts(model)
    if len(source) > ir.limits.EXTERNAL_DATA_THRESHOLD:
        raise BadInputError("models over 2 GB are validated from their saved file")
    return source, arrays


def run(model: ModelOrPath, feeds: dict[str, np.ndarray], provider: str = "cpu", optimize: bool = True,
        repeats: int = 0, threads: int = 0) -> RunResult:
    """Run once (plus `repeats` timed runs for a median latency)."""
    return run_interleaved([model], feeds, provider, optimize, repeats, threads)[0]


Feeds = dict[str, np.ndarray]


def run_interleaved(models: list[ModelOrPath], feeds: Feeds | list[Feeds], provider: str = "cpu",
                    optimize: bool = True, repeats: int = 0, threads: int = 0) -> list[RunResult]:
    """Run each model once, then time them taking turns `repeats` times (medians), so that drift
    in the machine's load hits every model alike. `feeds`: one for all, or one per model."""
    sessions = [session(m, provider, optimize, threads) for m in models]
    per_model = feeds if isinstance(feeds, list) else [feeds] * len(models)
    times: list[list[float]] = [[] for _ in models]
    try:
        outputs = [s.run(None, f) for s, f in zip(sessions, per_model)]  # also the warm-up
        for _ in range(repeats):
            for s, t, f in zip(sessions, times, per_model):
                t.append(_timed_ms(s, f))
    except Exception as exc:  # only ONNX Runtime runs inside: its failure to run the model
        raise CheckFailedError(f"ONNX Runtime ({provider}) failed to run the model: {first_line(exc)}") from None
    return [RunResult(out, [o.name for o in s.get_outputs()], float(np.median(t)) if t else None)
            for out, s, t in zip(outputs, sessions, times)]


def _timed_ms(sess: Any, feeds: dict[str, np.ndarray]) -> float:
    """Milliseconds of one run of `sess` on `feeds`."""
    t0 = time.perf_counter()
    sess.run(None, feeds)
    return (time.perf_counter() - t0) * 1000


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (ONNX Runtime's run on for pages), or its type's name."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
