"""What a rule is, what it may say, and the registry that finds one by op type.

A rule holds the knowledge of one op family and no state. The dependency
graph asks it two questions:

* `roots(node, graph)`: which output axes start a new channel space (the
  output side of a Conv, Gemm, MatMul with a weight, LSTM hidden units...).
* `propagate(node, graph, port, axis, pairs, fx)`: channels `pairs` of the
  tensor at `port` (an input or output of `node`) along `axis` are being
  removed; say into `fx` which other tensors' channels go with them
  (`fx.to_input` / `fx.to_output`), which initializer slices must be cut
  (`fx.cut`), which attributes or shape constants follow the new sizes
  (`fx.edit_attr` / `fx.edit_const`), whether the function changes
  (`fx.inexact`), what the units are (`fx.label`), or that the space cannot
  be followed (`fx.freeze`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np

from .. import indexmap
from ..edit import Edit
from ..indexmap import Pairs
from ..ir import Graph, Node
from ..kinds import EditKind, PortKind, Role


@dataclass(frozen=True)
class Port:
    """One side of a node: `kind` PortKind.IN or OUT, `index` the input or output number; or kind
    PortKind.BODY, `index` a position in a control-flow node's `body_values` (a body's input or output)."""

    kind: PortKind
    index: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", PortKind(self.kind))

    @property
    def is_input(self) -> bool:
        return self.kind == PortKind.IN

    def tensor(self, node: Node) -> str:
        if self.kind == PortKind.BODY:
            return node.body_values[self.index][3]
        return node.input(self.index) if self.is_input else node.output(self.index)


@dataclass
class Cut:
    """Initializer slice that moves with the group: positions along `axis` of `tensor`."""

    tensor: str
    axis: int
    pairs: Pairs
    role: Role  # IN: consumes the channels; OUT: produces or transforms them
    scale: bool = False  # a normalisation scale (BN gamma, LN weight): for the bn criterion
    # (lo, hi) along `axis`: the only positions this user reads (a Slice of a shared weight, whose
    # bounds follow every user's cut); None: it reads all of them
    reads: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self.role = Role(self.role)


@dataclass
class Effects:
    """Everything a rule says about one visit. Filled by the rule, read by the depgraph."""

    node: Node
    graph: Graph
    forwards: list[tuple[str, int, Pairs, "Port"]] = field(default_factory=list)
    cuts: list[Cut] = field(default_factory=list)
    edits: list[Edit] = field(default_factory=list)
    inexact_reasons: list[str] = field(default_factory=list)
    shared_range_reasons: list[str] = field(default_factory=list)
    frozen_reason: str | None = None
    kinds: list[str] = field(default_factory=list)
    # (tensor, axis) spaces that must be in the same group, each with the freeze reason otherwise
    required: list[tuple[tuple[str, int], str]] = field(default_factory=list)
    # (source space, target space, k): a shape element k x the source's size sets the target's size at
    # run time, so every unit must lose k times as many target positions as source positions
    scaled: list[tuple[tuple[str, int], tuple[str, int], int, str]] = field(default_factory=list)
    # role of the cuts made on constant inputs: OUT, or IN while walking up the constant
    # subgraph that computes a consumed weight (DequantizeLinear, Transpose... of an initializer)
    const_role: Role = Role.OUT
    # (tensor, axis) of forwarded weights computed from constants -> role of the cuts they stand for
    roles: dict[tuple[str, int], Role] = field(default_factory=dict)

    def to_input(self, i: int, axis: int, pairs: Pairs, reads: tuple[int, int] | None = None) -> None:
        """The same channels live on input i (a constant input is cut instead, role `const_role`;
        `reads`: see Cut)."""
        name = self.node.input(i)
        if not name or not len(pairs):
            return
        if self.graph.is_const(name):
            self.cut(name, axis, pairs, role=self.const_role, reads=reads)
        else:
            self._forward_input(i, axis, pairs, self.const_role)

    def _forward_input(self, i: int, axis: int, pairs: Pairs, role: Role) -> None:
        name = self.node.input(i)
        axis = _norm_axis(axis, self.graph.rank(name))
        if self.graph.const_derived(name):
            self.roles[(name, axis)] = role
        self.forwards.append((name, axis, pairs, Port(PortKind.IN, i)))

    def to_output(self, j: int, axis: int, pairs: Pairs) -> None:
        name = self.node.output(j)
        if name and len(pairs):
            self.forwards.append((name, _norm_axis(axis, self.graph.rank(name)), pairs, Port(PortKind.OUT, j)))

    def to_ports(self, arrived: Port, axis: int, pairs: Pairs, inputs, outputs) -> None:
        """The same channels on every listed input and output, except the port they arrived at."""
        for i in inputs:
            if not (arrived.is_input and arrived.index == i):
                self.to_input(i, axis, pairs)
        for j in outputs:
            if not (not arrived.is_input and arrived.index == j):
                self.to_output(j, axis, pairs)

    def data_rank(self, port: Port, what: str) -> int | None:
        """Rank of input 0 when `port` is the data input or output 0; else freeze and return None.

        `what` names what the other inputs hold, for the freeze reason.
        """
        rank = self.graph.rank(self.node.input(0))
        if port.index != 0:
            self.freeze(f"{port.kind}put {port.index} holds {what}, not data")
            return None
        if rank is None:
            self.freeze("input rank is unknown")
        return rank

    def data_through(self, port: Port, axis: int, pairs: Pairs, what: str) -> int | None:
        """`data_rank`, and the channels passed across between data input 0 and output 0 (for ops
        that keep the data's layout: normalisations, quantize / dequantize)."""
        rank = self.data_rank(port, what)
        if rank is not None:
            if port.is_input:
                self.to_output(0, axis, pairs)
            else:
                self.to_input(0, axis, pairs)
        return rank

    def cut(self, tensor: str, axis: int, pairs: Pairs, role: Role, scale: bool = False,
            reads: tuple[int, int] | None = None) -> None:
        """Cut an initializer; a weight input computed from initializers (`Graph.const_derived`) is
        followed up to the initializers it is computed from, whose cuts keep `role`."""
        if not len(pairs):
            return
        if not self.graph.is_const(tensor):
            if self.graph.const_derived(tensor) and tensor in self.node.inputs:
                self._forward_input(self.node.inputs.index(tensor), axis, pairs, role)
            else:
                self.freeze(f"weight '{tensor}' is computed at run time")
            return
        rank = len(self.graph.const_shape(tensor))
        self.cuts.append(Cut(tensor, _norm_axis(axis, rank), pairs, role, scale, reads))

    def edit_attr(self, attr: str, element: int, space: tuple[str, int], mul: int = 1, div: int = 1,
                  offset: int | None = None) -> None:
        self.edits.append(Edit((EditKind.ATTR, self.node.index, attr, element), space, mul, div, offset))

    def edit_const(self, tensor: str, element: int, space: tuple[str, int], mul: int = 1, div: int = 1,
                   offset: int | None = None) -> None:
        self.edits.append(Edit((EditKind.CONST, tensor, element), space, mul, div, offset))

    def inexact(self, reason: str) -> None:
        self.inexact_reasons.append(f"{self.node}: {reason}")

    def shared_range(self, reason: str) -> None:
        """The channels reach a run-time quantizer whose range spans all of them (dynamic int8):
        removing them is exact once they are silent at their source (exactly zero leaves a range that
        always holds 0 unchanged), so the oracle zeroes the group's producers as well as its consumers.
        The pruned model quantizes with the range of the channels it keeps, as dynamic quantization does."""
        self.shared_range_reasons.append(f"{self.node}: {reason}")

    def label(self, kind: str) -> None:
        """Name what the group's units are ("attention heads", "recurrent hidden units"), for reports."""
        if kind not in self.kinds:
            self.kinds.append(kind)

    def require(self, space: tuple[str, int], reason: str, scale: int = 1,
                target: tuple[str, int] | None = None) -> None:
        """The effects only hold when `space` (tensor, axis) loses the same channels: a shape element
        copying that size at run time. The group freezes with `reason` when it does not reach it.
        With `scale` k != 1 the element is k x that size and sets the size of `target`, which must
        then lose k positions for each one `space` loses (repeat_kv: kv heads x n_rep query heads)."""
        self.required.append((space, f"{self.node}: {reason}"))
        if scale != 1 and target is None:
            self.freeze(f"{reason} (scaled by {scale}, with no target size to check)")
        elif scale != 1 and target is not None:
            self.scaled.append((space, target, scale, f"{self.node}: {reason}"))

    def freeze(self, reason: str) -> None:
        if self.frozen_reason is None:
            self.frozen_reason = f"{self.node}: {reason}"


def _norm_axis(axis: int, rank: int | None) -> int:
    if axis < 0 and rank is not None:
        return axis + rank
    return axis


class Rule:
    """Base rule: an op that no channel space can cross (override what the op supports)."""

    op_types: tuple[str, ...] = ()
    # True for ops whose output depends only on their input's shape (Shape, Size):
    # with static input shapes, everything computed from them can be folded to constants.
    reads_shape_only = False
    # False for ops whose outputs are random (RandomNormalLike, Bernoulli...): never folded to constants
    deterministic = True
    # inputs that hold the op's own small parameters, not data (Resize's roi, scales, sizes): a float
    # constant cast for them (fp16 converters write Cast(scales)) is folded like shape arithmetic
    parameter_inputs: tuple[int, ...] = ()

    def static_shape_read(self, node: Node, graph: Graph) -> bool:
        """For an op that reads only its input's shape: whether the part it reads is known before
        run time whatever the inputs' values are (a Pad whose pads come from an input's values has
        no such shape, even when every graph input is static)."""
        return False

    def roots(self, node: Node, graph: Graph) -> Iterator[tuple[str, int]]:
        return iter(())

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        fx.freeze(f"no rule follows channels of {port.kind}put {port.index} along axis {axis}")

    def macs(self, node: Node, graph: Graph) -> int:
        """Multiply-accumulates of one run of the node (0 for ops that are not counted)."""
        return 0

    def index_ranges(self, node: Node, graph: Graph) -> dict[str, int]:
        """Inputs of the node holding indices, each with its exclusive upper bound (token ids into an
        embedding table): random test inputs must stay in range."""
        return {}

    def integer_weights(self, node: Node, graph: Graph) -> tuple[tuple[int, int], ...]:
        """(weight input, its zero-point input) of each 8-bit integer weight whose products with
        activations ONNX Runtime computes in integers. On x86 without VNNI, ORT adds the u8 x s8 products
        pairwise in saturating 16 bits: such a model's outputs there are not its ONNX semantics, and
        removing a channel changes which products pair up. The oracle stores these weights as uint8
        (value and zero point + 128: the same numbers), for which ORT's products are exact."""
        return ()

    def oracle_identity(self, node: Node, graph: Graph) -> bool:
        """True when the dead-channel oracle runs the node as Identity of input 0: activation fake
        quantization, whose rounding turns float32 summation-order noise into whole quantization steps."""
        return False

    def zero_of(self, node: Node, graph: Graph, tensor: str):
        """The stored value that stands for zero in constant input `tensor` of the node (a quantized
        weight's zero point, broadcastable to the tensor), or None for 0: the oracle fills with it."""
        return None

    def values_per_element(self, node: Node, graph: Graph, tensor: str) -> int:
        """Parameters one stored element of constant input `tensor` holds (2 for int4 weights packed
        two to a byte): parameter counts count weights, not bytes."""
        return 1

    def float_view(self, node: Node, graph: Graph, tensor: str) -> np.ndarray | None:
        """The float value that constant input `tensor` stands for in this node (a quantized weight,
        dequantized), or None when the node reads it as it is: importance scores it."""
        return None

    def linear_form(self, node: Node, graph: Graph):
        """How the node computes as a linear consumer of input 0 (a rules.forms.LinearForm), or None."""
        return None

    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        """Output shapes from input shapes (None where unknown or absent), for ops ONNX shape
        inference does not know (ONNX Runtime's contrib ops); None: no shape function."""
        return None


def prod(dims) -> int:
    out = 1
    for d in dims:
        out *= int(d)
    return out


class UnknownOpRule(Rule):
    """Used for op types no rule is registered for: every space reaching them is frozen."""

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        domain = f" (domain '{node.domain}')" if node.domain not in ("", "ai.onnx") else ""
        fx.freeze(f"op type '{node.op_type}'{domain} has no pruning rule")


_REGISTRY: dict[str, Rule] = {}
_UNKNOWN = UnknownOpRule()


def _key(domain: str, op: str) -> str:
    return op if domain in ("", "ai.onnx") else f"{domain}::{op}"


def register(*op_types: str, domain: str = "") -> Callable[[type[Rule]], type[Rule]]:
    """Class decorator: register one stateless instance of the rule for each op type (of `domain`,
    default the ONNX domain; "com.microsoft" for ONNX Runtime's contrib ops)."""

    def wrap(cls: type[Rule]) -> type[Rule]:
        instance = cls()
        for op in op_types:
            key = _key(domain, op)
            if key in _REGISTRY:
                raise ValueError(f"op type '{key}' already has rule {type(_REGISTRY[key]).__name__}")
            _REGISTRY[key] = instance
        cls.op_types = cls.__dict__.get("op_types", ()) + tuple(op_types)  # stacked registrations add up
        return cls

    return wrap


def rule_for(node: Node) -> Rule:
    return _REGISTRY.get(_key(node.domain, node.op_type), _UNKNOWN)


def node_shapes(node: Node, input_shapes: list) -> list | None:
    """Output shapes of a node by its rule's shape function (ir.set_node_shapes installs this)."""
    return rule_for(node).infer_shape(node, input_shapes)


def packing(graph: Graph) -> dict[str, int]:
    """Initializers whose stored elements each hold several parameters, with how many (Graph.param_count)."""
    packed = {}
    for node in graph.nodes:
        rule = rule_for(node)
        for name in node.inputs:
            if name and name in graph.initializers:
                count = rule.values_per_element(node, graph, name)
                if count != 1:
                    packed[name] = count
    return packed


def registered_op_types() -> list[str]:
    return sorted(_REGISTRY)


def root_op_types() -> list[str]:
    """Op types whose rule can start a channel space (Conv, Gemm, MatMul with a weight, ...)."""
    return sorted(op for op, rule in _REGISTRY.items() if type(rule).roots is not Rule.roots)


# -- small helpers shared by rules ------------------------------------------

def positive_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def const_ints(graph: Graph, name: str) -> list[int] | None:
    """Integer values of a constant input, or None when absent or computed at run time."""
    value = graph.const(name) if name else None
    return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]


