"""Calibration data: load and check a .npz of model inputs, run it through ONNX Runtime in batches.

The file holds one array per model input, keyed by the input's name, with
samples along the first axis. Intermediate tensors are read by exposing them
as extra outputs of a temporary copy of the model; every consumer of the
values receives one batch at a time, so memory stays bounded by the batch.
"""
from __future__ import annotations

import logging
import os
import time
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from . import ir
from .errors import BadInputError, CheckFailedError
from .ir import ModelProto, limits
from .runtime import first_line, session

log = logging.getLogger(__name__)

DEFAULT_BATCH = 16
HELD_OUT_FRACTION = 0.2


@dataclass
class CalibData:
    """Model feeds with samples along axis 0, and the batch size the model accepts."""

    arrays: dict[str, np.ndarray]
    batch: int
    fixed: bool = False  # the model fixes the batch size: a last partial batch is dropped

    @property
    def count(self) -> int:
        return len(next(iter(self.arrays.values())))

    def take(self, start: int, stop: int) -> "CalibData":
        return CalibData({k: v[start:stop] for k, v in self.arrays.items()}, self.batch, self.fixed)

    def batches(self) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, self.count - self.batch + 1 if self.fixed else self.count, self.batch):
            yield {k: v[start:start + self.batch] for k, v in self.arrays.items()}


def load(path: str, proto: ModelProto, input_shapes: dict | None = None) -> CalibData:
    """Read and check a calibration .npz against the model's inputs; raise BadInputError when it does not fit."""
    return check(_read_npz(path), proto, input_shapes or {}, path)


def _read_npz(path: str) -> dict[str, np.ndarray]:
    """The arrays of a .npz, each header checked against its stored size before it is read."""
    headers = read_headers(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in headers}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise BadInputError(f"cannot read calibration file '{path}' as .npz: {exc}") from None
    # a big-endian file is still float32 data: native byte order for ONNX Runtime
    return {k: a.astype(a.dtype.newbyteorder("=")) if not a.dtype.isnative else a for k, a in arrays.items()}


