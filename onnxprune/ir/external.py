"""External data: weights that stay in their files until they are cut or written (issue 10).

At load, every external tensor is checked (a location inside the model's folder, a regular file, a
byte range within it and as long as the tensor needs) and its location is made absolute, so that the
proto can be copied and edited while the data stays on disk: `read` maps a tensor's bytes (a
memory map, dropped when the caller drops the array) and a cut of an external tensor is *pending*:
its TensorProto keeps the source's location, offset and length, with the kept indices of each axis
in extra external_data entries, until `save` gathers them into the output's data file in chunks.

Absolute locations and pending entries never leave this process: `loaded` materialises a copy for
ONNX Runtime from memory and for onnx.checker; `save` writes relative locations.
"""
from __future__ import annotations

import base64
import mmap
import os
from typing import Iterator

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import ModelLoadError
from . import scopes
from .integrity import _ITEMSIZE, _raw_bytes

EXTERNAL = onnx.TensorProto.EXTERNAL
KEEP = "onnxprune.keep."  # + axis: the kept indices of that axis of the source (int64, base64)
SOURCE_DIMS = "onnxprune.source_dims"  # dims of the stored source of a pending cut, comma separated
_PRIVATE = (KEEP, SOURCE_DIMS)


def all_tensors(graph: onnx.GraphProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    """(where, tensor) for every initializer and tensor attribute, in every body too."""
    for _, g in scopes.walk(graph):
        for t in g.initializer:
            yield "initializer", t
        for n in g.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    yield f"attribute '{a.name}' of node '{n.name or n.op_type}'", a.t


def is_external(t: onnx.TensorProto) -> bool:
    return t.data_location == EXTERNAL


def has_external(proto: onnx.ModelProto) -> bool:
    """Whether some tensor of the model is stored outside its protobuf."""
    return any(is_external(t) for _, t in all_tensors(proto.graph))


def payload_bytes(proto: onnx.ModelProto) -> int:
    """Bytes of the model's external tensors (as stored after any pending cut)."""
    return sum(needed_bytes(t) or 0 for _, t in all_tensors(proto.graph) if is_external(t))


def info(t: onnx.TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in t.external_data}


def needed_bytes(t: onnx.TensorProto) -> int | None:
    """Raw bytes of the tensor as its type and dims need them; None for STRING."""
    return _raw_bytes(t.data_type, int(np.prod(list(t.dims), dtype=object)))


def resolve(proto: onnx.ModelProto, path: str) -> set[str]:
    """Check every external tensor of a model read from `path` and make its location absolute; returns
    the data files. Raises ModelLoadError naming the file, the tensor and the problem."""
    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    files: set[str] = set()
    for where, t in all_tensors(proto.graph):
        if not is_external(t):
            continue
        entries = info(t)
        location = entries.get("location", "")
        label = f"'{path}': {where} '{t.name}'"
        if not location:
            raise ModelLoadError(f"{label} is stored as external data but names no location")
        if os.path.isabs(location) or location.startswith(("\\", "/")):
            raise ModelLoadError(f"{label} names external data at the absolute path '{location}'; ONNX external "
                                 "data must lie beside the model (a relative location)")
        full = os.path.realpath(os.path.join(folder, location))
        if os.path.commonpath([full, folder]) != folder:
            raise ModelLoadError(f"{label} names external data '{location}' outside the model's folder")
        if os.path.isdir(full):
            raise ModelLoadError(f"'{path}' names external data '{location}', which is a directory")
        if not os.path.exists(full):
            raise ModelLoadError(f"'{path}' names external data '{location}' that does not exist")
        if not os.path.isfile(full):
            raise ModelLoadError(f"{label} names external data '{location}', which is not a regular file")
        need = needed_bytes(t)
        if need is None:
            raise ModelLoadError(f"{label} is a string tensor stored as external data, which ONNX does not allow")
        try:
            offset, length = int(entries.get("offset", 0)), int(entries.get("length", need))
        except ValueError:
            raise ModelLoadError(f"{label} has a non-integer external data offset or length "
                                 f"({entries.get('offset')!r}, {entries.get('length')!r})") from None
        size = os.path.getsize(full)
        if offset < 0 or length < need:
            raise ModelLoadError(f"{label} (dims {list(t.dims)}) needs {need} bytes of external data, "
                                 f"'{location}' gives {length} at offset {offset}")
        if offset + need > size:
            raise ModelLoadError(f"{label} (dims {list(t.dims)}) needs bytes {offset}..{offset + need} of "
                                 f"'{location}', which holds {size}")
        set_location(t, {"location": full, "offset": str(offset), "length": str(need)})
        files.add(full)
    return files


def set_location(t: onnx.TensorProto, entries: dict[str, str]) -> None:
    del t.external_data[:]
    for key, value in entries.items():
        e = t.external_data.add()
        e.key, e.value = key, value
    t.data_location = EXTERNAL


def plain_dtype(t: onnx.TensorProto) -> np.dtype | None:
    """The numpy dtype whose bytes are the tensor's raw bytes (None for packed int4 / fp8 types)."""
    if t.data_type not in _ITEMSIZE:
        return None
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
    return dtype if dtype.itemsize == _ITEMSIZE[t.data_type] else None


def source_dims(t: onnx.TensorProto) -> list[int]:
    entries = info(t)
    return [int(d) for d in entries[SOURCE_DIMS].split(",") if d] if SOURCE_DIMS in entries else list(t.dims)


def kept_indices(t: onnx.TensorProto) -> dict[int, np.ndarray]:
    """Axis -> the source indices a pending cut keeps (empty for an untouched external tensor)."""
    return {int(k[len(KEEP):]): np.frombuffer(base64.b64decode(v), dtype="<i8")
            for k, v in info(t).items() if k.startswith(KEEP)}


def _stored(t: onnx.TensorProto) -> np.ndarray:
    """The stored source tensor, memory-mapped when its bytes are a numpy dtype's."""
    entries = info(t)
    dims = tuple(source_dims(t))
    offset = int(entries.get("offset", 0))
    dtype = plain_dtype(t)
    if dtype is not None:
        if int(np.prod(dims)) == 0:
            return np.zeros(dims, dtype)
        return _mapped(entries["location"], offset, dtype, dims)
    raw = onnx.TensorProto(name=t.name, data_type=t.data_type, dims=dims)
    raw.raw_data = read_bytes(entries["location"], offset, int(entries["length"]))
    return numpy_helper.to_array(raw)


def _mapped(location: str, offset: int, dtype: np.dtype, dims: tuple[int, ...]) -> np.ndarray:
    """A read-only array over the file's bytes (only the pages touched become resident); unmapped when
    the array is dropped."""
    count = int(np.prod(dims))
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    with open(location, "rb") as f:
        mapping = mmap.mmap(f.fileno(), offset - start + count * dtype.itemsize, access=mmap.ACCESS_READ,
                            offset=start)
    if hasattr(mmap, "MADV_WILLNEED"):  # read ahead the whole tensor: it is about to be read through
        mapping.madvise(mmap.MADV_WILLNEED)
    return np.frombuffer(mapping, dtype=dtype, count=count, offset=offset - start).reshape(dims)


def read(t: onnx.TensorProto) -> np.ndarray:
    """The value of an external tensor: a read-only memory map of the file (untouched tensors), or the
    kept part of its source (pending cuts, gathered now)."""
    value = _stored(t)
    keep = kept_indices(t)
    return gather(value, keep) if keep else value


def gather(value: np.ndarray, keep: dict[int, np.ndarray]) -> np.ndarray:
    """`value` at the kept indices of each axis in `keep` (the others whole), in one pass."""
    if not keep:
        return value
    if len(keep) == 1:
        ((axis, idx),) = keep.items()
        return np.take(value, idx, axis=axis)
    return value[np.ix_(*[keep.get(a, np.arange(n)) for a, n in enumerate(value.shape)])]


def pending(out: onnx.TensorProto, source: onnx.TensorProto, keep: dict[int, np.ndarray]) -> None:
    """Write into `out` (empty) a cut of external `source` keeping `keep` (axis -> indices into its
    current dims) without reading its data: the kept indices are composed with the source's own."""
    composed = kept_indices(source)
    for axis, idx in keep.items():
        idx = np.asarray(idx, dtype=np.int64)
        composed[axis] = composed[axis][idx] if axis in composed else idx
    dims = list(source.dims)
    for axis, idx in keep.items():
        dims[axis] = len(idx)
    entries = {k: v for k, v in info(source).items() if not k.startswith(_PRIVATE)}
    entries[SOURCE_DIMS] = ",".join(str(d) for d in source_dims(source))
    entries.update({f"{KEEP}{axis}": base64.b64encode(np.ascontiguousarray(idx, "<i8").tobytes()).decode()
                    for axis, idx in sorted(composed.items())})
    out.name, out.data_type = source.name, source.data_type
    del out.dims[:]
    out.dims.extend(dims)
    set_location(out, entries)


def can_stay(t: onnx.TensorProto) -> bool:
    """Whether a cut of `t` can stay pending (external, with a numpy dtype: packed types are cut in memory)."""
    return is_external(t) and plain_dtype(t) is not None


def loaded(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy holding every external tensor's data in the protobuf (for ONNX Runtime and onnx.checker
    from memory); `proto` itself unchanged. Only for models that fit in one protobuf."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for _, t in all_tensors(out.graph):
        if is_external(t):
            _read_in(t)
    return out


def _read_in(t: onnx.TensorProto) -> None:
    """Make an external tensor an in-protobuf one holding its (kept) bytes."""
    raw = tensor_bytes(t)
    del t.external_data[:]
    t.data_location = onnx.TensorProto.DEFAULT
    t.raw_data = raw


# element types ONNX Runtime takes as numpy arrays (ml_dtypes' bfloat16 and packed types it does not)
_ORT_ARRAY_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.INT8,
                    onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.UINT16, onnx.TensorProto.INT32,
                    onnx.TensorProto.UINT32, onnx.TensorProto.INT64, onnx.TensorProto.UINT64, onnx.TensorProto.BOOL}
