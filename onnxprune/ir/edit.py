"""Editing helpers for the modules that build new models (apply, fold, compensate)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from . import external, scopes


class Kept:
    """The kept indices of each cut axis (axis -> indices) of an initializer whose data stays in its
    external file until the model is written (ir.external.pending)."""

    def __init__(self, indices: dict[int, np.ndarray]) -> None:
        self.indices = indices


def copy_model(proto: onnx.ModelProto, new_values: dict[str, np.ndarray | Kept] | None = None) -> onnx.ModelProto:
    """A copy of `proto` whose initializers named in `new_values` hold those values instead (a `Kept`:
    that cut of the external original, pending).

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
            _fill(out.graph.initializer.add(), t.name, new_values[t.name], t)
        else:
            out.graph.initializer.add().CopyFrom(t)
    for _, body in list(scopes.walk(out.graph))[1:]:  # weights living inside If / Loop / Scan bodies
        for t in body.initializer:
            if t.name in new_values:
                name, source = t.name, onnx.TensorProto()
                source.CopyFrom(t)  # small: a body's weight is cut from this copy of it
                t.Clear()
                _fill(t, name, new_values[name], source)
    return out


def _fill(tensor: onnx.TensorProto, name: str, value: np.ndarray | Kept, source: onnx.TensorProto) -> None:
    """Write `value` into a fresh initializer in place (appending a built TensorProto copies it again)."""
    if isinstance(value, Kept):
        external.pending(tensor, source, value.indices)
        return
    value = np.asarray(value)
    if value.dtype.byteorder == ">" or value.dtype == object or value.dtype.kind in "USO":
        tensor.CopyFrom(numpy_helper.from_array(value, name))  # rare: let onnx handle the layout
        return
    tensor.name = name
    tensor.data_type = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
    tensor.dims.extend(value.shape)
    tensor.raw_data = np.ascontiguousarray(value).tobytes()


def _copy_fields(src, dst, skip: str | tuple[str, ...]) -> None:
    skipped = (skip,) if isinstance(skip, str) else skip
    for field_desc, value in src.ListFields():
        if field_desc.name in skipped:
            continue
        if hasattr(value, "extend"):  # repeated field (descriptor APIs differ across protobuf versions)
            getattr(dst, field_desc.name).extend(value)
        elif hasattr(value, "CopyFrom"):
            getattr(dst, field_desc.name).CopyFrom(value)
        else:
            setattr(dst, field_desc.name, value)


def overwrite(proto: onnx.ModelProto, source: onnx.ModelProto) -> None:
    """Make `proto` (in place) a copy of `source`: for a caller holding `proto` that chose another model."""
    proto.CopyFrom(source)


