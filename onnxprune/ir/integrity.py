"""Integrity of a model read from disk, checked before anything is allocated from its declarations:
valid UTF-8 text, tensor payloads that match their dims and type, element counts under a cap, a
supported opset, onnx.checker; and the upgrade of opsets 7 and 8 and IR version 3."""
from __future__ import annotations

import logging

import onnx
from google.protobuf.message import Message

from ..errors import ModelLoadError
from . import limits
from .graph import opset_of

log = logging.getLogger(__name__)

# bytes per element of the raw_data of each element type (sub-byte types: see _raw_bytes)
_ITEMSIZE: dict[int, int] = {
    onnx.TensorProto.FLOAT: 4, onnx.TensorProto.UINT8: 1, onnx.TensorProto.INT8: 1, onnx.TensorProto.UINT16: 2,
    onnx.TensorProto.INT16: 2, onnx.TensorProto.INT32: 4, onnx.TensorProto.INT64: 8, onnx.TensorProto.BOOL: 1,
    onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.DOUBLE: 8, onnx.TensorProto.UINT32: 4, onnx.TensorProto.UINT64: 8,
    onnx.TensorProto.COMPLEX64: 8, onnx.TensorProto.COMPLEX128: 16, onnx.TensorProto.BFLOAT16: 2,
}
_SUB_BYTE = {getattr(onnx.TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(onnx.TensorProto, n)}
_FP8 = {getattr(onnx.TensorProto, n) for n in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ",
                                                "FLOAT8E8M0") if hasattr(onnx.TensorProto, n)}
# the typed field holding each element type's values, and values per element there
_TYPED_FIELD = {
    onnx.TensorProto.FLOAT: ("float_data", 1), onnx.TensorProto.COMPLEX64: ("float_data", 2),
    onnx.TensorProto.DOUBLE: ("double_data", 1), onnx.TensorProto.COMPLEX128: ("double_data", 2),
    onnx.TensorProto.INT64: ("int64_data", 1), onnx.TensorProto.UINT32: ("uint64_data", 1),
    onnx.TensorProto.UINT64: ("uint64_data", 1), onnx.TensorProto.STRING: ("string_data", 1),
    **{t: ("int32_data", 1) for t in (onnx.TensorProto.INT32, onnx.TensorProto.INT16, onnx.TensorProto.INT8,
                                      onnx.TensorProto.UINT16, onnx.TensorProto.UINT8, onnx.TensorProto.BOOL,
                                      onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, *_FP8)},
}


def check_text(proto: onnx.ModelProto, path: str) -> None:
    """Every string of the model (names, op types, doc strings, metadata) must be valid UTF-8."""
    where = ["model"]
    try:
        _walk(proto, where)
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"'{path}' holds text that is not valid UTF-8 in {'.'.join(where)} "
                             f"({exc.object[:40]!r}); names, op types and doc strings must be UTF-8") from None


def _walk(msg: Message, where: list[str]) -> None:
    if isinstance(msg, onnx.TensorProto):  # the values are never text: skip decoding them
        for name in ("name", "doc_string"):
            where.append(name)
            _text(getattr(msg, name))
            where.pop()
        for entry in msg.external_data:
            where.append("external_data")
            _walk(entry, where)
            where.pop()
        return
    for field, value in msg.ListFields():
        repeated = _repeated(field)
        items = value if repeated else [value]
        for i, item in enumerate(items):
            where.append(f"{field.name}[{i}]" if repeated else field.name)
            if field.type == field.TYPE_MESSAGE:
                _walk(item, where)
            elif field.type == field.TYPE_STRING:
                _text(item)
            where.pop()


def _text(value) -> None:
    """upb hands out a string field that is not valid UTF-8 as bytes (and refuses to copy it)."""
    if isinstance(value, bytes):
        value.decode("utf-8")


