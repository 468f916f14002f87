"""`Graph`: the read-only analysis view of a model (nodes, links, constants, static shapes)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import onnx

from . import scopes

Shape = tuple  # of int | None

# doc_string of an initializer cloned at load from a constant several nodes shared
CLONE_MARK = "onnxprune:clone-of:"
_EPS: dict[int, float] = {onnx.TensorProto.FLOAT: 2.0 ** -23, onnx.TensorProto.FLOAT16: 2.0 ** -10,
                           onnx.TensorProto.BFLOAT16: 2.0 ** -7, onnx.TensorProto.DOUBLE: 2.0 ** -52}
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
# Initializers of these types are never parameters: ONNX's shape, axis, index and count inputs are
# int64 (int32 only for some Slice bounds and Gather indices, which are small), masks are bool.
_NOT_PARAMETER_TYPES = {onnx.TensorProto.INT64, onnx.TensorProto.BOOL, onnx.TensorProto.STRING,
                        onnx.TensorProto.UNDEFINED}


def numel(dims: Iterable[int]) -> int:
    dims = list(dims)
    return int(np.prod(dims, dtype=np.int64)) if dims else 1


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
    # where the node lives: () at top level, else the path of (node index, attribute) to its body
    scope: tuple = ()
    local: int = 0  # index of the node within its own graph
    # the values its bodies exchange with it: (attribute, "in" | "out", position, tensor name)
    body_values: tuple = ()

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
        top_inits = {t.name for t in g.initializer}
        self.graph_inputs = [i.name for i in g.input if i.name not in top_inits]
        self.graph_outputs = [o.name for o in g.output]
        self._output_set = set(self.graph_outputs)
        self._input_set = set(self.graph_inputs)
        # top-level nodes first (index = position in the graph), then the nodes of every body
        self.initializers: dict[str, onnx.TensorProto] = {}
        self.nodes: list[Node] = []
        protos: list[onnx.NodeProto] = []
        for scope, sub in scopes.walk(g):
            self.initializers.update((t.name, t) for t in sub.initializer)
            for local, n in enumerate(sub.node):
                protos.append(n)
                self.nodes.append(_decode_node(n, len(self.nodes), scope, local))
        self.producers: dict[str, Node] = {}
        self.consumer_map: dict[str, list[tuple[Node, int]]] = {}
        self._body_users: dict[str, list[tuple[Node, int]]] = {}
        for node, proto_node in zip(self.nodes, protos):
            for o in node.outputs:
                if o:
                    self.producers[o] = node
            for i, name in enumerate(node.inputs):
                if name:
                    self.consumer_map.setdefault(name, []).append((node, i))
            for j, (_, _, _, name) in enumerate(node.body_values):
                self._body_users.setdefault(name, []).append((node, j))
            if node.has_subgraph:  # graph-list attributes: bodies the analysis does not decode
                for name in _outer_scope_names(proto_node):
                    self.consumer_map.setdefault(name, []).append((node, -1))
        self.shapes = shapes
        self._const_cache: dict[str, np.ndarray] = {}
        self._derived: set[str] | None = None
        self.virtual_sizes: dict[str, int] = {}

    # -- constants -------------------------------------------------------
    def is_const(self, name: str) -> bool:
        return name in self.initializers

    def const(self, name: str) -> np.ndarray | None:
        """Value of an initializer as numpy, or None if `name` is not constant. The array is cached
        and shared by every caller, so it is read-only: a caller that changes values copies first."""
        if name not in self.initializers:
            return None
        if name in self._const_cache:
            return self._const_cache[name]
        from . import external  # not at the top: external -> integrity -> graph
        from .edit import to_array

        tensor = self.initializers[name]
        value = to_array(tensor)
        value.setflags(write=False)
        if not external.is_external(tensor):  # external weights are mapped again when asked: bounded memory
            self._const_cache[name] = value
        return value

    def float_eps(self, name: str) -> float | None:
        """Machine epsilon of an initializer's floating-point type; None for other types."""
        return _EPS.get(self.initializers[name].data_type)

    def const_shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self.initializers[name].dims)

    def param_count(self, const_shape: Callable[[str], tuple[int, ...]] | None = None,
                    cut: Iterable[str] = (), packing: Mapping[str, int] | None = None) -> int:
        """Parameter elements (every initializer but int64 / bool ones: float weights, int8 / uint8 /
        int4 / int32 quantized weights, biases and zero points), each shared constant counted once.

        A load-time clone still carries its mark until something rewrites it (a cut writes a
        fresh tensor): only then is it a tensor of its own. For a plan not yet applied
        (targets.py), `const_shape` gives the shapes after it and `cut` the names it rewrites.
        `packing` names initializers whose stored elements each hold several parameters (rules.packing).
        """
        shape_of = const_shape or self.const_shape
        cut = set(cut)
        packing = packing or {}

        def own(name: str, t: onnx.TensorProto) -> bool:
            if not t.doc_string.startswith(CLONE_MARK) or name in cut:
                return True
            return t.doc_string[len(CLONE_MARK):] not in self.initializers  # the original was folded away

        return sum(numel(shape_of(n)) * packing.get(n, 1) for n, t in self.initializers.items()
                   if t.data_type not in _NOT_PARAMETER_TYPES and own(n, t))

    def const_derived(self, name: str) -> bool:
        """True for a tensor computed from initializers only (a dequantized or transposed weight),
        through nodes without subgraphs that read at least one input: one value for every run."""
        if self._derived is None:
            self._derived = set()
            for node in self.nodes:  # topological order
                sources = [i for i in node.inputs if i]
                if sources and not node.has_subgraph and \
                        all(i in self.initializers or i in self._derived for i in sources):
                    self._derived.update(o for o in node.outputs if o)
        return name in self._derived

    def is_weight(self, name: str) -> bool:
        """An initializer, or a tensor computed from initializers only (see `const_derived`)."""
        return bool(name) and (self.is_const(name) or self.const_derived(name))

    def input_coordinates(self) -> dict[str, tuple[str, str, int]]:
        """Where the load-time copies of shared constants come from: for every clone and every
        original that has clones, `name -> (tensor of the input model, consuming node, input index)`.

        A plan speaks of the input model's tensors: a slice of clone `W__2` is `W` as read by
        that node's input, which is unambiguous and the same each time the model is loaded.
        """
        cloned: dict[str, str] = {}
        for name, t in self.initializers.items():
            if t.doc_string.startswith(CLONE_MARK):
                cloned[name] = t.doc_string[len(CLONE_MARK):]
        out: dict[str, tuple[str, str, int]] = {}
        for name in set(cloned) | (set(cloned.values()) & set(self.initializers)):
            users = [(n, i) for n, i in self.consumers(name) if i >= 0]
            if len(users) == 1:  # a clone has one reader by construction; so has its original
                out[name] = (cloned.get(name, name), users[0][0].name, users[0][1])
        return out

    def const_users(self, name: str) -> int:
        return len(self.consumer_map.get(name, ()))

    # -- structure -------------------------------------------------------
    def producer(self, name: str) -> Node | None:
        return self.producers.get(name)

    def consumers(self, name: str) -> list[tuple[Node, int]]:
        return self.consumer_map.get(name, [])

    def body_users(self, name: str) -> list[tuple[Node, int]]:
        """Control-flow nodes whose body takes `name` as a body input or gives it as a body output,
        each with the position j of that value in the node's `body_values`."""
        return self._body_users.get(name, [])

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


