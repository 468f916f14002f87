"""The only module that touches protobuf: load, normalise, infer shapes, save.

`Graph` is a read-only view of a model for the analysis: nodes with decoded
attributes, producer/consumer links, constant values (decoded lazily) and
static shapes. Mutation goes through `apply.py`, which edits a copy of
`Graph.proto` with the helpers at the bottom of this module.
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import onnx
from onnx import external_data_helper, numpy_helper

from .errors import BadInputError, ModelLoadError

log = logging.getLogger(__name__)

MIN_OPSET = 9
# Protobuf cannot serialise a message of 2 GiB; stay clear of it.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
# Initializers at most this big are cloned per consumer, so that editing one
# consumer's shape constant never changes another's, and a constant an
# exporter shares between layers (one all-zero folded bias for 26 convs) does
# not couple their channels. Larger shared weights (tied embeddings) stay
# shared; the dependency graph cuts them only when every user agrees.
PRIVATE_CONSTANT_MAX = 1 << 16
# Initializers larger than this become plain inputs of the shape-inference
# skeleton: their values are never needed to infer shapes.
SKELETON_CONSTANT_MAX = 4096

Shape = tuple  # of int | None


@dataclass
class Node:
    """One ONNX node with decoded attributes."""

    name: str
    op_type: str
    domain: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    index: int = 0
    has_subgraph: bool = False

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def input(self, i: int) -> str:
        """Name of input i, or '' when absent (optional inputs)."""
        return self.inputs[i] if i < len(self.inputs) else ""

    def output(self, i: int) -> str:
        return self.outputs[i] if i < len(self.outputs) else ""

    def __str__(self) -> str:
        return f"{self.op_type} node '{self.name}'"


class Graph:
    """Read-only analysis view of an ONNX model."""

    def __init__(self, proto: onnx.ModelProto, shapes: dict[str, Shape]):
        self.proto = proto
        self.opset = opset_of(proto)
        g = proto.graph
        self.initializers: dict[str, onnx.TensorProto] = {t.name: t for t in g.initializer}
        self.graph_inputs = [i.name for i in g.input if i.name not in self.initializers]
        self.graph_outputs = [o.name for o in g.output]
        self._output_set = set(self.graph_outputs)
        self._input_set = set(self.graph_inputs)
        self.nodes: list[Node] = [_decode_node(n, i) for i, n in enumerate(g.node)]
        self.producers: dict[str, Node] = {}
        self.consumer_map: dict[str, list[tuple[Node, int]]] = {}
        for node in self.nodes:
            for o in node.outputs:
                if o:
                    self.producers[o] = node
            for i, name in enumerate(node.inputs):
                if name:
                    self.consumer_map.setdefault(name, []).append((node, i))
            if node.has_subgraph:
                for name in _outer_scope_names(g.node[node.index]):
                    self.consumer_map.setdefault(name, []).append((node, -1))
        self.shapes = shapes
        self._const_cache: dict[str, np.ndarray] = {}
        self.virtual_sizes: dict[str, int] = {}

    # -- constants -------------------------------------------------------
    def is_const(self, name: str) -> bool:
        return name in self.initializers

    def const(self, name: str) -> np.ndarray | None:
        """Value of an initializer as numpy (cached), or None if `name` is not constant."""
        if name not in self.initializers:
            return None
        if name not in self._const_cache:
            self._const_cache[name] = numpy_helper.to_array(self.initializers[name])
        return self._const_cache[name]

    def const_shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self.initializers[name].dims)

    def const_users(self, name: str) -> int:
        return len(self.consumer_map.get(name, ()))

    # -- structure -------------------------------------------------------
    def producer(self, name: str) -> Node | None:
        return self.producers.get(name)

    def consumers(self, name: str) -> list[tuple[Node, int]]:
        return self.consumer_map.get(name, [])

    def is_graph_output(self, name: str) -> bool:
        return name in self._output_set

    def is_graph_input(self, name: str) -> bool:
        return name in self._input_set

    def shape(self, name: str) -> Shape | None:
        """Static shape of a tensor (None entries for unknown dims), or None if unknown."""
        if name in self.virtual_sizes:
            return (self.virtual_sizes[name],)
        if name in self.initializers:
            return self.const_shape(name)
        return self.shapes.get(name)

    def dim(self, name: str, axis: int) -> int | None:
        shape = self.shape(name)
        if shape is None or not -len(shape) <= axis < len(shape):
            return None
        return shape[axis]

    def rank(self, name: str) -> int | None:
        shape = self.shape(name)
        return None if shape is None else len(shape)


def opset_of(proto: onnx.ModelProto) -> int:
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def _decode_node(n: onnx.NodeProto, index: int) -> Node:
    attrs: dict[str, Any] = {}
    has_subgraph = False
    for a in n.attribute:
        if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            has_subgraph = True
            continue
        value = onnx.helper.get_attribute_value(a)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode("utf-8", "replace") for v in value]
        attrs[a.name] = value
    return Node(n.name, n.op_type, n.domain, list(n.input), list(n.output), attrs, index, has_subgraph)


def _outer_scope_names(node: onnx.NodeProto) -> set[str]:
    """Tensor names a control-flow node's subgraphs read from the enclosing graph."""
    names: set[str] = set()
    for a in node.attribute:
        graphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
        for sub in graphs:
            defined = {i.name for i in sub.input} | {t.name for t in sub.initializer}
            for sn in sub.node:
                defined.update(sn.output)
            for sn in sub.node:
                names.update(i for i in sn.input if i and i not in defined)
                names.update(_outer_scope_names(sn) - defined)
    return names