def _repeated(field) -> bool:
    if hasattr(field, "is_repeated"):  # protobuf 6 dropped `label`
        return bool(field.is_repeated)
    return field.label == field.LABEL_REPEATED


def tensors(proto: onnx.ModelProto):
    """(where, tensor) for every initializer and every tensor attribute of the main graph's nodes."""
    for t in proto.graph.initializer:
        yield "initializer", t
    for n in proto.graph.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                yield f"attribute '{a.name}' of node '{n.name or n.op_type}'", a.t


def check_tensors(proto: onnx.ModelProto, path: str) -> None:
    """Element types are known, dims non-negative, element counts under the cap, payloads the declared size."""
    for where, t in tensors(proto):
        problem = tensor_problem(t)
        if problem:
            raise ModelLoadError(f"'{path}': {where} '{t.name}' {problem}")


def tensor_problem(t: onnx.TensorProto) -> str | None:
    """Why tensor `t`'s declaration and payload disagree (None: they agree)."""
    dims = list(t.dims)
    if any(d < 0 for d in dims):
        return f"has negative dims {dims}"
    count = 1
    for d in dims:
        count *= d  # Python ints: a product of 2**64 does not wrap
    if count > limits.MAX_TENSOR_ELEMENTS:
        return f"declares {count} elements (dims {dims}), more than the limit of {limits.MAX_TENSOR_ELEMENTS}"
    names = {v: k for k, v in onnx.TensorProto.DataType.items()}
    if t.data_type not in names or t.data_type == onnx.TensorProto.UNDEFINED:
        return f"has element type {t.data_type}, which is not an ONNX type"
    if t.data_location == onnx.TensorProto.EXTERNAL:
        return None  # reported by the loader when its data could not be read
    kind = names[t.data_type]
    if t.HasField("raw_data") or t.data_type not in _TYPED_FIELD:
        want = _raw_bytes(t.data_type, count)
        if want is not None and len(t.raw_data) != want:
            return (f"(dims {dims}, {kind}) needs {want} bytes of raw data, the file holds {len(t.raw_data)}")
        return None
    field, per = _TYPED_FIELD[t.data_type]
    found = len(getattr(t, field))
    if found != count * per:
        return f"(dims {dims}, {kind}) needs {count * per} values in {field}, the file holds {found}"
    return None


def _raw_bytes(data_type: int, count: int) -> int | None:
    if data_type in _ITEMSIZE:
        return count * _ITEMSIZE[data_type]
    if data_type in _FP8:
        return count
    if data_type in _SUB_BYTE:
        return (count + 1) // 2
    return None  # STRING has no raw form; unknown sizes are left to ONNX Runtime


_NO_SHAPE = "Field 'shape' of 'type' is required but missing"


