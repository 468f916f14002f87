"""Validation of a pruned model: checker, random inputs, output comparison with the original, latency.

Sessions and runs live in runtime.py; `run`, `run_interleaved`, `session`, `RunResult` and
`available_providers` are re-exported here for the callers that import them from this module.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np

from . import cache_io, ir
from .errors import BadInputError, CheckFailedError
from .ir import ModelProto
from .options import PROVIDERS  # light constants, shared with the CLI
from .rules import rule_for
from .runtime import RunResult, available_providers, run, run_interleaved, session

__all__ = ["PROVIDERS", "Comparison", "RunResult", "available_providers", "check_like_original", "check_model",
           "compare", "evaluate", "file_size", "index_ranges", "random_inputs", "run", "run_interleaved", "session",
           "validate_pruned"]

log = logging.getLogger(__name__)

# What makes a model "not evaluable" rather than a bug: ONNX Runtime cannot load or run it
# (CheckFailedError, from runtime.py), or no random input can be made for it (BadInputError).
NOT_EVALUABLE = (CheckFailedError, BadInputError)


def check_model(model: ModelProto | str) -> None:
    """onnx.checker with full checks (shape inference included); a model over 2 GB is checked from
    its file. Raises CheckFailedError."""
    try:
        ir.integrity.run_checker(model, full_check=True)
    except Exception as exc:  # checker raises ValidationError or InferenceError
        raise CheckFailedError(f"pruned model fails onnx.checker: {exc}") from None


def check_like_original(pruned: ModelProto | str, original_path: str) -> str | None:
    """`check_model` on the pruned model. An original that fails the checker itself (ONNX Runtime
    writes its SimplifiedLayerNormalization in the default domain) is run by ONNX Runtime all the
    same: the pruned model may then fail with the original's own first error, and no other.
    Returns a note when that tolerance was used."""
    try:
        check_model(pruned)
        return None
    except CheckFailedError as exc:
        try:
            check_model(original_path)
        except CheckFailedError as original:
            if _checker_error(original) == _checker_error(exc):
                log.warning("%s; the original fails the same way, so ONNX Runtime alone checks it", exc)
                return "the input model fails onnx.checker itself; the output fails it the same way and no other"
        raise


def _checker_error(exc: Exception) -> str:
    """The checker's message without the names the load gives unnamed nodes."""
    return re.sub(r",? node name: [^)]*", "", str(exc).split(":", 1)[-1]).strip()


