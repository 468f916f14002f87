"""ONNX Runtime's fused attention ops (domain com.microsoft): whole heads are the units.

* Attention(input, weights [H_in, q+k+v], bias?, mask_index?, past?, ...): packed
  QKV projection, `num_heads`, `qkv_hidden_sizes` [q, k, v] (default three equal
  parts). Output [B, S, v]. Removing head h removes its columns of each part
  (and of the bias); `num_heads` and `qkv_hidden_sizes` follow the new size.
* MultiHeadAttention(query, key, value, bias?, key_padding_mask?, attention_bias?, ...):
  projections outside; head h is positions h*hs.. of query, key, value and output.
* GroupQueryAttention(query, key, value, past_key?, past_value?, seqlens_k, ...):
  KV head k serves query heads k*g .. k*g+g-1 (g = num_heads / kv_num_heads):
  a KV head and its query heads go together.
* RotaryEmbedding(input, position_ids, cos_cache, sin_cache): rotates within
  each head, so a head's channels go together.

Removing whole heads keeps every other head's function (each head has its
own softmax): exact. GroupQueryAttention's KV cache (past / present key and
value) follows its heads axis, so the graph's cache inputs and outputs decide
(--prune-cache); MultiHeadAttention's and Attention's past / present freeze.
"""
from __future__ import annotations

import numpy as np

from .. import indexmap
from ..indexmap import Pairs
from ..ir import Graph, Node
from ..kinds import Role
from .base import Effects, Port, Rule, positive_axis, prod, register

MS = "com.microsoft"
HEADS = "attention heads"