RUNTIME_LOCATION = "onnxprune-given-at-session-creation"  # never opened: ONNX Runtime gets the arrays instead


def session_parts(proto: onnx.ModelProto) -> tuple[bytes, dict[str, np.ndarray]]:
    """The model's protobuf for ONNX Runtime from memory, and the arrays of its external top-level
    initializers, to be handed over as the session's external initializers (memory-mapped, not copied:
    a model of any size loads this way). Other external tensors are read into the protobuf."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    arrays: dict[str, np.ndarray] = {}
    for t in out.graph.initializer:
        if is_external(t) and t.data_type in _ORT_ARRAY_TYPES:
            arrays[t.name] = np.ascontiguousarray(read(t))
            set_location(t, {"location": RUNTIME_LOCATION, "offset": "0", "length": str(needed_bytes(t))})
    for _, t in all_tensors(out.graph):
        if is_external(t) and info(t)["location"] != RUNTIME_LOCATION:
            _read_in(t)
    return out.SerializeToString(), arrays


def tensor_bytes(t: onnx.TensorProto) -> bytes:
    """The raw bytes of an external tensor as stored after any pending cut."""
    entries = info(t)
    if not kept_indices(t):
        return read_bytes(entries["location"], int(entries.get("offset", 0)), needed_bytes(t) or 0)
    return np.ascontiguousarray(read(t)).tobytes()


def read_bytes(location: str, offset: int, length: int) -> bytes:
    with open(location, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        raise OSError(f"'{location}' ends before byte {offset + length}")
    return data
