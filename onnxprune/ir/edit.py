"""Editing helpers for the modules that build new models (apply, fold, compensate)."""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper


def copy_model(proto: onnx.ModelProto, new_values: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """A copy of `proto` whose initializers named in `new_values` hold those values instead.

    Replaced initializers are never copied first: on a 500 MB model whose
    weights are all cut, that halves the memory traffic of pruning.
    """
    out = onnx.ModelProto()
    if not new_values:
        out.CopyFrom(proto)
        return out
    _copy_fields(proto, out, skip="graph")
    _copy_fields(proto.graph, out.graph, skip="initializer")
    for t in proto.graph.initializer:
        if t.name in new_values:
            _fill(out.graph.initializer.add(), t.name, new_values[t.name])
        else:
            out.graph.initializer.add().CopyFrom(t)
    return out


def _fill(tensor: onnx.TensorProto, name: str, value: np.ndarray) -> None:
    """Write `value` into a fresh initializer in place (appending a built TensorProto copies it again)."""
    value = np.asarray(value)
    if value.dtype.byteorder == ">" or value.dtype == object or value.dtype.kind in "USO":
        tensor.CopyFrom(numpy_helper.from_array(value, name))  # rare: let onnx handle the layout
        return
    tensor.name = name
    tensor.data_type = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
    tensor.dims.extend(value.shape)
    tensor.raw_data = np.ascontiguousarray(value).tobytes()


def _copy_fields(src, dst, skip: str) -> None:
    for field_desc, value in src.ListFields():
        if field_desc.name == skip:
            continue
        if hasattr(value, "extend"):  # repeated field (descriptor APIs differ across protobuf versions)
            getattr(dst, field_desc.name).extend(value)
        elif hasattr(value, "CopyFrom"):
            getattr(dst, field_desc.name).CopyFrom(value)
        else:
            setattr(dst, field_desc.name, value)


def set_initializer(proto: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    for t in proto.graph.initializer:
        if t.name == name:
            new = numpy_helper.from_array(np.ascontiguousarray(value), name)
            t.CopyFrom(new)
            return
    raise KeyError(name)


def initializer_map(proto: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in proto.graph.initializer}


def replace_initializer(tensor: onnx.TensorProto, value: np.ndarray) -> None:
    tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), tensor.name))


def to_array(tensor: onnx.TensorProto) -> np.ndarray:
    return numpy_helper.to_array(tensor)


def set_node_attr(proto: onnx.ModelProto, node_index: int, name: str, value: Any) -> None:
    node = proto.graph.node[node_index]
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(onnx.helper.make_attribute(name, value))


def get_node_attr(proto: onnx.ModelProto, node_index: int, name: str, default: Any = None) -> Any:
    for a in proto.graph.node[node_index].attribute:
        if a.name == name:
            return list(onnx.helper.get_attribute_value(a)) if a.ints or a.floats else onnx.helper.get_attribute_value(a)
    return default


def set_value_dims(proto: onnx.ModelProto, name_to_dims: dict[str, dict[int, int]]) -> None:
    """Set dims of value_info / graph outputs for the given tensors (axis -> new size)."""
    g = proto.graph
    for vi in list(g.value_info) + list(g.output) + list(g.input):
        edits = name_to_dims.get(vi.name)
        if not edits or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = vi.type.tensor_type.shape.dim
        for axis, size in edits.items():
            if 0 <= axis < len(dims):
                dims[axis].Clear()
                dims[axis].dim_value = int(size)


def replace_with_constants(proto: onnx.ModelProto, values: dict[str, np.ndarray], derived: set[str]) -> onnx.ModelProto:
    """Copy of `proto` where `values` become initializers and nodes producing only folded or
    now-unused derived tensors are dropped."""
    out = copy_model(proto)
    g = out.graph
    for name, value in values.items():
        g.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    needed = {o.name for o in g.output}
    keep: list[onnx.NodeProto] = []
    for n in reversed(g.node):
        outputs = [o for o in n.output if o]
        if all(o in derived and (o in values or o not in needed) for o in outputs):
            continue
        keep.append(n)
        needed.update(i for i in n.input if i)
    del g.node[:]
    g.node.extend(reversed(keep))
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    unused = [t for t in g.initializer if t.name not in used]
    for t in unused:
        g.initializer.remove(t)
    vi_keep = [v for v in g.value_info if v.name not in values]
    del g.value_info[:]
    g.value_info.extend(vi_keep)
    return out


# -- calibration and compensation helpers -----------------------------------

def with_outputs(proto: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy whose graph outputs are exactly `names` (intermediate tensors exposed for statistics)."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    del out.graph.output[:]
    out.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    return out


def add_initializer(proto: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    proto.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))


def set_node_input(proto: onnx.ModelProto, node_name: str, index: int, tensor: str) -> None:
    node = next(n for n in proto.graph.node if n.name == node_name)
    while len(node.input) <= index:
        node.input.append("")
    node.input[index] = tensor


def add_after(proto: onnx.ModelProto, node_name: str, op_type: str, operand: str) -> None:
    """Insert `op_type(node's output 0, operand)` behind a node, keeping the output's name."""
    g = proto.graph
    pos, node = next((i, n) for i, n in enumerate(g.node) if n.name == node_name)
    out = node.output[0]
    node.output[0] = f"{out}__{op_type.lower()}_in"
    new = onnx.helper.make_node(op_type, [node.output[0], operand], [out], name=f"{node_name}__{op_type.lower()}")
    g.node.insert(pos + 1, new)


def reshare_clones(proto: onnx.ModelProto) -> None:
    """Point users of a load-time clone back at its original when neither was changed, and drop it,
    so that a pruned file shares its constants as the input did."""
    from .graph import CLONE_MARK

    g = proto.graph
    by_name = {t.name: t for t in g.initializer}
    alias: dict[str, str] = {}
    for t in g.initializer:
        if not t.doc_string.startswith(CLONE_MARK):
            continue
        original = by_name.get(t.doc_string[len(CLONE_MARK):])
        t.doc_string = ""
        if original is not None and _same_tensor(t, original):
            alias[t.name] = original.name
    if not alias:
        return
    for n in g.node:
        for i, name in enumerate(n.input):
            if name in alias:
                n.input[i] = alias[name]
    keep = [t for t in g.initializer if t.name not in alias]
    del g.initializer[:]
    g.initializer.extend(keep)


def _same_tensor(a: onnx.TensorProto, b: onnx.TensorProto) -> bool:
    return (a.data_type == b.data_type and list(a.dims) == list(b.dims)
            and np.array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b)))


def as_identity(proto: onnx.ModelProto, node_indices: list[int]) -> onnx.ModelProto:
    """Copy of `proto` whose listed nodes are Identity of their input 0 (attributes and other inputs
    dropped); value_info of their outputs is dropped, since the element type may change."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    changed: set[str] = set()
    for i in node_indices:
        node = model.graph.node[i]
        node.op_type, node.domain = "Identity", ""
        del node.input[1:], node.output[1:], node.attribute[:]
        changed.update(node.output)
    kept = [vi for vi in model.graph.value_info if vi.name not in changed]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    return model
