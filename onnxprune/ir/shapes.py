"""Static shapes, inferred on a weight-less skeleton of the model."""
from __future__ import annotations

import logging
from typing import Callable

import onnx

from ..errors import BadInputError
from . import limits, scopes
from .graph import Graph, Node, Shape, _decode_node, numel, opset_of

log = logging.getLogger(__name__)

# node, shapes of its inputs (None: unknown or absent) -> shapes of its outputs (None: unknown), or None
NodeShapes = Callable[[Node, list], "list | None"]
_node_shapes: list[NodeShapes] = []
_FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)


def set_node_shapes(fn: NodeShapes | None) -> None:
    """Install the shape function for ops ONNX shape inference does not know (ONNX Runtime's contrib
    ops): `rules` provides it, so this module stays op-agnostic."""
    _node_shapes[:] = [fn] if fn is not None else []


# Functions (graph view -> shapes) naming static shapes that ONNX inference leaves open but an op
# fixes (a Loop's carried value keeps its shape when the body returns it unchanged), each with the
# op types it needs; the rules register them, so that per-op knowledge stays in rules/.
_SHAPE_HOOKS: list[tuple[frozenset[str], Callable[[Graph], dict[str, Shape]]]] = []
MAX_HOOK_ROUNDS = 4


def register_shape_hook(op_types: tuple[str, ...], hook: Callable[[Graph], dict[str, Shape]]) -> None:
    """Add a hook that completes the shapes ONNX inference leaves open in models holding `op_types`."""
    _SHAPE_HOOKS.append((frozenset(op_types), hook))


def infer_shapes(proto: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]]) -> dict[str, Shape]:
    """Static shapes of every tensor, inferred on a weight-less skeleton of the model.

    Outputs of nodes ONNX inference leaves unknown come from the installed node shape function,
    else from the model's own value_info; then inference runs again from there, until nothing new.
    """
    skeleton = _skeleton(proto, input_shapes)
    inferred = _inferred(skeleton)
    shapes, types = _collect(inferred)
    # the model's own value_info (ORT-optimized files may carry it) holds for the declared input shapes
    stored = {} if input_shapes else {vi.name: vi for vi in proto.graph.value_info}
    for _ in range(len(skeleton.graph.node)):
        added = _fill_unknown(skeleton, shapes, types, stored)
        if not added:
            break
        skeleton.graph.value_info.extend(added)
        inferred = _inferred(skeleton)
        shapes, types = _collect(inferred)
    for _ in range(MAX_HOOK_ROUNDS):  # a completed shape lets inference go on behind it
        hooks = _hooks_for(skeleton)
        if not hooks or not _annotate_completed(skeleton, inferred, shapes, hooks):
            break
        inferred = _inferred(skeleton)
        shapes, types = _collect(inferred)
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


def _collect(inferred: onnx.ModelProto) -> tuple[dict[str, Shape], dict[str, int]]:
    shapes: dict[str, Shape] = {}
    types: dict[str, int] = {}
    for _, g in scopes.walk(inferred.graph):  # inference annotates If / Loop / Scan bodies too
        for vi in list(g.value_info) + list(g.input) + list(g.output):
            tt = vi.type.tensor_type
            if tt.elem_type:
                types.setdefault(vi.name, tt.elem_type)
            if tt.HasField("shape"):
                dims = _dims(vi)
                if vi.name not in shapes or None not in dims:
                    shapes[vi.name] = dims
        for t in g.initializer:
            shapes.setdefault(t.name, tuple(int(d) for d in t.dims))
            types.setdefault(t.name, t.data_type)
    return shapes, types


def _dims(vi: onnx.ValueInfoProto) -> Shape:
    return tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim)