# -- loading ---------------------------------------------------------------

def load(path: str | os.PathLike, input_shapes: dict[str, tuple[int, ...]] | None = None) -> Graph:
    """Load a model (external data included), normalise it and infer static shapes."""
    proto = read_model(path)
    normalise(proto)
    shapes = infer_shapes(proto, input_shapes or {})
    return Graph(proto, shapes)


def read_model(path: str | os.PathLike) -> onnx.ModelProto:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelLoadError(f"model file '{path}' does not exist")
    try:
        proto = onnx.load(path, load_external_data=True)
    except Exception as exc:  # protobuf raises several unrelated types
        raise ModelLoadError(f"cannot read '{path}' as an ONNX model: {exc}") from None
    if not proto.graph.node:
        raise ModelLoadError(f"'{path}' holds no graph nodes; is it an ONNX model?")
    opset = opset_of(proto)
    if opset < MIN_OPSET:
        raise ModelLoadError(f"'{path}' uses opset {opset}; onnxprune needs opset {MIN_OPSET} or newer")
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise ModelLoadError(f"external data of initializer '{t.name}' could not be loaded from beside '{path}'")
        if t.doc_string == "onnxprune-zoo:stripped":
            raise ModelLoadError(f"initializer '{t.name}' in '{path}' has its data stripped; fill it first (see the zoo README)")
    return proto


def normalise(proto: onnx.ModelProto) -> None:
    """Make constants uniform: Constant nodes and Identity-of-constant become initializers,
    small shared constants are cloned per consumer, and every node gets a unique name."""
    g = proto.graph
    _constants_to_initializers(g)
    _bypass_constant_identities(g)
    _privatise_small_constants(g)
    _name_nodes(g)


def _constants_to_initializers(g: onnx.GraphProto) -> None:
    outputs = {o.name for o in g.output}
    keep = []
    for n in g.node:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and n.output[0] not in outputs:
            tensor = _constant_value(n)
            if tensor is not None:
                tensor.name = n.output[0]
                g.initializer.append(tensor)
                continue
        keep.append(n)
    if len(keep) != len(g.node):
        del g.node[:]
        g.node.extend(keep)


def _constant_value(n: onnx.NodeProto) -> onnx.TensorProto | None:
    for a in n.attribute:
        if a.name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(a.t)
            return t
        if a.name == "value_float":
            return numpy_helper.from_array(np.array(a.f, dtype=np.float32))
        if a.name == "value_floats":
            return numpy_helper.from_array(np.array(list(a.floats), dtype=np.float32))
        if a.name == "value_int":
            return numpy_helper.from_array(np.array(a.i, dtype=np.int64))
        if a.name == "value_ints":
            return numpy_helper.from_array(np.array(list(a.ints), dtype=np.int64))
    return None


def _bypass_constant_identities(g: onnx.GraphProto) -> None:
    inits = {t.name for t in g.initializer}
    outputs = {o.name for o in g.output}
    alias: dict[str, str] = {}
    keep = []
    for n in g.node:
        if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs:
            alias[n.output[0]] = alias.get(n.input[0], n.input[0])
            continue
        keep.append(n)
    if not alias:
        return
    del g.node[:]
    g.node.extend(keep)
    for n in g.node:
        for i, name in enumerate(n.input):
            if name in alias:
                n.input[i] = alias[name]