def set_initializer(proto: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    for t in proto.graph.initializer:
        if t.name == name:
            new = numpy_helper.from_array(np.ascontiguousarray(value), name)
            t.CopyFrom(new)
            return
    raise KeyError(name)


def initializer_map(proto: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Every initializer by name, those of subgraph bodies included."""
    return {t.name: t for _, g in scopes.walk(proto.graph) for t in g.initializer}


def replace_initializer(tensor: onnx.TensorProto, value: np.ndarray) -> None:
    tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), tensor.name))


def to_array(tensor: onnx.TensorProto) -> np.ndarray:
    """The tensor's value; an external tensor's is read from its file (memory-mapped when untouched)."""
    if external.is_external(tensor):
        return external.read(tensor)
    return numpy_helper.to_array(tensor)


def set_node_attr(proto: onnx.ModelProto, node_index: int, name: str, value: Any, scope: tuple = ()) -> None:
    """Set attribute `name` of node `node_index` of the graph at `scope` (default: top level)."""
    node = scopes.resolve(proto.graph, scope).node[node_index]
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(onnx.helper.make_attribute(name, value))


def get_node_attr(proto: onnx.ModelProto, node_index: int, name: str, default: Any = None,
                  scope: tuple = ()) -> Any:
    for a in scopes.resolve(proto.graph, scope).node[node_index].attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return list(value) if a.ints or a.floats else value
    return default


def set_value_dims(proto: onnx.ModelProto, name_to_dims: dict[str, dict[int, int]]) -> None:
    """Set dims of value_info / graph outputs for the given tensors (axis -> new size), in every
    body too (a body declares its inputs' and outputs' shapes)."""
    annotations = [vi for _, g in scopes.walk(proto.graph)
                   for vi in list(g.value_info) + list(g.output) + list(g.input)]
    for vi in annotations:
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
    fold_in_graph(out, (), values, derived)
    return out


def fold_in_graph(proto: onnx.ModelProto, scope: tuple, values: dict[str, np.ndarray], derived: set[str]) -> None:
    """In place, in the graph at `scope` (a body, or () for the top level): `values` become its
    initializers and its nodes producing only folded or now-unused derived tensors are dropped."""
    g = scopes.resolve(proto.graph, scope)
    for name, value in values.items():
        g.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    needed = {o.name for o in g.output}
    keep: list[onnx.NodeProto] = []
    for n in reversed(g.node):
        outputs = [o for o in n.output if o]
        if all(o in derived and (o in values or o not in needed) for o in outputs):
            continue
        keep.append(n)
        needed.update(tensors_read(n))
    del g.node[:]
    g.node.extend(reversed(keep))
    used = {i for n in g.node for i in tensors_read(n)} | {o.name for o in g.output}
    unused = [t for t in g.initializer if t.name not in used]
    for t in unused:
        g.initializer.remove(t)
    vi_keep = [v for v in g.value_info if v.name not in values]
    del g.value_info[:]
    g.value_info.extend(vi_keep)


def probe_model(proto: onnx.ModelProto, scope: tuple, nodes: list[int], inputs: dict[str, tuple],
                outputs: list[str]) -> onnx.ModelProto:
    """A stand-alone model of the nodes at positions `nodes` of the graph at `scope`: float graph
    inputs of the given static shapes, every initializer they read (from any scope), `outputs`."""
    g = scopes.resolve(proto.graph, scope)
    picked = [g.node[i] for i in nodes]
    inits = initializer_map(proto)
    reads = {x for n in picked for x in tensors_read(n)}
    graph = onnx.helper.make_graph(
        picked, "probe",
        [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, list(d)) for n, d in inputs.items()],
        [onnx.ValueInfoProto(name=n) for n in outputs],
        [inits[n] for n in sorted(reads) if n in inits and n not in inputs])
    model = onnx.helper.make_model(graph, opset_imports=list(proto.opset_import))
    model.ir_version = proto.ir_version
    model.functions.extend(proto.functions)
    return model


def tensors_read(node: onnx.NodeProto) -> set[str]:
    """Every tensor of the enclosing graph a node reads: its inputs and, for If / Loop / Scan, the
    outer-scope names its bodies use (at any depth)."""
    from .graph import _outer_scope_names

    names = {i for i in node.input if i}
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        names |= _outer_scope_names(node, decoded=False)
    return names


# -- calibration and compensation helpers -----------------------------------

def with_outputs(proto: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy whose graph outputs are exactly `names` (intermediate tensors exposed for statistics)."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    del out.graph.output[:]
    out.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    return out


def needed_for(proto: onnx.ModelProto, names: list[str], inputs: bool = True) -> onnx.ModelProto:
    """A model computing only `names` (its outputs): the top-level nodes they depend on and the
    initializers those read; every graph input stays (none when not `inputs`: `names` depend on
    constants only). Evaluating a few shape tensors of a 7B decoder so reads none of its weights."""
    g = proto.graph
    needed, kept = set(names), []
    for n in reversed(g.node):  # topological order (load sorts it): readers come after producers
        if any(o in needed for o in n.output):
            kept.append(n)
            needed.update(tensors_read(n))
    out = onnx.ModelProto()
    _copy_fields(proto, out, skip="graph")
    _copy_fields(g, out.graph, skip=("node", "initializer", "output", "value_info"))
    out.graph.node.extend(reversed(kept))
    out.graph.initializer.extend(t for t in g.initializer if t.name in needed)
    out.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    if not inputs:
        del out.graph.input[:]
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
    so that a pruned file shares its constants as the input did (in every body too)."""
    for _, g in scopes.walk(proto.graph):
        _reshare_in(g)


def _reshare_in(g: onnx.GraphProto) -> None:
    from .graph import CLONE_MARK

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
            and np.array_equal(to_array(a), to_array(b)))


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


@dataclass
class Segment:
    """What `segment` found: the model to run (None: every output is available already), how many
    nodes it runs, every tensor those nodes produce and read (initializers included), and which
    available or produced tensors the `later` outputs still need."""

    model: onnx.ModelProto | None
    nodes: int
    produced: set[str]
    reads: set[str]
    live: set[str]


def segment(proto: onnx.ModelProto, outputs: list[str], available: dict[str, tuple[np.dtype, int]],
            later: list[str] | tuple = ()) -> Segment:
    """A model computing `outputs` from the `available` tensors (name -> (dtype, rank), values computed
    earlier), which become its graph inputs, and the original graph inputs: only the top-level nodes not
    computable from available tensors, and the initializers they read. Its graph outputs are `outputs`
    and the tensors it produces that the nodes computing `later` would read (`live`, which also names
    the available tensors `later` still needs), so that a caller running target after target runs each
    node once. Tensors read from an outer scope by If / Loop / Scan bodies count as read (tensors_read):
    an available one a body reads is a graph input, which the body sees."""
    g = proto.graph
    graph_inputs = {i.name: i for i in g.input}
    reads_of: dict[int, set[str]] = {}

    def reads(i: int, n: onnx.NodeProto) -> set[str]:
        if i not in reads_of:
            reads_of[i] = tensors_read(n)
        return reads_of[i]

    needed = {o for o in outputs if o not in available and o not in graph_inputs}
    kept: list[int] = []
    for i in range(len(g.node) - 1, -1, -1):  # topological order (load sorts it): readers after producers
        n = g.node[i]
        if any(o in needed for o in n.output if o):
            kept.append(i)
            needed.update(r for r in reads(i, n) if r not in available)
    kept.reverse()
    produced = {o for i in kept for o in g.node[i].output if o}
    read = set().union(*(reads(i, g.node[i]) for i in kept)) if kept else set()

    stop = set(available) | produced  # what the nodes for `later` read instead of computing it again
    live = {t for t in later if t in stop}
    want = {t for t in later if t not in stop}
    for i in range(len(g.node) - 1, -1, -1):
        n = g.node[i]
        if any(o in want for o in n.output if o):
            for r in reads(i, n):
                (live if r in stop else want).add(r)

    wanted = [o for o in dict.fromkeys(outputs) if o not in available and o not in graph_inputs]
    if not wanted:
        return Segment(None, 0, produced, read, live)
    exposed = wanted + sorted((produced & live) - set(wanted))
    fed = sorted(r for r in read if r in available)
    out = onnx.ModelProto()
    _copy_fields(proto, out, skip="graph")
    _copy_fields(g, out.graph, skip=("node", "initializer", "input", "output", "value_info"))
    out.graph.node.extend(g.node[i] for i in kept)
    # no shape: a cached tensor's batch dimension is whatever the batch is (the last may be short)
    out.graph.input.extend(
        onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(available[n][0])),
                                           [None] * available[n][1]) for n in fed)
    out.graph.input.extend(graph_inputs[n] for n in sorted(read) if n in graph_inputs)
    out.graph.initializer.extend(t for t in g.initializer if t.name in read or t.name in wanted)
    out.graph.output.extend(onnx.ValueInfoProto(name=n) for n in exposed)
    return Segment(out, len(kept), produced, read, live)