__all__ = ["Cut", "Edit", "Effects", "Port", "PortKind", "Role", "Rule", "register", "rule_for", "indexmap"]


def broadcast_through(fx: Effects, graph: Graph, node: Node, port: Port, axis: int, pairs: Pairs,
                      operands: Iterable[int]) -> None:
    """Channels on one operand (or the output) of a broadcasting op reach the output and every other
    listed operand, each at its own axis (ranks align on the right)."""
    out_rank, here_rank = graph.rank(node.output(0)), graph.rank(port.tensor(node))
    if out_rank is None or here_rank is None:
        fx.freeze("operand ranks are unknown")
        return
    out_axis = axis + (out_rank - here_rank)
    if port.is_input:
        fx.to_output(0, out_axis, pairs)
    for i in operands:
        if not (port.is_input and port.index == i):
            broadcast_to_input(fx, graph, node, i, out_axis, out_rank, pairs)


def broadcast_to_input(fx: Effects, graph: Graph, node: Node, i: int, out_axis: int, out_rank: int,
                       pairs: Pairs) -> None:
    """Send output channels to input i when that input is not broadcast along the axis."""
    name = node.input(i)
    shape = graph.shape(name) if name else None
    if shape is None:
        if name:
            fx.freeze(f"shape of input '{name}' is unknown")
        return
    aligned = out_axis - (out_rank - len(shape))
    if aligned < 0 or shape[aligned] == 1:
        return  # broadcast: the same value serves every channel
    fx.to_input(i, aligned, pairs)