def _decode_node(n: onnx.NodeProto, index: int, scope: tuple = (), local: int | None = None) -> Node:
    attrs: dict[str, Any] = {}
    has_subgraph = False
    body_values: list[tuple[str, str, int, str]] = []
    for a in n.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            body_values.extend((a.name, "in", k, vi.name) for k, vi in enumerate(a.g.input))
            body_values.extend((a.name, "out", k, vi.name) for k, vi in enumerate(a.g.output))
        if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            has_subgraph = True
            continue
        value = onnx.helper.get_attribute_value(a)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode("utf-8", "replace") for v in value]
        attrs[a.name] = value
    return Node(n.name, n.op_type, n.domain, list(n.input), list(n.output), attrs, index, has_subgraph,
                scope, index if local is None else local, tuple(body_values))


def _outer_scope_names(node: onnx.NodeProto, decoded: bool = True) -> set[str]:
    """Tensor names a node's graph-list attributes read from the enclosing graph (single-graph
    bodies are decoded as nodes of the analysis itself, unless `decoded` is False)."""
    names: set[str] = set()
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH and decoded:
            continue
        graphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
        for sub in graphs:
            defined = {i.name for i in sub.input} | {t.name for t in sub.initializer}
            for sn in sub.node:
                defined.update(sn.output)
            for sn in sub.node:
                names.update(i for i in sn.input if i and i not in defined)
                names.update(_outer_scope_names(sn, False) - defined)
    return names
