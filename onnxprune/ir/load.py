"""Read a model file and normalise it: constants as initializers, private small constants, named nodes."""
from __future__ import annotations

import heapq
import os

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import ModelLoadError
from .. import readahead
from . import external, integrity, limits, scopes
from .edit import tensors_read
from .graph import CLONE_MARK, Graph, _outer_scope_names, numel
from .shapes import infer_shapes

# ONNX Runtime's hardware-specific blocked layout (ORT_ENABLE_ALL on x86): refused at load
NCHWC_DOMAIN = "com.microsoft.nchwc"


def load(path: str | os.PathLike, input_shapes: dict[str, tuple[int, ...]] | None = None) -> Graph:
    """Load a model (external data left on disk, read when used), normalise it and infer static shapes."""
    proto = read_model(path)
    normalise(proto)
    shapes = infer_shapes(proto, input_shapes or {})
    return Graph(proto, shapes)


def _parse(path: str) -> onnx.ModelProto:
    try:
        return onnx.load(path, load_external_data=False)  # external data: checked by external.resolve
    except MemoryError:
        raise ModelLoadError(f"'{path}' does not fit in memory") from None
    except Exception as exc:  # protobuf raises several unrelated types
        raise ModelLoadError(f"cannot read '{path}' as an ONNX model: {integrity.one_line(exc)}") from None


def read_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read a model file and check it: text, tensors, external data, opset, onnx.checker. External
    tensors stay in their files (ir.external), by absolute location.

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
    blocked = next((n for n in proto.graph.node if n.domain == NCHWC_DOMAIN), None)
    if blocked is not None:
        raise ModelLoadError(
            f"'{path}' is in ONNX Runtime's blocked NCHWc layout ({blocked.op_type} node '{blocked.name}', domain "
            f"'{NCHWC_DOMAIN}'), which ORT_ENABLE_ALL saves for one CPU's vector width: prune the original "
            "model, or one saved at ORT_ENABLE_EXTENDED")
    data_files = external.resolve(proto, path)  # external data present, inside the model's folder, long enough
    readahead.start(data_files)  # into the page cache while the graph is analysed
    integrity.check_tensors(proto, path)
    integrity.check_opset_and_schema(proto, path)
    return integrity.upgraded(proto, path)


def normalise(proto: onnx.ModelProto) -> None:
    """Make constants uniform: initializers are no graph inputs (IR 4), Constant nodes and
    Identity-of-constant become initializers, small shared constants are cloned per consumer,
    and every node gets a unique name."""
    g = proto.graph
    _initializers_not_inputs(proto)
    _sort_nodes(g)
    _constants_to_initializers(g)
    _bypass_constant_identities(g)
    _privatise_small_constants(g)
    _name_nodes(g)
    scopes.normalise_bodies(proto, _constants_to_initializers)
    # exporters share one shape constant among all layers' Reshapes inside a branch too
    bodies = [body for _, body in list(scopes.walk(g))[1:]]
    taken = set().union(*(scopes.defined(b) for b in [g, *bodies]))
    for body in bodies:
        _privatise_small_constants(body, taken)


def _sort_nodes(g: onnx.GraphProto) -> None:
    """Put the nodes in topological order, keeping the given order where it already is one: ONNX
    requires it and ONNX Runtime does not, so some tools (onnxruntime.transformers' float16
    converter) write graphs that run but fail the checker."""
    available = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    produced = {o for n in g.node for o in n.output}
    reads = [{x for x in tensors_read(n) if x in produced} for n in g.node]  # bodies' outer-scope reads too
    if _in_order(g.node, reads):
        return
    # Kahn's algorithm, taking the earliest ready node first so that sorted stretches stay as they are
    nodes = list(g.node)
    waiting: dict[str, list[int]] = {}
    missing = []
    for i in range(len(nodes)):
        needed = reads[i] - available
        missing.append(len(needed))
        for x in needed:
            waiting.setdefault(x, []).append(i)
    ready = [i for i, m in enumerate(missing) if m == 0]
    heapq.heapify(ready)
    order: list[onnx.NodeProto] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i])
        for out in nodes[i].output:
            for j in waiting.pop(out, ()):
                missing[j] -= 1
                if missing[j] == 0:
                    heapq.heappush(ready, j)
    if len(order) != len(nodes):
        return  # a cycle or a missing tensor: leave the order alone for the checker to report
    del g.node[:]
    g.node.extend(order)


def _in_order(nodes, reads: list[set[str]]) -> bool:
    done: set[str] = set()
    for n, needed in zip(nodes, reads):
        if not needed <= done:
            return False
        done.update(n.output)
    return True


def _initializers_not_inputs(proto: onnx.ModelProto) -> None:
    """Drop the graph inputs that name initializers and raise IR 3 to IR 4.

    IR 3 wants every initializer listed as a graph input too (IR 4 lets them be overridable
    inputs). Pruning rewrites initializers' shapes and folding adds and removes initializers: an
    input list kept beside them goes stale (wrong shapes, inputs without a value). IR 4 only lifts
    that requirement, so the model computes the same on every feed of its true inputs.
    """
    g = proto.graph
    inits = {t.name for t in g.initializer}
    if any(i.name in inits for i in g.input):
        keep = [i for i in g.input if i.name not in inits]
        del g.input[:]
        g.input.extend(keep)
    if proto.ir_version < 4:
        proto.ir_version = 4


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
    # bodies of If / Loop / Scan read the Identity's output by name: it stays for them
    inner = set().union(*(_outer_scope_names(n, decoded=False) for n in g.node if _has_subgraph(n)))
    alias: dict[str, str] = {}
    keep = []
    for n in g.node:
        if (n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs
                and n.output[0] not in inner):
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


def _has_subgraph(n: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute)


def _privatise_small_constants(g: onnx.GraphProto, taken: set[str] | None = None) -> None:
    """Give every further reader of a small initializer of `g` a clone of its own; `taken`: names
    in use (the graph's own by default; the whole model's for a body, whose names must be unique)."""
    small = {t.name: t for t in g.initializer if numel(t.dims) <= limits.PRIVATE_CONSTANT_MAX}
    outputs = {o.name for o in g.output}
    seen: dict[str, int] = {}
    if taken is None:
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
