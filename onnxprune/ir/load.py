"""Read a model file and normalise it: constants as initializers, private small constants, named nodes."""
from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import ModelLoadError
from . import integrity, limits
from .graph import CLONE_MARK, Graph, numel
from .shapes import infer_shapes


def load(path: str | os.PathLike, input_shapes: dict[str, tuple[int, ...]] | None = None) -> Graph:
    """Load a model (external data included), normalise it and infer static shapes."""
    proto = read_model(path)
    normalise(proto)
    shapes = infer_shapes(proto, input_shapes or {})
    return Graph(proto, shapes)


def _parse(path: str) -> onnx.ModelProto:
    try:
        return onnx.load(path, load_external_data=True)
    except FileNotFoundError as exc:  # external data named by the model
        raise ModelLoadError(f"'{path}' names external data '{exc.filename}' that does not exist") from None
    except IsADirectoryError as exc:
        raise ModelLoadError(f"'{path}' names external data '{exc.filename}', which is a directory") from None
    except MemoryError:
        raise ModelLoadError(f"'{path}' does not fit in memory") from None
    except Exception as exc:  # protobuf and the external-data loader raise several unrelated types
        raise ModelLoadError(f"cannot read '{path}' as an ONNX model: {integrity.one_line(exc)}") from None


def read_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read a model file (external data included) and check it: text, tensors, opset, onnx.checker.

    Opset 7 and 8 models are upgraded to opset 9; IR version 3 models (initializers listed as graph
    inputs) are lifted to IR version 4. Raises ModelLoadError naming the file and the problem.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ModelLoadError(f"model path '{path}' is a directory, not an .onnx file")
    if not os.path.isfile(path):
        raise ModelLoadError(f"model file '{path}' does not exist" if not os.path.exists(path) else
                             f"model path '{path}' is not a regular file")
    proto = _parse(path)
    integrity.check_text(proto, path)
    if not proto.graph.node:
        raise ModelLoadError(f"'{path}' holds no graph nodes; is it an ONNX model?")
    for t in proto.graph.initializer:
        if t.doc_string == "onnxprune-zoo:stripped":
            raise ModelLoadError(f"initializer '{t.name}' in '{path}' has its data stripped; fill it first (see the zoo README)")
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise ModelLoadError(f"external data of initializer '{t.name}' could not be loaded from beside '{path}'")
    integrity.check_tensors(proto, path)
    integrity.check_opset_and_schema(proto, path)
    return integrity.upgraded(proto, path)


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
    small = {t.name: t for t in g.initializer if numel(t.dims) <= limits.PRIVATE_CONSTANT_MAX}
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
            clone.doc_string = CLONE_MARK + name  # edit.reshare_clones undoes clones nothing cut
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
