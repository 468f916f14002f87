"""Write a model atomically; external and large tensors are streamed into a data file beside it.

A model with external data keeps that layout: every tensor stored outside the protobuf (untouched,
copied by byte range; cut and pending, gathered from its source in chunks of rows) and every
in-protobuf tensor of `EXTERNAL_MIN` bytes or more goes to one data file named after the output,
so that neither the weights nor a second protobuf copy of them is ever held in memory.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx

from ..progress import Progress
from . import external, limits

log = logging.getLogger(__name__)

EXTERNAL_MIN = 1024  # in-protobuf tensors from this size move to the data file (onnx's own threshold)
ALIGN_FROM = 1 << 20  # tensors from this size start on a page boundary, where ONNX Runtime can map them
ALIGN = 4096
CHUNK_BYTES = 64 << 20  # bytes read at once when copying or gathering a tensor
WRITERS = min(4, os.cpu_count() or 1)  # threads gathering the chunks of one cut tensor


def is_large(proto: onnx.ModelProto) -> bool:
    """Too large for one protobuf with its external data: saved with a data file, run from the file."""
    return proto.ByteSize() + external.payload_bytes(proto) > limits.EXTERNAL_DATA_THRESHOLD


def saved_from_file(proto: onnx.ModelProto) -> bool:
    """Whether the model must be written before onnx.checker and ONNX Runtime see it (large, or holding
    external data, whose bytes are not in the protobuf)."""
    return external.has_external(proto) or is_large(proto)


def data_files(path: str | os.PathLike) -> list[str]:
    """The external data files a saved model names (beside it), that exist."""
    path = os.fspath(path)
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception:  # unreadable: it names none that can be found
        return []
    names = {os.path.join(os.path.dirname(path), external.info(t).get("location", ""))
             for _, t in external.all_tensors(proto.graph) if external.is_external(t)}
    return sorted(n for n in names if os.path.isfile(n))


def saved_size(path: str | os.PathLike) -> int:
    """Bytes of a saved model and its external data files."""
    return os.path.getsize(path) + sum(os.path.getsize(n) for n in data_files(path))


def remove_saved(path: str | os.PathLike) -> None:
    """Delete a model written by `save`, with the data file it names."""
    path = os.fspath(path)
    for name in {path, path + ".data", *data_files(path)}:
        if os.path.isfile(name):
            os.remove(name)


def save(proto: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write atomically; models with external data, or too large for one protobuf, get a data file
    beside them. `proto` is unchanged afterwards."""
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=".onnxprune-", dir=directory)
    try:
        base = os.path.basename(path)
        tmp_model = os.path.join(tmp_dir, base)
        if saved_from_file(proto):
            data_name = _data_name(proto, directory, base)
            data_path = os.path.join(tmp_dir, data_name)
            if _write_with_data(proto, tmp_model, data_path, data_name):
                os.chmod(data_path, os.stat(tmp_model).st_mode & 0o777)  # the temp folder's files are private
                os.replace(data_path, os.path.join(directory, data_name))
        else:
            onnx.save_model(proto, tmp_model)
        os.replace(tmp_model, path)
    finally:
        for leftover in os.listdir(tmp_dir):
            os.unlink(os.path.join(tmp_dir, leftover))
        os.rmdir(tmp_dir)


def _data_name(proto: onnx.ModelProto, directory: str, base: str) -> str:
    """The output's data file: the input's kind of name (MODEL.onnx.data, MODEL.onnx_data) for the
    output's model name, never one of the files the model reads its data from."""
    sources = {os.path.realpath(external.info(t)["location"]) for _, t in external.all_tensors(proto.graph)
               if external.is_external(t)}
    underscore = bool(sources) and all(s.endswith("_data") for s in sources)
    name = base + ("_data" if underscore else ".data")
    while os.path.realpath(os.path.join(directory, name)) in sources:
        name = "pruned." + name
    return name


