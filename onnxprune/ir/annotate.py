"""Shape annotations (value_info, declared output and initializer-input shapes) after an edit.

Exporters (the dynamo exporter, onnxsim, ORT) annotate tensors with their shapes. A cut
changes the shapes of the weights it cuts and of everything computed from them, so every
annotation of such a tensor is replaced by what ONNX shape inference finds for the edited
model, or dropped where inference finds nothing: a stale annotation makes `onnx.checker`
and some runtimes reject a model that is otherwise right.
"""
from __future__ import annotations

import logging
from typing import Iterable

import onnx

from . import limits, scopes
from .graph import Shape, numel

log = logging.getLogger(__name__)


def downstream(proto: onnx.ModelProto, seeds: Iterable[str], nodes: Iterable[int | str] = ()) -> set[str]:
    """Every tensor name computed from `seeds` or by the given nodes (top-level indices or node
    names), inside If / Loop / Scan bodies too (topological order)."""
    reached = set(seeds)
    _reach(proto.graph, reached, set(nodes), True)
    return reached


def _reach(g: onnx.GraphProto, reached: set[str], changed: set, top: bool) -> bool:
    """Extend `reached` through the nodes of `g`; True when it reached something in `g`."""
    found = False
    for i, n in enumerate(g.node):
        hit = n.name in changed or (top and i in changed) or any(name in reached for name in n.input if name)
        for _, body in scopes.bodies(n):
            if hit:  # a changed input changes what the body receives
                reached.update(vi.name for vi in body.input)
            hit = _reach(body, reached, changed, False) or hit
        if hit:
            reached.update(o for o in n.output if o)
            found = True
    return found or any(vi.name in reached for vi in g.output)


def refresh(proto: onnx.ModelProto, touched: set[str]) -> dict[str, Shape]:
    """Replace (in place) the annotations of `touched` tensors by freshly inferred ones.

    value_info entries are replaced by the inferred entry or dropped; graph outputs keep
    their declared dims except where inference disagrees; graph inputs that declare an
    initializer (IR version 3) take the initializer's dims. Returns the inferred shapes
    (None for a dim inference leaves open), for the caller's postcondition.
    """
    g = proto.graph
    inferred, inferred_graph = _inferred_value_info(proto)
    inits = {t.name: t for t in g.initializer}
    changed = _refresh_graph(g, inferred, touched, inits)
    for inp in g.input:
        if inp.name in inits:
            changed += _set_dims(inp, inits[inp.name].dims)
    changed += _refresh_bodies(proto, inferred_graph, touched)
    log.debug("refreshed %d shape annotations", changed)
    return {name: _dims(vi) for name, vi in inferred.items() if vi.type.tensor_type.HasField("shape")}


def _refresh_bodies(proto: onnx.ModelProto, inferred: onnx.GraphProto | None, touched: set[str]) -> int:
    """The annotations of touched tensors inside If / Loop / Scan bodies (value_info and the shapes
    a body declares for its outputs), from the inferred copy of the model."""
    changed = 0
    for scope, body in list(scopes.walk(proto.graph))[1:]:
        found = scopes.resolve(inferred, scope) if inferred is not None else None
        fresh = {vi.name: vi for vi in list(found.value_info) + list(found.output)} if found is not None else {}
        changed += _refresh_graph(body, fresh, touched, {t.name: t for t in body.initializer})
    return changed


def _refresh_graph(g: onnx.GraphProto, fresh: dict[str, onnx.ValueInfoProto], touched: set[str],
                   inits: dict[str, onnx.TensorProto]) -> int:
    """One graph's value_info and declared output shapes: an annotated weight takes its own dims,
    a touched tensor the freshly inferred entry (or none)."""
    changed = 0
    keep = []
    for vi in g.value_info:
        if vi.name in inits:
            changed += _set_dims(vi, inits[vi.name].dims)
            keep.append(vi)
        elif vi.name not in touched:
            keep.append(vi)
        else:
            changed += 1
            if vi.name in fresh:
                keep.append(fresh[vi.name])
    del g.value_info[:]
    g.value_info.extend(keep)
    for out in g.output:
        if out.name in touched and out.name in fresh:
            changed += _take_dims(out, fresh[out.name])
    return changed


def _dims(vi: onnx.ValueInfoProto) -> Shape:
    return tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim)


def _set_dims(vi: onnx.ValueInfoProto, dims) -> int:
    """Declare exactly `dims` on an annotation that has a shape; 1 when that changed it."""
    if not vi.type.tensor_type.HasField("shape"):
        return 0
    shape = vi.type.tensor_type.shape
    if [d.dim_value if d.HasField("dim_value") else None for d in shape.dim] == list(dims):
        return 0
    del shape.dim[:]
    for d in dims:
        shape.dim.add().dim_value = int(d)
    return 1


def _take_dims(target: onnx.ValueInfoProto, source: onnx.ValueInfoProto) -> int:
    """Set target's dims to source's where source knows a size and target says otherwise."""
    t_shape, s_shape = target.type.tensor_type.shape, source.type.tensor_type.shape
    if not target.type.tensor_type.HasField("shape") or not source.type.tensor_type.HasField("shape"):
        return 0
    if len(t_shape.dim) != len(s_shape.dim):
        del t_shape.dim[:]
        t_shape.dim.extend(s_shape.dim)
        return 1
    changed = 0
    for td, sd in zip(t_shape.dim, s_shape.dim):
        if sd.HasField("dim_value") and (not td.HasField("dim_value") or td.dim_value != sd.dim_value):
            if td.HasField("dim_param") and td.dim_param:
                continue  # a named dynamic dim stays dynamic
            td.Clear()
            td.dim_value = sd.dim_value
            changed = 1
    return changed


def _inferred_value_info(proto: onnx.ModelProto) -> tuple[dict[str, onnx.ValueInfoProto], onnx.GraphProto | None]:
    """Shapes ONNX inference finds for `proto` with its stale annotations left out (bodies
    included), and the inferred graph (None when inference failed)."""
    skel = onnx.ModelProto()
    skel.ir_version = max(proto.ir_version, 4)  # initializers need not be inputs in the skeleton
    skel.opset_import.extend(proto.opset_import)
    skel.functions.extend(proto.functions)
    src, g = proto.graph, skel.graph
    g.node.extend(src.node)
    for _, body in list(scopes.walk(g))[1:]:  # bodies' annotations may be stale too: infer them afresh
        del body.value_info[:]
        for out in body.output:
            out.type.tensor_type.ClearField("shape")
    init_names = {t.name for t in src.initializer}
    for o in src.output:
        g.output.add().name = o.name
    g.input.extend(i for i in src.input if i.name not in init_names)
    for t in src.initializer:
        if numel(t.dims) > limits.SKELETON_CONSTANT_MAX:
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            g.initializer.append(t)
    try:
        inferred = onnx.shape_inference.infer_shapes(skel, strict_mode=False, data_prop=True)
    except Exception as exc:  # best effort: without inference, stale annotations are dropped
        log.warning("ONNX shape inference failed on the pruned model (%s); dropping its annotations", exc)
        return {}, None
    found = {vi.name: vi for _, sub in scopes.walk(inferred.graph) for vi in sub.value_info}
    found.update((vi.name, vi) for _, sub in scopes.walk(inferred.graph) for vi in sub.output
                 if vi.type.HasField("tensor_type"))
    return found, inferred.graph