def run_checker(model: onnx.ModelProto | str, full_check: bool = True) -> None:
    """onnx.checker, except that graph inputs and outputs may leave out their shape (unknown rank), as
    ONNX Runtime allows; such a model is checked without shape inference. Raises the checker's errors."""
    from . import external

    if not isinstance(model, str) and external.has_external(model):
        model = external.loaded(model)  # the checker reads relative locations only, from a file
    try:
        onnx.checker.check_model(model, full_check=full_check)
        return
    except onnx.checker.ValidationError as exc:
        if _NO_SHAPE not in str(exc):
            raise
    proto = onnx.load(model, load_external_data=False) if isinstance(model, str) else model
    g = proto.graph
    missing = [vi.type.tensor_type for vi in list(g.input) + list(g.output)
               if vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape")]
    for tt in missing:
        tt.shape.SetInParent()
    try:
        onnx.checker.check_model(proto, full_check=False)  # the shapes were made up: no inference
    finally:
        for tt in missing:
            tt.ClearField("shape")


def check_opset_and_schema(proto: onnx.ModelProto, path: str) -> None:
    """Default-domain opset in the supported range, then onnx.checker on the model as it was read."""
    default = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    if not default:
        domains = sorted({o.domain for o in proto.opset_import})
        raise ModelLoadError(f"'{path}' imports no default-domain (ai.onnx) opset (its opset imports: "
                             f"{domains or 'none'}); onnxprune needs ai.onnx opset {limits.MIN_OPSET} or newer")
    newest = onnx.defs.onnx_opset_version()
    if len(default) > 1:
        raise ModelLoadError(f"'{path}' imports the default domain more than once (opsets {default})")
    if default[0] < limits.MIN_UPGRADABLE_OPSET:
        raise ModelLoadError(f"'{path}' uses opset {default[0]}; onnxprune needs opset {limits.MIN_OPSET} or newer "
                             f"(opsets {limits.MIN_UPGRADABLE_OPSET} and 8 are upgraded)")
    if default[0] > newest:
        raise ModelLoadError(f"'{path}' uses opset {default[0]}; the installed onnx knows opsets up to {newest}")
    try:  # from the file: faster than from the message, and models over 2 GB can only be checked so
        run_checker(path if _utf8(path) else proto, full_check=True)
    except Exception as exc:  # ValidationError, or a protobuf error on a malformed model
        if not _runtime_loads(path):
            raise ModelLoadError(f"'{path}' is not a valid ONNX model (onnx.checker): {one_line(exc)}") from None
        # Tools write models that ONNX Runtime runs and the checker refuses (unsorted nodes from the
        # float16 converter, ORT's own ops in the default domain): the pruned model is held to the same
        # standard (validate.check_like_original)
        log.warning("'%s' fails onnx.checker (%s), but ONNX Runtime loads it; continuing", path, one_line(exc))


def _runtime_loads(path: str) -> bool:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    except Exception:  # ORT raises its own types; any failure means it cannot run the model
        return False
    return True


def upgraded(proto: onnx.ModelProto, path: str) -> onnx.ModelProto:
    """Opset 7 and 8 upgraded to MIN_OPSET with onnx.version_converter; IR version 3 lifted to 4."""
    opset = opset_of(proto)
    if opset < limits.MIN_OPSET:
        from onnx import version_converter

        try:
            converted = version_converter.convert_version(proto, limits.MIN_OPSET)
            onnx.checker.check_model(converted)
        except Exception as exc:  # the converter raises RuntimeError / ValidationError
            raise ModelLoadError(f"'{path}' uses opset {opset}, and onnx.version_converter could not upgrade it "
                                 f"to opset {limits.MIN_OPSET}: {one_line(exc)}") from None
        if _interface(converted) != _interface(proto):  # e.g. Scan-8's batch axis, which Scan-9 drops
            raise ModelLoadError(f"'{path}' uses opset {opset}, and onnx.version_converter's opset "
                                 f"{limits.MIN_OPSET} version changes its inputs or outputs; upgrade it with the "
                                 "exporter that made it")
        proto = converted
        log.warning("%s: opset %d upgraded to opset %d with onnx.version_converter", path, opset, limits.MIN_OPSET)
    if proto.ir_version < 4:  # IR 3 lists every initializer as a graph input; later versions need not
        inits = {t.name for t in proto.graph.initializer}
        kept = [i for i in proto.graph.input if i.name not in inits]
        del proto.graph.input[:]
        proto.graph.input.extend(kept)
        proto.ir_version = 4
    return proto


def _interface(proto: onnx.ModelProto) -> list[tuple]:
    """(name, element type, dims) of every true graph input and every output."""
    inits = {t.name for t in proto.graph.initializer}
    values = [vi for vi in proto.graph.input if vi.name not in inits] + list(proto.graph.output)
    return [(vi.name, vi.type.tensor_type.elem_type,
             tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in vi.type.tensor_type.shape.dim))
            for vi in values]


def _utf8(path: str) -> bool:
    """Whether onnx's C++ code can open `path` (a file name that is not UTF-8 arrives with surrogates)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def one_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__
