"""ONNX Runtime's fused normalisations (transformers optimizer output).

* SkipLayerNormalization(input, skip, gamma, beta?, bias?) -> (output, mean?, inv_std_var?,
  input_skip_bias_sum?): LayerNorm(input + skip + bias) over the last axis;
  SkipSimplifiedLayerNormalization(input, skip, gamma, bias?) the same as RMSNorm.
* SimplifiedLayerNormalization(X, scale) -> (Y, inv_std_var?): RMSNorm over axes [axis, rank).
* EmbedLayerNormalization(input_ids, segment_ids?, word_embedding, position_embedding,
  segment_embedding?, gamma, beta, mask?, position_ids?) -> (output, mask_index, embedding_sum?):
  LayerNorm(word[ids] + position[pos] + segment[seg]).

They all normalise over the hidden axis, which is the transformer's residual
stream: pruning it is inexact, like LayerNormalization. Input, skip, output
and the sum output share that axis; [H] parameters are cut with it. Leading
(batch, sequence) axes pass through.
"""
from __future__ import annotations

from ..indexmap import Pairs
from ..ir import Graph, Node
from ..kinds import Role
from .base import Effects, Port, Rule, broadcast_to_input, positive_axis, register
from .norm import LayerNormRule

MS = "com.microsoft"


class _SkipNormBase(Rule):
    """Data inputs 0 (input) and 1 (skip); data outputs 0 and 3; statistics outputs 1, 2; [H] params."""

    params: tuple[int, ...] = ()
    scale_input = 2
    what = "SkipLayerNormalization"

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        rank = graph.rank(node.input(0))
        if rank is None:
            fx.freeze("input rank is unknown")
            return
        if (port.is_input and port.index not in (0, 1)) or (not port.is_input and port.index in (1, 2)):
            fx.freeze(f"{port.kind}put {port.index} holds normalisation parameters or statistics, not data")
            return
        here = graph.rank(port.tensor(node)) or rank
        axis = positive_axis(axis, here) + rank - here  # a lower-rank skip aligns at the last axis
        for j in (0, 3):
            if port.is_input or port.index != j:
                fx.to_output(j, axis, pairs)
        for i in (0, 1):
            if not (port.is_input and port.index == i):
                broadcast_to_input(fx, graph, node, i, axis, rank, pairs)
        if axis < rank - 1:
            for j in (1, 2):
                fx.to_output(j, axis, pairs)
            return
        fx.inexact(f"{self.what} normalises over the pruned (hidden) axis")
        cut_parameters(node, graph, self.params, self.scale_input, pairs, fx)

    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        x = input_shapes[0] if input_shapes else None
        if x is None:
            return None
        stats = tuple(x[:-1]) + (1,)
        return [x, stats, stats, x]


@register("SkipLayerNormalization", domain=MS)
class SkipLayerNormRule(_SkipNormBase):
    params = (2, 3, 4)


@register("SkipSimplifiedLayerNormalization", domain=MS)
class SkipSimplifiedLayerNormRule(_SkipNormBase):
    params = (2, 3)
    what = "SkipSimplifiedLayerNormalization"


@register("SimplifiedLayerNormalization")
class SimplifiedLayerNormRule(LayerNormRule):
    """RMSNorm: LayerNormalization's rule without a bias (input 2 is absent)."""

    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        x = input_shapes[0] if input_shapes else None
        if x is None:
            return None
        start = positive_axis(int(node.attr("axis", -1)), len(x))
        return [x, tuple(x[:start]) + (1,) * (len(x) - start)]


@register("EmbedLayerNormalization", domain=MS)
class EmbedLayerNormRule(Rule):
    """Output hidden channels are the embedding tables' columns and gamma / beta (inexact)."""

    tables = (2, 3, 4)

    def index_ranges(self, node: Node, graph: Graph) -> dict[str, int]:
        ranges = {}
        for ids, table in ((0, 2), (1, 4), (8, 3)):
            if node.input(ids) and node.input(table) and graph.is_const(node.input(table)):
                ranges[node.input(ids)] = graph.const_shape(node.input(table))[0]
        return ranges

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        if port.is_input or port.index == 1:
            fx.freeze(f"{port.kind}put {port.index} holds ids, tables or the mask index, not hidden channels")
            return
        rank = graph.rank(port.tensor(node))
        if rank is None or positive_axis(axis, rank) != rank - 1:
            fx.freeze("only the hidden (last) axis of the output is followed")
            return
        fx.to_output(2 - port.index, rank - 1, pairs)  # output 0 <-> embedding_sum (output 2)
        fx.label("embedding")
        fx.inexact("EmbedLayerNormalization normalises over the pruned (hidden) axis")
        cut_parameters(node, graph, self.tables + (5, 6), 5, pairs, fx)

    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        ids, table = input_shapes[0], (input_shapes + [None] * 3)[2]
        if ids is None or table is None or len(ids) != 2:
            return None
        out = tuple(ids) + (table[-1],)
        return [out, (ids[0],), out]


def cut_parameters(node: Node, graph: Graph, inputs: tuple[int, ...], scale_input: int, pairs: Pairs,
                   fx: Effects) -> None:
    """Cut the hidden (last) axis of every given parameter input; freeze if one is computed at run time."""
    for i in inputs:
        name = node.input(i)
        if not name:
            continue
        if not graph.is_const(name):
            fx.freeze(f"parameter input '{name}' is computed at run time")
            return
        fx.cut(name, -1, pairs, role=Role.OUT, scale=(i == scale_input))