def random_inputs(model: ModelProto, input_shapes: dict[str, tuple[int, ...]], seed: int = 0,
                  int_high: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Seeded random feeds: floats ~ N(0,1); integer inputs in [0, high) (token ids) or ones (masks)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    highs = index_ranges(model)
    highs.update(int_high or {})
    for name, elem, dims in ir.input_specs(model):
        if not ir.is_tensor_type(elem):
            raise BadInputError(f"input '{name}' is a sequence, map or optional, not a tensor: validation feeds "
                                "random tensors only; run with --no-validate")
        shape = input_shapes.get(name)
        if shape is None:
            if any(not isinstance(d, int) or d <= 0 for d in dims):
                raise BadInputError(f"input '{name}' has dynamic shape {list(dims)}; "
                                    f"give it with --input-shape {name}:d0,d1,...")
            shape = tuple(dims)
        _check_input_size(name, shape, input_shapes.get(name) is not None)
        dtype = _input_dtype(name, elem)
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[name] = np.ones(shape, dtype=bool)
        elif dtype.kind == "O":  # strings
            feeds[name] = np.full(shape, "a", dtype=object)
        elif name in highs:
            feeds[name] = rng.integers(0, highs[name], size=shape).astype(dtype)
        else:
            feeds[name] = np.ones(shape, dtype=dtype)
    return feeds


def _check_input_size(name: str, shape: tuple, given: bool) -> None:
    count = 1
    for d in shape:
        count *= int(d)  # Python ints: declared dims of 2**40 do not wrap
    if count > ir.limits.MAX_INPUT_ELEMENTS:
        how = "--input-shape" if given else f"the model (fix it with --input-shape {name}:d0,d1,...)"
        raise BadInputError(f"input '{name}' of shape {list(shape)} from {how} has {count} elements; random "
                            f"validation inputs are limited to {ir.limits.MAX_INPUT_ELEMENTS} elements")


def _input_dtype(name: str, elem: int) -> np.dtype:
    try:
        dtype = ir.np_dtype(elem)
    except (KeyError, TypeError, ValueError):
        raise BadInputError(f"input '{name}' has element type {elem}, for which no random input can be made") from None
    if dtype.kind == "O":
        raise BadInputError(f"input '{name}' is a string tensor; random validation inputs cannot be made for it "
                            "(use --no-validate)")
    return dtype


def index_ranges(model: ModelProto) -> dict[str, int]:
    """Upper bounds of index-valued tensors (token ids into an embedding table), from the rules."""
    graph = ir.Graph(model, {})
    ranges: dict[str, int] = {}
    for node in graph.nodes:
        ranges.update(rule_for(node).index_ranges(node, graph))
    return ranges


@dataclass
class Comparison:
    """Original (reference) against pruned (candidate) outputs.

    `max_abs`, `scale` and `relative` are taken over the positions where both are finite.
    `finite`: the candidate is finite at every position where the reference is.
    Per output: `reference_nonfinite` counts the reference's non-finite values (the random
    inputs lie outside that output's domain, e.g. a Log of negatives), `new_nonfinite` the
    candidate's non-finite values at positions where the reference is finite.
    """

    max_abs: float
    scale: float
    relative: float
    shapes_match: bool
    finite: bool
    reference_nonfinite: tuple[int, ...] = ()
    new_nonfinite: tuple[int, ...] = ()
    sizes: tuple[int, ...] = ()


def _finite_mask(a: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.complexfloating):
        return np.isfinite(a)
    return np.ones(a.shape, dtype=bool)


def compare(reference: list[np.ndarray], candidate: list[np.ndarray]) -> Comparison:
    """Max abs difference over all outputs, relative to the reference's max magnitude, both over
    the positions where reference and candidate are finite (a NaN would make every number NaN).

    Sequence, map and optional outputs count as the tensors they hold; strings are equal or not."""
    reference, candidate = _tensors(reference), _tensors(candidate)
    shapes = all(a.shape == b.shape for a, b in zip(reference, candidate)) and len(reference) == len(candidate)
    if not shapes:
        finite = all(bool(np.all(_finite_mask(b))) for b in candidate)
        return Comparison(float("inf"), 0.0, float("inf"), False, finite)
    numeric = [a.dtype.kind in "biufc" and b.dtype.kind in "biufc" for a, b in zip(reference, candidate)]
    if any(not ok and not np.array_equal(a, b) for ok, a, b in zip(numeric, reference, candidate)):
        return Comparison(float("inf"), 0.0, float("inf"), True, True)
    diffs, scales, ref_bad, new_bad = [], [], [], []
    for ok, a, b in zip(numeric, reference, candidate):
        if not ok:
            continue
        ok_a, ok_b = _finite_mask(a), _finite_mask(b)
        ref_bad.append(int(a.size - np.count_nonzero(ok_a)))
        new_bad.append(int(np.count_nonzero(ok_a & ~ok_b)))
        both = ok_a & ok_b
        a64, b64 = a[both].astype(np.float64), b[both].astype(np.float64)
        diffs.append(float(np.max(np.abs(a64 - b64))) if a64.size else 0.0)
        scales.append(float(np.max(np.abs(a64))) if a64.size else 0.0)
    max_abs, scale = max(diffs, default=0.0), max(scales, default=0.0)
    return Comparison(max_abs, scale, max_abs / scale if scale > 0 else max_abs, shapes, not any(new_bad),
                      tuple(ref_bad), tuple(new_bad), tuple(int(a.size) for ok, a in zip(numeric, reference) if ok))


def _shape(value) -> list | str:
    return list(value.shape) if isinstance(value, np.ndarray) else type(value).__name__


def _tensors(values) -> list[np.ndarray]:
    """The arrays in a list of run outputs, sequences and maps flattened, empty optionals dropped."""
    out: list[np.ndarray] = []
    for v in values:
        if v is None:
            continue
        if isinstance(v, dict):
            out.extend(_tensors([np.asarray(list(v.keys())), np.asarray(list(v.values()))]))
        elif isinstance(v, (list, tuple)):
            out.append(np.asarray(len(v)))  # a length change shows as a difference
            out.extend(_tensors(v))
        else:
            out.append(np.asarray(v))
    return out


def file_size(path: str) -> int:
    """Bytes of the model file and the external data files it names."""
    return ir.saved_size(path)


def validate_pruned(original_path: str, pruned: ModelProto | str, feeds: dict[str, np.ndarray],
                    providers: list[str], repeats: int = 10, threads: int = 0,
                    interface: cache_io.InterfaceChanges | None = None) -> dict:
    """Run original and pruned on the same feeds on each provider; raise CheckFailedError on a broken model.

    An output that the original itself makes non-finite on these feeds is not held against the
    pruned model: it is listed in `result["notes"]` instead. The caller has already run
    `check_model` on `pruned`. `interface`: KV-cache inputs / outputs the plan changed (cache_io):
    the pruned model gets them at the kept heads and is compared there."""
    interface = interface or {}
    have = available_providers()
    result: dict = {"providers": {}}
    notes: dict[str, str] = {}  # output name -> note
    for provider in providers:
        if provider not in have:
            result["providers"][provider] = {"skipped": f"ONNX Runtime has no {PROVIDERS[provider]} here "
                                                        f"(install onnxruntime-gpu for CUDA)"}
            log.info("validation on %s skipped: provider not available", provider)
            continue
        log.info("validating on %s", provider)
        try:
            before, after = run_interleaved([original_path, pruned], [feeds, cache_io.slice_feeds(feeds, interface)],
                                            provider, repeats=repeats, threads=threads)
            before.outputs = cache_io.slice_outputs(before.names, before.outputs, interface)
        except CheckFailedError as exc:
            _check_original_runs(original_path, feeds, provider)
            raise CheckFailedError(f"the pruned model is broken (the original runs on the same inputs): {exc}"
                                   ) from None
        cmp = compare(before.outputs, after.outputs)
        if not cmp.shapes_match:
            shapes = [(n, _shape(a), _shape(b)) for n, a, b in zip(before.names, before.outputs, after.outputs)]
            raise CheckFailedError(f"pruned model's output shapes differ from the original on {provider}: {shapes}")
        _check_finite(cmp, before.names, provider, notes)
        result["providers"][provider] = {"latency_before_ms": before.latency_ms, "latency_after_ms": after.latency_ms,
                                         "relative_change": cmp.relative, "max_abs_change": cmp.max_abs}
    if notes:
        result["notes"] = list(notes.values())
    return result


def _check_finite(cmp: Comparison, names: list[str], provider: str, notes: dict[str, str]) -> None:
    """Non-finite pruned outputs are an error only in outputs the original computes finite on the
    same inputs; an output the original already makes non-finite gets a note in `notes` instead
    (and its non-finite positions are left out of the output change)."""
    broken = []
    for name, ref_bad, new_bad, size in zip(names, cmp.reference_nonfinite, cmp.new_nonfinite, cmp.sizes):
        if ref_bad:
            if name not in notes:  # one note per output, whichever provider saw it first
                notes[name] = (f"original produces non-finite outputs on random inputs: output '{name}' ({ref_bad} "
                               f"of {size} values); the pruned model is not blamed for its non-finite values there "
                               f"({new_bad} at other positions), and the output change leaves them out")
                log.warning("%s", notes[name])
        elif new_bad:
            broken.append(f"'{name}' ({new_bad} of {size} values)")
    if broken:
        raise CheckFailedError(f"pruned model produces non-finite outputs on {provider} where the original's are "
                               f"finite: output {', '.join(broken)}")


def _check_original_runs(original_path: str, feeds: dict[str, np.ndarray], provider: str) -> None:
    """Raise BadInputError when the input model itself cannot be loaded or run: the fault is not the pruning."""
    try:
        run(original_path, feeds, provider)
    except CheckFailedError as exc:
        raise BadInputError(f"the input model cannot be validated: {exc} (the original model, before pruning; "
                            "--no-validate skips validation)") from None


def evaluate(model: ModelProto, names: list[str], input_shapes: dict[str, tuple[int, ...]],
             nodes: list[str] | None = None) -> dict | None:
    """Values of intermediate tensors `names` for seeded random inputs, or None when the model cannot be
    evaluated: no random input can be made for it, or ONNX Runtime cannot load or run it. Any other
    exception is a bug and propagates. `nodes` (the names of the nodes computing `names`) go into the log."""
    # A model whose weights stay on disk (a 7B decoder) runs only the nodes `names` need: none of its
    # weights for shape arithmetic. Others run whole, as a check that random inputs suit the model at all
    # (an If of an AffineGrid that fails on them must not fold its conditions).
    probe = ir.needed_for(model, names) if ir.has_external(model) else ir.with_outputs(model, names)
    try:
        feeds = random_inputs(model, input_shapes)
        outputs = run(probe, feeds, optimize=False).outputs
    except NOT_EVALUABLE as exc:  # an unfoldable model stays as it is
        where = _listed("nodes", nodes) if nodes else _listed("tensors", names)
        log.info("shape arithmetic not folded (%s): the model does not run on random inputs: %s", where, exc)
        return None
    return dict(zip(names, outputs))


def evaluate_constants(model: ModelProto, names: list[str]) -> dict | None:
    """Values of tensors `names` that depend on constants only (no graph input), or None when ONNX
    Runtime cannot load or run the nodes computing them."""
    try:
        outputs = run(ir.needed_for(model, names, inputs=False), {}, optimize=False).outputs
    except NOT_EVALUABLE as exc:
        log.info("constant arithmetic not folded (%s): %s", _listed("tensors", names), exc)
        return None
    return dict(zip(names, outputs))


def _listed(what: str, names: list[str], most: int = 5) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:most])
    return f"{what} {shown}{' ...' if len(names) > most else ''}"