def read_headers(path: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """(shape, dtype) of every array of a .npz, read from the headers alone; raises BadInputError for a file
    that is not an .npz of plain arrays, or whose headers declare more data than the file holds."""
    if os.path.isdir(path):
        raise BadInputError(f"calibration path '{path}' is a directory, not an .npz file")
    if not os.path.exists(path):
        raise BadInputError(f"calibration file '{path}' does not exist")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic == b"\x93NUMPY":
            raise BadInputError(f"calibration file '{path}' is a single .npy array; save the inputs keyed by the "
                                "model's input names with np.savez(FILE.npz, NAME=array, ...)")
        with zipfile.ZipFile(path) as z:
            return dict(_member_header(path, z, info) for info in z.infolist())
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        why = str(exc) or type(exc).__name__
        raise BadInputError(f"cannot read calibration file '{path}' as .npz: {why}") from None


def _member_header(path: str, z: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[str, tuple]:
    name = info.filename
    if not name.endswith(".npy"):
        raise BadInputError(f"calibration file '{path}' holds '{name}', which is not an .npy array")
    with z.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
        except ValueError as exc:
            raise BadInputError(f"calibration file '{path}': array '{name[:-4]}' has a bad header: {exc}") from None
        offset = f.tell()
    if dtype.hasobject:
        raise BadInputError(f"calibration file '{path}': array '{name[:-4]}' holds Python objects; "
                            "only numeric arrays are read")
    count = 1
    for d in shape:
        count *= int(d)
    need = count * dtype.itemsize
    if count > limits.MAX_TENSOR_ELEMENTS or need > info.file_size - offset:
        raise BadInputError(f"calibration file '{path}': array '{name[:-4]}' declares shape {list(shape)} "
                            f"({need} bytes), but the file holds {max(info.file_size - offset, 0)} bytes for it")
    return name[:-4], (tuple(int(d) for d in shape), dtype)


def sample_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """One sample's shape per input (batch 1), to fix dynamic inputs for the analysis (headers only)."""
    return {k: (1, *shape[1:]) for k, (shape, _) in read_headers(path).items() if shape}


def check(arrays: dict[str, np.ndarray], proto: ModelProto, input_shapes: dict, origin: str = "calibration data"
          ) -> CalibData:
    """Names, dtypes, ranks and static dims must match the model's inputs; the sample counts must agree."""
    specs = ir.input_specs(proto)
    names = [s[0] for s in specs]
    missing = [n for n in names if n not in arrays]
    extra = [n for n in arrays if n not in names]
    if missing or extra:
        raise BadInputError(f"{origin}: arrays must be keyed by the model's input names {names}; "
                            f"missing {missing}, unexpected {extra}")
    counts = {n: int(arrays[n].shape[0]) if arrays[n].ndim else 0 for n in names}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        raise BadInputError(f"{origin}: every array needs the same non-zero number of samples along axis 0; "
                            f"got {counts}")
    batch = None
    for name, elem, dims in specs:
        batch = _check_one(origin, name, arrays[name], elem, input_shapes.get(name, dims), batch)
    data = CalibData(arrays, batch or DEFAULT_BATCH, batch is not None)
    if batch is not None and data.count < batch:
        raise BadInputError(f"{origin}: the model's batch size is fixed at {batch}, but only {data.count} samples "
                            "are given")
    return data


def _check_one(origin: str, name: str, arr: np.ndarray, elem: int, dims: tuple, batch: int | None) -> int | None:
    want = ir.np_dtype(elem)
    if arr.dtype != want:
        raise BadInputError(f"{origin}: input '{name}' expects dtype {np.dtype(want).name}, the array has "
                            f"{arr.dtype.name} (convert it with .astype(np.{np.dtype(want).name}))")
    if arr.ndim != len(dims):
        raise BadInputError(f"{origin}: input '{name}' has rank {len(dims)} {list(dims)} in the model, the array has "
                            f"shape {list(arr.shape)} (axis 0 holds the samples)")
    for axis in range(1, len(dims)):
        if isinstance(dims[axis], int) and dims[axis] > 0 and arr.shape[axis] != dims[axis]:
            raise BadInputError(f"{origin}: input '{name}' expects size {dims[axis]} along axis {axis} "
                                f"(model shape {list(dims)}), the array has shape {list(arr.shape)}")
    if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise BadInputError(f"{origin}: input '{name}' holds {bad} NaN or infinite values; calibration data "
                            "must be finite")
    if isinstance(dims[0], int) and dims[0] > 0:
        if batch is not None and batch != dims[0]:
            raise BadInputError(f"{origin}: the model's inputs fix different batch sizes ({batch}, {dims[0]})")
        return int(dims[0])
    return batch


def split(data: CalibData, samples: int) -> tuple[CalibData, CalibData | None]:
    """First `samples` samples for calibration; the rest (or a held-out 20% when none is left) for fidelity."""
    n = data.count
    use = min(samples, n)
    if n > use:
        return data.take(0, use), data.take(use, min(n, use + max(use // 2, data.batch)))
    cut = n - max(int(n * HELD_OUT_FRACTION), 1)
    if cut < 1 or (data.fixed and (cut < data.batch or n - cut < data.batch)):
        return data, None
    return data.take(0, cut), data.take(cut, n)


def run_batches(model: ModelProto, data: CalibData, names: list[str] | None,
                visit: Callable[[int, dict[str, np.ndarray]], None], label: str = "calibration",
                progress: bool = True) -> None:
    """Run `model` over the data batch by batch; `visit(batch_index, {name: value})` sees every batch.

    `names` are tensors to expose (None: the model's own outputs). `progress=False` leaves the
    progress lines to a caller that runs many models and reports its own.
    """
    # only the nodes the names need: a refit of an early layer runs an early part of the network
    runnable = ir.needed_for(model, names) if names is not None else model
    sess = session(runnable, "cpu", optimize=True)
    out_names = [o.name for o in sess.get_outputs()]
    total = max(1, -(-data.count // data.batch))
    t0, last = time.perf_counter(), 0.0
    for i, feeds in enumerate(data.batches()):
        try:
            values = sess.run(out_names, feeds)
        except Exception as exc:  # only ONNX Runtime runs inside: its failure to run the batch
            raise CheckFailedError(f"ONNX Runtime failed on {label} batch {i}: {first_line(exc)}") from None
        visit(i, dict(zip(out_names, values)))
        now = time.perf_counter() - t0
        if progress and (now - last > 5 or i + 1 == total):
            log.info("%s: batch %d/%d (%.1fs)", label, i + 1, total, now)
            last = now


Visit = Callable[[int, dict[str, np.ndarray]], None]


class Stepwise:
    """Tensors of a model that changes between targets, target after target, each node run once.

    Compensation refits consumers in topological order, each on its input in the model with the
    consumers before it refit. A refit changes its consumer's weights and bias only, and everything
    run for the earlier targets is upstream of this consumer's input, so of an earlier node in
    topological order: none of it reads the refit consumer, and it all still holds. Each target so
    runs only the nodes not run yet (`ir.segment`), reading the tensors earlier runs computed, kept
    for every sample (the batch boundaries are `CalibData.batches()`'s) while a node still to run for
    a later target reads them. With L targets that is one pass over the network instead of L.
    `changed` names the initializers a refit wrote: should a node already run read one (a bias shared
    with an earlier node), everything is computed afresh for the next target.
    """

    def __init__(self, data: CalibData, targets: list[str], label: str) -> None:
        self.data = data
        self.targets = list(targets)
        self.label = label
        self.step = 0
        self.nodes_run = 0
        self.peak_bytes = 0
        self._cache: dict[str, list[np.ndarray | None]] = {}  # tensor -> its value in every batch
        self._read: set[str] = set()  # what the nodes run so far read, initializers included

    def next(self, model: ModelProto, visit: Visit) -> None:
        """Run `model` (as it is now) up to the next target; `visit(batch_index, {target: value})` sees
        every batch."""
        name = self.targets[self.step]
        self.step += 1
        available = {k: (v[0].dtype, v[0].ndim) for k, v in self._cache.items() if v and v[0] is not None}
        seg = ir.segment(model, [name], available, self.targets[self.step:])
        sess = session(seg.model, "cpu", optimize=True) if seg.model is not None else None
        in_names = [i.name for i in sess.get_inputs()] if sess else []
        out_names = [o.name for o in sess.get_outputs()] if sess else []
        dead = [k for k in self._cache if k not in seg.live]
        new: dict[str, list[np.ndarray | None]] = {o: [] for o in out_names if o in seg.live}
        held = sum(a.nbytes for v in self._cache.values() for a in v if a is not None)
        for i, feeds in enumerate(self.data.batches()):
            values: dict[str, np.ndarray] = {}
            if sess is not None:
                try:
                    got = sess.run(out_names, {k: self._cache[k][i] if k in self._cache else feeds[k]
                                               for k in in_names})
                except Exception as exc:  # only ONNX Runtime runs inside: its failure to run the batch
                    raise CheckFailedError(f"ONNX Runtime failed on {self.label} {name} batch {i}: "
                                           f"{first_line(exc)}") from None
                values = dict(zip(out_names, got))
            for o, parts in new.items():
                parts.append(values[o])
            visit(i, {name: values[name] if name in values else self._value(name, i, feeds)})
            for k in dead:  # freed batch by batch: a big early activation goes as its last reader runs
                self._cache[k][i] = None
        self.peak_bytes = max(self.peak_bytes,
                              held + sum(a.nbytes for v in new.values() for a in v if a is not None))
        for k in dead:
            del self._cache[k]
        self._cache.update(new)
        self.nodes_run += seg.nodes
        self._read |= seg.reads
        log.debug("%s %d/%d: %d nodes run, %d tensors kept", self.label, self.step, len(self.targets), seg.nodes,
                  len(self._cache))
        if self.step == len(self.targets):
            log.info("%s: %d nodes run for %d targets; at most %.1f MiB of activations kept", self.label,
                     self.nodes_run, len(self.targets), self.peak_bytes / 2 ** 20)
            self._cache.clear()

    def _value(self, name: str, i: int, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if name in self._cache:
            value = self._cache[name][i]
            if value is not None:
                return value
        if name in feeds:
            return feeds[name]
        raise CheckFailedError(f"{self.label}: '{name}' is neither computed nor a model input")

    def changed(self, initializers: set[str]) -> None:
        """A refit wrote these initializers; drop every kept tensor if a node already run reads one."""
        stale = initializers & self._read
        if stale:
            log.info("%s: %s, read by nodes already run, changed: computing the next target afresh", self.label,
                     ", ".join(sorted(stale)))
            self._cache.clear()
            self._read.clear()


@dataclass
class ChannelStats:
    """Per-channel moments of a tensor along one axis (reduced over every other axis)."""

    mean: np.ndarray
    mean_sq: np.ndarray
    mean_abs: np.ndarray
    count: int

    @property
    def var(self) -> np.ndarray:
        return np.maximum(self.mean_sq - self.mean * self.mean, 0.0)


def collect_stats(model: ModelProto, data: CalibData, spaces: list[tuple[str, int]]
                  ) -> dict[tuple[str, int], ChannelStats]:
    """Mean, E[a^2] and mean |a| per channel of every (tensor, axis), in one batched pass."""
    exposable = ir.top_level_tensors(model)  # a tensor inside an If / Loop / Scan body cannot be an output
    spaces = sorted(s for s in set(spaces) if s[0] in exposable)
    names = sorted({t for t, _ in spaces})
    sums: dict[tuple[str, int], list] = {}

    def visit(_: int, values: dict[str, np.ndarray]) -> None:
        for tensor, axis in spaces:
            v = np.moveaxis(values[tensor].astype(np.float64), axis, 0).reshape(values[tensor].shape[axis], -1)
            acc = sums.setdefault((tensor, axis), [0.0, 0.0, 0.0, 0])
            acc[0] = acc[0] + v.sum(1)
            acc[1] = acc[1] + (v * v).sum(1)
            acc[2] = acc[2] + np.abs(v).sum(1)
            acc[3] += v.shape[1]

    if names:
        run_batches(model, data, names, visit, "statistics")
    return {k: ChannelStats(s / c, q / c, a / c, c) for k, (s, q, a, c) in sums.items()}


def outputs(model: ModelProto, data: CalibData, label: str,
            progress: bool = True) -> tuple[list[str], list[np.ndarray]]:
    """The model's outputs over all of `data`, concatenated along the sample axis."""
    parts: list[list[np.ndarray]] = []
    names: list[str] = []

    def visit(_: int, values: dict[str, np.ndarray]) -> None:
        names[:] = list(values)
        parts.append(list(values.values()))

    run_batches(model, data, None, visit, label, progress)
    return names, [np.concatenate([p[i] for p in parts]) for i in range(len(names))]


def fidelity(original: ModelProto, pruned: ModelProto, data: CalibData,
             reference: tuple[list[str], list[np.ndarray]] | None = None) -> dict:
    """Per output: mean/min cosine similarity per sample, relative L2 error, top-1 agreement for [N, classes],
    and for LM logits [N, positions, vocabulary] the per-token KL and top-1 agreement (`token_scores`).
    `reference`: the original's `outputs` on `data`, when the caller compares several models with it."""
    names, ref = reference or outputs(original, data, "fidelity (original)")
    _, new = outputs(pruned, data, "fidelity (pruned)")
    result: dict[str, Any] = {"samples": data.count, "outputs": {}}
    for name, a, b in zip(names, ref, new):
        if not np.issubdtype(a.dtype, np.floating) or a.shape != b.shape:
            continue
        a64, b64 = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
        cos = (a64 * b64).sum(1) / np.maximum(np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1), 1e-30)
        cos[~a64.any(1) & ~b64.any(1)] = 1.0  # a sample both models map to all zeros: identical, not orthogonal
        row = {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
               "relative_error": float(np.linalg.norm(a64 - b64) / max(np.linalg.norm(a64), 1e-30))}
        if a.ndim == 2 and a.shape[1] > 1:
            row["top1_agreement"] = float(np.mean(a.argmax(1) == b.argmax(1)))
        if a.ndim >= 3 and a.shape[-1] >= VOCABULARY:
            row.update(token_scores(a, b))
        result["outputs"][name] = row
    return result


VOCABULARY = 1000  # a last axis this long, behind a sequence axis, holds scores over a vocabulary: LM logits


def token_scores(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """For logits [..., positions, vocabulary]: the mean per-token KL(softmax(a) || softmax(b)) in nats (how
    much worse the pruned model predicts the original's next-token distribution; exp of it is the perplexity
    ratio on text sampled from the original) and the share of positions whose top-1 token is unchanged.
    In chunks of positions."""
    a2, b2 = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    kl, same = 0.0, 0
    for start in range(0, len(a2), 256):
        la = a2[start:start + 256].astype(np.float64)
        lb = b2[start:start + 256].astype(np.float64)
        la = la - la.max(1, keepdims=True)
        lb = lb - lb.max(1, keepdims=True)
        la -= np.log(np.exp(la).sum(1, keepdims=True))
        lb -= np.log(np.exp(lb).sum(1, keepdims=True))
        kl += float(np.sum(np.exp(la) * (la - lb)))
        same += int(np.sum(la.argmax(1) == lb.argmax(1)))
    return {"token_kl": kl / max(len(a2), 1), "token_top1_agreement": same / max(len(a2), 1)}