def _heads(pairs: Pairs, width: int) -> Pairs:
    """Positions of a [heads * width] axis -> (head, root)."""
    return np.stack([pairs[:, 0] // width, pairs[:, 1]], axis=1)


def _span(heads: Pairs, width: int, offset: int = 0) -> Pairs:
    """(head, root) -> every position of those heads in a [heads * width] axis starting at `offset`."""
    return indexmap.shift(indexmap.expand(heads, width), offset)


@register("Attention", domain=MS)
class AttentionRule(Rule):
    """Packed-QKV self-attention (module doc)."""

    def parts(self, node: Node, graph: Graph) -> tuple[int, int, int] | None:
        w = graph.shape(node.input(1))
        if w is None or len(w) != 2 or w[1] is None:
            return None
        sizes = node.attr("qkv_hidden_sizes")
        if sizes:  # three sizes (q, k, v) or the node is malformed
            return (int(sizes[0]), int(sizes[1]), int(sizes[2])) if len(sizes) == 3 else None
        return (int(w[1]) // 3,) * 3

    def roots(self, node: Node, graph: Graph):
        if graph.is_const(node.input(1)):
            yield node.output(0), 2

    def macs(self, node: Node, graph: Graph) -> int:
        x, parts = graph.shape(node.input(0)), self.parts(node, graph)
        if x is None or None in x or parts is None or len(x) != 3:
            return 0
        b, s, _ = x
        return prod(x) * sum(parts) + b * s * s * (parts[0] + parts[2])

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        parts, heads = self.parts(node, graph), int(node.attr("num_heads", 0))
        if not graph.is_const(node.input(1)) or (node.input(2) and not graph.is_const(node.input(2))):
            fx.freeze("weights or bias are computed at run time")
            return
        if parts is None or heads < 1 or any(p % heads for p in parts) or graph.rank(node.input(0)) != 3:
            fx.freeze("weight shape, num_heads or qkv_hidden_sizes is unknown or inconsistent")
            return
        if port.is_input and port.index == 0 and axis == 2:
            fx.cut(node.input(1), 0, pairs, role=Role.IN)  # the residual stream feeds every projection
            return
        if node.input(4) or node.output(1):
            fx.freeze("past / present key-value state: its head count is part of the model's interface")
            return
        if port.is_input or port.index != 0 or axis != 2:
            fx.freeze(f"{port.kind}put {port.index} axis {axis} is not the hidden axis of input or output")
            return
        q, k, v = parts
        qs, ks, vs = q // heads, k // heads, v // heads
        h = _heads(pairs, vs)
        fx.label(HEADS)
        fx.to_output(0, 2, _span(h, vs))
        for name in (node.input(1), node.input(2)):
            if name:
                axis_of = len(graph.const_shape(name)) - 1
                for piece in (_span(h, qs), _span(h, ks, q), _span(h, vs, q + k)):
                    fx.cut(name, axis_of, piece, role=Role.OUT)
        mask = node.input(5)  # attention_bias [B or 1, heads or 1, S, T]
        if mask and graph.dim(mask, 1) not in (None, 1):
            fx.to_input(5, 1, h)
        space = (node.output(0), 2)
        fx.edit_attr("num_heads", -1, space, div=vs)
        if node.attr("qkv_hidden_sizes"):
            for element, width in enumerate((qs, ks, vs)):
                fx.edit_attr("qkv_hidden_sizes", element, space, mul=width, div=vs)

    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        x, w = input_shapes[0], input_shapes[1]
        if x is None or w is None or len(x) != 3 or w[-1] is None:
            return None
        sizes = node.attr("qkv_hidden_sizes")
        v = int(sizes[2]) if sizes else int(w[-1]) // 3
        return [(x[0], x[1], v)]


class _HeadsRule(Rule):
    """Shared by MultiHeadAttention and GroupQueryAttention: 3-D query, key, value and output."""

    state: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())  # (inputs, outputs) holding KV-cache state

    def geometry(self, node: Node, graph: Graph, fx: Effects) -> tuple[int, int, int] | None:
        """(query head size, value head size, query heads per KV head); freezes and returns None otherwise."""
        q, k, v = (graph.shape(node.input(i)) if node.input(i) else None for i in range(3))
        heads = int(node.attr("num_heads", 0))
        if q is None or k is None or v is None or not (len(q) == len(k) == len(v) == 3) or heads < 1:
            fx.freeze("needs 3-D query, key and value (packed or cached forms are not followed) and num_heads")
            return None
        if None in (q[2], k[2], v[2]) or q[2] % heads:
            fx.freeze("hidden sizes are unknown or not divisible by num_heads")
            return None
        return self.widths(node, int(q[2]) // heads, int(k[2]), int(v[2]), heads)

    def widths(self, node: Node, qs: int, k: int, v: int, heads: int) -> tuple[int, int, int] | None:
        return qs, v // heads, 1

    # (inputs, outputs) holding the KV cache [B, kv heads, T, head size] whose heads axis the rule follows
    # (the graph's cache inputs / outputs then decide: cache_io, --prune-cache); () freezes on any state
    cache: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        state_in, state_out = self.state
        if any(node.input(i) for i in state_in) or any(node.output(j) for j in state_out):
            fx.freeze("past / present key-value state: its head count is part of the model's interface")
            return
        geo = self.geometry(node, graph, fx)
        if geo is None:
            return
        qs, vs, group = geo
        cache_in, cache_out = self.cache
        if (port.index in cache_in) if port.is_input else (port.index in cache_out):
            if positive_axis(axis, 4) != 1:
                fx.freeze(f"{port.kind}put {port.index} (KV cache) is followed along axis {axis}, not its heads")
                return
            units = pairs  # (KV head, root)
        else:
            data = (port.is_input and port.index in (0, 1, 2)) or (not port.is_input and port.index == 0)
            if not data or positive_axis(axis, 3) != 2:
                fx.freeze(f"{port.kind}put {port.index} axis {axis} is not the hidden axis of query, key, value "
                          "or output")
                return
            widths = {0: qs * group, 1: qs, 2: vs} if port.is_input else {0: vs * group}
            units = _heads(pairs, widths[port.index])  # (KV head or head, root)
        fx.label(HEADS)
        fx.to_input(0, 2, _span(units, qs * group))
        fx.to_input(1, 2, _span(units, qs))
        fx.to_input(2, 2, _span(units, vs))
        fx.to_output(0, 2, _span(units, vs * group))
        self.extras(node, graph, units, geo, fx)

    def extras(self, node: Node, graph: Graph, units: Pairs, geo, fx: Effects) -> None:
        """Attributes, packed biases, per-head masks."""


@register("MultiHeadAttention", domain=MS)
class MultiHeadAttentionRule(_HeadsRule):
    state = ((6, 7, 8, 9), (1, 2, 3))

    def extras(self, node: Node, graph: Graph, units: Pairs, geo, fx: Effects) -> None:
        qs, vs, _ = geo
        bias = node.input(3)
        if bias:
            q = graph.dim(node.input(0), 2)
            assert q is not None, "geometry() checked the query's hidden size"
            if not graph.is_const(bias):
                fx.freeze(f"bias '{bias}' is computed at run time")
                return
            for piece in (_span(units, qs), _span(units, qs, q), _span(units, vs, 2 * q)):
                fx.cut(bias, 0, piece, role=Role.OUT)
        mask = node.input(5)  # attention_bias [B or 1, heads or 1, S, L]
        if mask and graph.dim(mask, 1) not in (None, 1):
            fx.to_input(5, 1, units)
        fx.edit_attr("num_heads", -1, (node.output(0), 2), div=vs)

    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        q, v = input_shapes[0], (input_shapes + [None] * 3)[2]
        if q is None or v is None or len(q) != 3 or len(v) != 3:
            return None
        return [(q[0], q[1], v[2])]


@register("GroupQueryAttention", domain=MS)
class GroupQueryAttentionRule(_HeadsRule):
    """Units are KV heads, each with its query heads; past / present key and value are [B, kv, T, hs]."""

    cache = ((3, 4), (1, 2))

    def widths(self, node: Node, qs: int, k: int, v: int, heads: int) -> tuple[int, int, int] | None:
        kv = int(node.attr("kv_num_heads", 0))
        if kv < 1 or heads % kv or k != kv * qs or v != kv * qs:
            return None
        return qs, qs, heads // kv

    def geometry(self, node: Node, graph: Graph, fx: Effects):
        geo = super().geometry(node, graph, fx)
        if geo is None and fx.frozen_reason is None:
            fx.freeze("kv_num_heads does not divide num_heads or does not match the key / value sizes")
        return geo

    def extras(self, node: Node, graph: Graph, units: Pairs, geo, fx: Effects) -> None:
        qs, _, group = geo
        for j in (1, 2):
            fx.to_output(j, 1, units)
        for i in (3, 4):
            if node.input(i):
                fx.to_input(i, 1, units)
        fx.edit_attr("num_heads", -1, (node.output(0), 2), div=qs)
        fx.edit_attr("kv_num_heads", -1, (node.input(1), 2), div=qs)

    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        q, k = input_shapes[0], (input_shapes + [None] * 2)[1]
        kv = int(node.attr("kv_num_heads", 0))
        if q is None or k is None or len(q) != 3 or len(k) != 3 or kv < 1 or k[2] is None:
            return None
        # with a past cache the present length is past + new tokens, or the shared buffer's: unknown here
        length = None if len(input_shapes) > 3 and input_shapes[3] is not None else q[1]
        present = (q[0], kv, length, int(k[2]) // kv)
        return [tuple(q), present, present]


@register("RotaryEmbedding", domain=MS)
class RotaryEmbeddingRule(Rule):
    """[B, S, H] input: whole heads of head_size go together; [B, N, S, hs]: the heads axis passes."""

    def head_size(self, node: Node, graph: Graph) -> int | None:
        hidden, heads = graph.dim(node.input(0), 2), int(node.attr("num_heads", 0))
        if heads > 0:
            return None if hidden is None or hidden % heads else hidden // heads
        cos = graph.shape(node.input(2))
        return None if cos is None or cos[-1] is None else 2 * int(cos[-1])

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        rank = fx.data_rank(port, "positions or the cos / sin caches")
        if rank is None:
            return
        axis = positive_axis(axis, rank)
        inner = rank - 1
        if axis != inner:
            fx.to_ports(port, axis, pairs, [0], [0])  # batch, sequence, heads (4-D) pass through
            return
        hs = self.head_size(node, graph)
        if rank != 3 or hs is None:
            fx.freeze("the rotation mixes positions within a head" if rank == 4 else "head size is unknown")
            return
        whole = _span(_heads(pairs, hs), hs)
        fx.label(HEADS)
        fx.to_input(0, 2, whole)
        fx.to_output(0, 2, whole)
        if int(node.attr("num_heads", 0)) > 0:
            fx.edit_attr("num_heads", -1, (node.output(0), 2), div=hs)

    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        return [input_shapes[0]] if input_shapes and input_shapes[0] is not None else None