def _privatise_small_constants(g: onnx.GraphProto) -> None:
    small = {t.name: t for t in g.initializer if _numel(t.dims) <= PRIVATE_CONSTANT_MAX}
    outputs = {o.name for o in g.output}
    seen: dict[str, int] = {}
    taken = {t.name for t in g.initializer} | {o for n in g.node for o in n.output}
    for n in g.node:
        for i, name in enumerate(n.input):
            if name not in small or name in outputs:
                continue
            count = seen.get(name, 0)
            seen[name] = count + 1
            if count == 0:
                continue
            clone = onnx.TensorProto()
            clone.CopyFrom(small[name])
            new_name = f"{name}__{count}"
            while new_name in taken:
                new_name += "_"
            clone.name = new_name
            taken.add(new_name)
            g.initializer.append(clone)
            n.input[i] = new_name


def _name_nodes(g: onnx.GraphProto) -> None:
    used: set[str] = set()
    for i, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{i}"
        while name in used:
            name = f"{name}_{i}"
        n.name = name
        used.add(name)


def _numel(dims: Iterable[int]) -> int:
    return int(np.prod(list(dims), dtype=np.int64)) if len(list(dims)) else 1


# -- shapes ----------------------------------------------------------------

def infer_shapes(proto: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]]) -> dict[str, Shape]:
    """Static shapes of every tensor, inferred on a weight-less skeleton of the model."""
    skeleton = _skeleton(proto, input_shapes)
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton, strict_mode=False, data_prop=True)
    except Exception as exc:  # inference is best effort: unknown shapes freeze channels later
        log.warning("ONNX shape inference failed (%s); continuing with declared shapes", exc)
        inferred = skeleton
    shapes: dict[str, Shape] = {}
    g = inferred.graph
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            dims = tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in tt.shape.dim)
            if vi.name not in shapes or None not in dims:
                shapes[vi.name] = dims
    return shapes


def _skeleton(proto: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    skel = onnx.ModelProto()
    skel.ir_version = proto.ir_version
    skel.opset_import.extend(proto.opset_import)
    skel.functions.extend(proto.functions)
    src, g = proto.graph, skel.graph
    g.name = src.name
    g.node.extend(src.node)
    g.output.extend(src.output)
    init_names = {t.name for t in src.initializer}
    known = {i.name for i in src.input}
    unknown = set(input_shapes) - known
    if unknown:
        raise BadInputError(f"--input-shape names {sorted(unknown)}, but the model's inputs are {sorted(known - init_names)}")
    for inp in src.input:
        vi = g.input.add()
        vi.CopyFrom(inp)
        if inp.name in input_shapes:
            _set_dims(vi, input_shapes[inp.name])
    for t in src.initializer:
        if _numel(t.dims) > SKELETON_CONSTANT_MAX:
            if t.name not in known:
                g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            g.initializer.append(t)
    return skel


def _set_dims(vi: onnx.ValueInfoProto, dims: tuple[int, ...]) -> None:
    shape = vi.type.tensor_type.shape
    if len(shape.dim) and len(shape.dim) != len(dims):
        raise BadInputError(
            f"--input-shape for '{vi.name}' has {len(dims)} dims, but the model declares rank {len(shape.dim)}")
    del shape.dim[:]
    for d in dims:
        shape.dim.add().dim_value = int(d)


def input_specs(proto: onnx.ModelProto) -> list[tuple[str, int, tuple]]:
    """(name, onnx elem type, dims with None/str for dynamic) of every true graph input."""
    inits = {t.name for t in proto.graph.initializer}
    specs = []
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)
        specs.append((vi.name, tt.elem_type, dims))
    return specs


# -- editing helpers (used by apply.py only) -------------------------------

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
            out.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(new_values[t.name]), t.name))
        else:
            out.graph.initializer.add().CopyFrom(t)
    return out


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


# -- saving ----------------------------------------------------------------

def save(proto: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write atomically; models too large for one protobuf get an external data file beside them."""
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    external = proto.ByteSize() > EXTERNAL_DATA_THRESHOLD
    tmp_dir = tempfile.mkdtemp(prefix=".onnxprune-", dir=directory)
    try:
        base = os.path.basename(path)
        tmp_model = os.path.join(tmp_dir, base)
        if external:
            data_name = base + ".data"
            onnx.save_model(proto, tmp_model, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
            # save_model moved the tensors' bytes out of `proto`; read them back so the caller's model
            # is unchanged (no second in-memory copy of a model this large)
            external_data_helper.load_external_data_for_model(proto, tmp_dir)
            if os.path.exists(os.path.join(tmp_dir, data_name)):  # absent when every tensor is small
                os.replace(os.path.join(tmp_dir, data_name), os.path.join(directory, data_name))
        else:
            onnx.save_model(proto, tmp_model)
        os.replace(tmp_model, path)
    finally:
        for leftover in os.listdir(tmp_dir):
            os.unlink(os.path.join(tmp_dir, leftover))
        os.rmdir(tmp_dir)


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
