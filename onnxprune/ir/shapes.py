"""Static shapes, inferred on a weight-less skeleton of the model."""
from __future__ import annotations

import logging
from typing import Callable

import onnx

from ..errors import BadInputError
from . import limits, scopes
from .graph import Graph, Shape, numel

log = logging.getLogger(__name__)


# Functions (graph view -> shapes) naming static shapes that ONNX inference leaves open but an op
# fixes (a Loop's carried value keeps its shape when the body returns it unchanged), each with the
# op types it needs; the rules register them, so that per-op knowledge stays in rules/.
_SHAPE_HOOKS: list[tuple[frozenset[str], Callable[[Graph], dict[str, Shape]]]] = []
MAX_HOOK_ROUNDS = 4


def register_shape_hook(op_types: tuple[str, ...], hook: Callable[[Graph], dict[str, Shape]]) -> None:
    """Add a hook that completes the shapes ONNX inference leaves open in models holding `op_types`."""
    _SHAPE_HOOKS.append((frozenset(op_types), hook))


def infer_shapes(proto: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]]) -> dict[str, Shape]:
    """Static shapes of every tensor, inferred on a weight-less skeleton of the model."""
    skeleton = _skeleton(proto, input_shapes)
    inferred = _inferred(skeleton)
    shapes = _collect(inferred)
    for _ in range(MAX_HOOK_ROUNDS):  # a completed shape lets inference go on behind it
        hooks = _hooks_for(skeleton)
        if not hooks or not _annotate_completed(skeleton, inferred, shapes, hooks):
            break
        inferred = _inferred(skeleton)
        shapes = _collect(inferred)
    return shapes


def _inferred(skeleton: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(skeleton, strict_mode=False, data_prop=True)
    except Exception as exc:  # inference is best effort: unknown shapes freeze channels later
        log.warning("ONNX shape inference failed (%s); continuing with declared shapes", exc)
        return skeleton


def _hooks_for(model: onnx.ModelProto) -> list[Callable[[Graph], dict[str, Shape]]]:
    if not _SHAPE_HOOKS:
        return []
    ops = {n.op_type for _, g in scopes.walk(model.graph) for n in g.node}
    return [hook for op_types, hook in _SHAPE_HOOKS if op_types & ops]


def _annotate_completed(skeleton: onnx.ModelProto, inferred: onnx.ModelProto, shapes: dict[str, Shape],
                        hooks: list[Callable[[Graph], dict[str, Shape]]]) -> bool:
    """Declare in the skeleton the static shapes the hooks find for tensors inference left open."""
    view = Graph(inferred, shapes)
    found: dict[str, Shape] = {}
    for hook in hooks:
        found.update(hook(view))
    elem = {vi.name: vi.type.tensor_type.elem_type for _, g in scopes.walk(inferred.graph) for vi in g.value_info}
    added = False
    for name, dims in found.items():
        known = shapes.get(name)
        producer = view.producer(name)
        if None in dims or (known is not None and None not in known) or producer is None or not elem.get(name):
            continue
        target = scopes.resolve(skeleton.graph, producer.scope)
        target.value_info.append(onnx.helper.make_tensor_value_info(name, elem[name], list(dims)))
        added = True
    return added


def _collect(inferred: onnx.ModelProto) -> dict[str, Shape]:
    shapes: dict[str, Shape] = {}
    for _, g in scopes.walk(inferred.graph):  # inference annotates If / Loop / Scan bodies too
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
        if numel(t.dims) > limits.SKELETON_CONSTANT_MAX:
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


def has_static_inputs(proto: onnx.ModelProto) -> bool:
    """True when every graph input declares a fixed positive size for every dimension."""
    specs = input_specs(proto)
    return bool(specs) and all(isinstance(d, int) and d > 0 for _, _, dims in specs for d in dims)


def with_input_shapes(proto: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    """A copy of the model whose graph inputs declare the given fixed shapes."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for vi in out.graph.input:
        if vi.name in input_shapes:
            _set_dims(vi, input_shapes[vi.name])
    return out