def _fill_unknown(skeleton: onnx.ModelProto, shapes: dict[str, Shape], types: dict[str, int],
                  stored: dict[str, onnx.ValueInfoProto]) -> list[onnx.ValueInfoProto]:
    """value_info for outputs of nodes whose outputs ONNX inference left without a shape.

    One pass in node order: a node ONNX does not know gets the installed shape function (else the
    model's own value_info); a standard node after it is inferred on its own by its ONNX schema, so
    that a chain of fused ops needs one pass, not one whole-model inference per op.
    """
    declared = {vi.name for vi in skeleton.graph.value_info}
    consts = {t.name: t for t in skeleton.graph.initializer}
    opset = opset_of(skeleton)
    shapes, types = dict(shapes), dict(types)
    added = []
    for i, proto_node in enumerate(skeleton.graph.node):
        todo = [o for o in proto_node.output if o and o not in shapes and o not in declared]
        if not todo:
            continue
        node = _decode_node(proto_node, i)
        found = _rule_shapes(node, shapes, types)
        if found is None and not node.has_subgraph and node.domain in ("", "ai.onnx"):
            found = _one_standard_node(proto_node, shapes, types, consts, opset)
        found = list(found or [])
        for j, name in enumerate(node.outputs):
            if name not in todo:
                continue
            if j < len(found) and found[j] is not None:
                dims, elem = found[j]
                added.append(onnx.helper.make_tensor_value_info(name, elem, list(dims)))
                shapes[name], types[name] = tuple(dims), elem
            elif name in stored:
                added.append(stored[name])
                shapes[name] = _dims(stored[name])
    return added


def _rule_shapes(node: Node, shapes: dict[str, Shape], types: dict[str, int]) -> list | None:
    """[(dims, elem type) or None per output] from the installed shape function; the element type is
    that of the first floating-point input."""
    if not _node_shapes:
        return None
    try:
        found = _node_shapes[0](node, [shapes.get(n) if n else None for n in node.inputs])
    except Exception as exc:  # inference is best effort: a node left unknown freezes its channels later
        log.warning("no output shapes for %s node '%s': %s", node.op_type, node.name, exc)
        return None
    if found is None:
        return None
    elem = next((types[n] for n in node.inputs if n and types.get(n) in _FLOATS), onnx.TensorProto.FLOAT)
    return [None if dims is None else (tuple(dims), elem) for dims in found]


def _one_standard_node(proto_node: onnx.NodeProto, shapes: dict[str, Shape], types: dict[str, int],
                       consts: dict[str, onnx.TensorProto], opset: int) -> list | None:
    """[(dims, elem type) or None per output] of one standard node from its inputs, by its ONNX schema."""
    names = [n for n in proto_node.input if n]
    if any(n not in shapes or n not in types for n in names):
        return None
    try:
        schema = onnx.defs.get_schema(proto_node.op_type, opset, proto_node.domain)
        input_types = {n: onnx.helper.make_tensor_type_proto(types[n], list(shapes[n])) for n in names}
        out = onnx.shape_inference.infer_node_outputs(
            schema, proto_node, input_types, {n: consts[n] for n in names if n in consts},
            opset_imports=[onnx.helper.make_opsetid("", opset)])
    except Exception:  # an op without a schema, or one ONNX cannot infer alone: the next whole pass decides
        return None
    result: list[tuple[tuple, int] | None] = []
    for name in proto_node.output:
        t = out.get(name)
        if t is None or not t.tensor_type.HasField("shape"):
            result.append(None)
            continue
        dims = tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in t.tensor_type.shape.dim)
        # a partly unknown result is left to the next whole-model inference (shape arithmetic, data_prop)
        result.append(None if None in dims else (dims, t.tensor_type.elem_type))
    return result


def standard_op_shapes(op_type: str, attrs: dict, input_shapes: list) -> list[Shape | None] | None:
    """Output shapes of a standard ONNX op on inputs of these shapes (float), by ONNX's own inference:
    for contrib ops that compute like one (FusedConv like Conv, FusedGemm like Gemm)."""
    if any(s is None for s in input_shapes):
        return None
    names = [f"i{k}" for k in range(len(input_shapes))]
    node = onnx.helper.make_node(op_type, names, ["y"], **attrs)
    graph = onnx.helper.make_graph(
        [node], "probe", [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, list(s))
                          for n, s in zip(names, input_shapes)],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)])
    model = onnx.helper.make_model(graph)
    try:
        out = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph.output[0]
    except Exception as exc:  # an inconsistent contrib node: leave its outputs unknown
        log.debug("no shape for %s on %s: %s", op_type, input_shapes, exc)
        return None
    return [_dims(out)] if out.type.tensor_type.HasField("shape") else None


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
        raise BadInputError(f"--input-shape names {sorted(unknown)}, but the model's inputs are "
                            f"{sorted(known - init_names)}")
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
    fixed = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in shape.dim]
    if any(f is not None and f != d for f, d in zip(fixed, dims)):
        raise BadInputError(f"--input-shape gives '{vi.name}' shape {list(dims)}, but the model fixes it at "
                            f"{[f if f is not None else '?' for f in fixed]}")
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