def _write_with_data(proto: onnx.ModelProto, model_path: str, data_path: str, data_name: str) -> bool:
    """Write the data file and the protobuf naming it; False (no data file) when no tensor moved."""
    moving = [t for _, t in external.all_tensors(proto.graph)
              if external.is_external(t) or (t.HasField("raw_data") and len(t.raw_data) >= EXTERNAL_MIN)]
    # (tensor, its external entries or None, its bytes or None): the caller's model is restored after
    moved: list[tuple[onnx.TensorProto, list[tuple[str, str]] | None, bytes | None]] = []
    progress = Progress(log, f"writing {os.path.basename(data_path)}", sum(_size(t) for t in moving), " GB", 1e9)
    fd = os.open(data_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        position = 0
        for t in moving:
            size = _size(t)
            if size >= ALIGN_FROM:
                position = -(-position // ALIGN) * ALIGN
            if external.is_external(t):
                _write_external(t, fd, position)
                moved.append((t, [(e.key, e.value) for e in t.external_data], None))
            else:
                raw = t.raw_data  # held instead of the field's copy: no second copy of a large model
                os.pwrite(fd, raw, position)
                t.ClearField("raw_data")
                moved.append((t, None, raw))
            external.set_location(t, {"location": data_name, "offset": str(position), "length": str(size)})
            position += size
            progress.add(size)
        os.ftruncate(fd, position)
    finally:
        os.close(fd)
    try:
        onnx.save_model(proto, model_path)
        if not moved:
            os.unlink(data_path)
    finally:
        for t, entries, held in moved:
            if entries is not None:
                external.set_location(t, dict(entries))
            else:
                del t.external_data[:]
                t.ClearField("data_location")
                t.raw_data = held or b""
    progress.finish()
    return bool(moved)


def _size(t: onnx.TensorProto) -> int:
    return (external.needed_bytes(t) or 0) if external.is_external(t) else len(t.raw_data)


def _write_external(t: onnx.TensorProto, fd: int, position: int) -> None:
    """Copy an external tensor's stored bytes to `fd` at `position`: byte ranges when untouched or cut
    along its first axis only (in the kernel), else the kept part of a chunk of its source's rows at a
    time, each thread reading into a buffer of its own."""
    entries = external.info(t)
    offset = int(entries.get("offset", 0))
    keep = external.kept_indices(t)
    src = os.open(entries["location"], os.O_RDONLY)
    try:
        if not keep:
            _copy_range(src, fd, offset, position, external.needed_bytes(t) or 0)
            return
        dims = external.source_dims(t)
        dtype = external.plain_dtype(t)
        assert dtype is not None and dims, f"pending cut of '{t.name}' without a numpy dtype or dims"
        row_bytes = int(np.prod(dims[1:], dtype=np.int64)) * dtype.itemsize
        rows = keep.pop(0, None)
        if not keep:  # rows only: each run of consecutive kept rows is one byte range
            assert rows is not None
            for first, count in _runs(rows):
                _copy_range(src, fd, offset + first * row_bytes, position, count * row_bytes)
                position += count * row_bytes
            return
        rows = np.arange(dims[0], dtype=np.int64) if rows is None else rows
        step = max(1, CHUNK_BYTES // max(row_bytes, 1))
        kept_row_bytes = int(np.prod([len(keep[a]) if a in keep else n for a, n in enumerate(dims) if a],
                                     dtype=np.int64)) * dtype.itemsize
        buffers = threading.local()

        def write_chunk(start: int) -> None:
            """Read, gather and write one chunk of rows (threads: pread, take and pwrite release the GIL)."""
            if not hasattr(buffers, "array"):
                buffers.array = np.empty(min(step, dims[0]) * row_bytes, dtype=np.uint8)
            chunk = rows[start:start + step]
            first, span = int(chunk[0]), int(chunk[-1] - chunk[0]) + 1
            if span > step:  # kept rows too far apart for one read: one run at a time
                block = np.concatenate([_rows(src, offset, a, n, row_bytes, dtype, dims, buffers.array).copy()
                                        for a, n in _runs(chunk)])
            else:
                block = _rows(src, offset, first, span, row_bytes, dtype, dims, buffers.array)
                if span != len(chunk):
                    block = block[chunk - first]
            part = np.ascontiguousarray(external.gather(block, keep))
            os.pwrite(fd, memoryview(part).cast("B"), position + start * kept_row_bytes)  # type: ignore[arg-type]

        starts = range(0, len(rows), step)
        with ThreadPoolExecutor(max_workers=min(WRITERS, len(starts))) as pool:
            list(pool.map(write_chunk, starts))
    finally:
        os.close(src)


def _runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """(first, count) of each run of consecutive indices in sorted `rows`."""
    breaks = np.nonzero(np.diff(rows) != 1)[0] + 1
    return [(int(r[0]), len(r)) for r in np.split(rows, breaks) if len(r)]


def _rows(src: int, offset: int, first: int, count: int, row_bytes: int, dtype: np.dtype, dims: list[int],
          buffer: np.ndarray) -> np.ndarray:
    """Rows first..first+count of the stored tensor, read into `buffer` (a view of it)."""
    view = buffer[:count * row_bytes]
    if os.preadv(src, [view], offset + first * row_bytes) != count * row_bytes:  # type: ignore[list-item]
        raise OSError(f"external data ends before row {first + count} of a tensor of dims {dims}")
    return view.view(dtype).reshape([count, *dims[1:]])


def _copy_range(src: int, dst: int, offset: int, position: int, length: int) -> None:
    """`length` bytes from `src` at `offset` to `dst` at `position`, in the kernel where it can."""
    done = 0
    while done < length:
        count = min(CHUNK_BYTES, length - done)
        try:
            n = os.copy_file_range(src, dst, count, offset + done, position + done)
        except (AttributeError, OSError):  # no copy_file_range here, or not across these file systems
            data = os.pread(src, count, offset + done)
            n = os.pwrite(dst, data, position + done)
        if n <= 0:
            raise OSError(f"external data ends {length - done} bytes early")
        done += n
