"""Ops that move axes around: Transpose, Squeeze, Unsqueeze, Flatten, Reshape.

Transpose and (Un)Squeeze renumber the axis. Flatten and a merging Reshape
turn one channel into a block of features (a conv channel feeding a Gemm
becomes H*W input features). Going backwards through a merge is only
possible when the other merged axes have size 1.
"""
from __future__ import annotations

import numpy as np

from .. import indexmap
from ..indexmap import Pairs
from ..ir import Graph, Node
from .base import Effects, Port, Rule, const_ints, positive_axis, register
from .shape_only import trace_shape_element


@register("Transpose")
class TransposeRule(Rule):
    """Output axis a is input axis perm[a]: the channels move with the permutation."""

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        rank = graph.rank(node.input(0))
        if rank is None:
            fx.freeze("input rank is unknown")
            return
        perm = list(node.attr("perm", list(range(rank - 1, -1, -1))))
        if port.is_input:
            fx.to_output(0, perm.index(axis), pairs)
        else:
            fx.to_input(0, perm[axis], pairs)


def _squeeze_axes(node: Node, graph: Graph) -> list[int] | None:
    axes = node.attr("axes")
    if axes is None and node.input(1):
        axes = const_ints(graph, node.input(1))
        if axes is None:
            return None
    return list(axes) if axes is not None else None


@register("Squeeze", "Unsqueeze")
class SqueezeRule(Rule):
    """The kept axes keep their order: map the axis by counting removed / inserted axes."""

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        in_shape, out_shape = graph.shape(node.input(0)), graph.shape(node.output(0))
        if in_shape is None or out_shape is None or (port.is_input and port.index != 0):
            fx.freeze("input or output shape is unknown" if port.index == 0 else "input 1 holds axes")
            return
        axes = _squeeze_axes(node, graph)
        squeeze = node.op_type == "Squeeze"
        if axes is None:
            if not squeeze or node.input(1):
                fx.freeze("axes are computed at run time")
                return
            axes = [i for i, d in enumerate(in_shape) if d == 1]
        long_rank = len(in_shape) if squeeze else len(out_shape)
        dropped = {positive_axis(a, long_rank) for a in axes}
        kept = [i for i in range(long_rank) if i not in dropped]
        on_long_side = port.is_input == squeeze
        if on_long_side:
            if axis in dropped:
                fx.freeze(f"axis {axis} is squeezed away")
                return
            short_axis = kept.index(axis)
            (fx.to_output if squeeze else fx.to_input)(0, short_axis, pairs)
        else:
            (fx.to_input if squeeze else fx.to_output)(0, kept[axis], pairs)


def _merge_map(in_shape: tuple, out_shape: tuple, axis: int) -> tuple[int, np.ndarray | None] | None:
    """Where input `axis` lands in the output of a reshape.

    Returns (out_axis, None) when the axis survives unchanged, (out_axis,
    table) when input axes merge into `out_axis` (table[p] = the flat
    positions of channel p), or None when the axis is split or mixed.
    """
    in_prefix = np.cumprod([1] + [int(d) for d in in_shape])
    out_prefix = np.cumprod([1] + [int(d) for d in out_shape])
    lo, hi = in_prefix[axis], in_prefix[axis + 1]
    for j in range(len(out_shape)):
        if out_prefix[j] == lo and out_prefix[j + 1] == hi:
            return j, None
    for j in range(len(out_shape)):
        if out_prefix[j] <= lo and out_prefix[j + 1] >= hi:
            starts = [i for i in range(axis + 1) if in_prefix[i] == out_prefix[j]]
            ends = [i for i in range(axis + 1, len(in_shape) + 1) if in_prefix[i] == out_prefix[j + 1]]
            if not starts or not ends:
                return None
            i0, i1 = max(starts), min(ends)
            return j, indexmap.block_table(tuple(int(d) for d in in_shape[i0:i1]), axis - i0)
    return None


def _single_axis_back(in_shape: tuple, out_shape: tuple, out_axis: int) -> int | None:
    """The one input axis that output `out_axis` is made of, when all other merged axes are 1."""
    in_prefix = np.cumprod([1] + [int(d) for d in in_shape])
    out_prefix = np.cumprod([1] + [int(d) for d in out_shape])
    lo, hi = out_prefix[out_axis], out_prefix[out_axis + 1]
    block = [i for i in range(len(in_shape)) if in_prefix[i] >= lo and in_prefix[i + 1] <= hi]
    if not block or in_prefix[block[0]] != lo or in_prefix[block[-1] + 1] != hi:
        return None
    big = [i for i in block if in_shape[i] != 1]
    if len(big) == 1:
        return big[0]
    return None


def _split_out_axes(in_shape: tuple, out_shape: tuple, axis: int) -> tuple[int, int] | None:
    """Output axes [j0, j1) that input `axis` is split into (exactly, at least two of them)."""
    in_prefix = np.cumprod([1] + [int(d) for d in in_shape])
    out_prefix = np.cumprod([1] + [int(d) for d in out_shape])
    starts = [j for j in range(len(out_shape) + 1) if out_prefix[j] == in_prefix[axis]]
    ends = [j for j in range(len(out_shape) + 1) if out_prefix[j] == in_prefix[axis + 1]]
    for j0 in starts:
        for j1 in ends:
            if j1 - j0 >= 2 and sum(1 for d in out_shape[j0:j1] if d != 1) >= 2:
                return j0, j1
    return None


def _split_block(in_shape: tuple, out_shape: tuple, out_axis: int) -> tuple[int, int, int] | None:
    """(input axis, j0, j1) when output axis `out_axis` is one of the axes an input axis was split into."""
    for axis in range(len(in_shape)):
        block = _split_out_axes(in_shape, out_shape, axis)
        if block and block[0] <= out_axis < block[1]:
            return axis, block[0], block[1]
    return None


def _remerged(node: Node, graph: Graph) -> bool:
    """True when the split is undone: Reshape -> Transpose(s) -> Reshape back to the input's shape
    (fake quantization pairs in between, as in a QDQ model)."""
    tensor = node.output(0)
    steps = 0
    while steps < 3:
        users = graph.consumers(tensor)
        if len(users) != 1:
            return False
        user = users[0][0]
        if user.op_type == "Reshape":
            return graph.shape(user.output(0)) == graph.shape(node.input(0))
        if user.op_type != "Transpose" and user.op_type not in _SAME_AXES:
            return False
        steps += user.op_type == "Transpose"
        tensor = user.output(0)
    return False


def _selected_parts(graph: Graph, tensor: str, axis: int, depth: int = 4) -> bool:
    """True when `axis` of `tensor` only picks parts: every reader (through Transpose / Unsqueeze /
    Squeeze) is a Gather with constant indices along it (a fused QKV [.., 3, hidden] taken apart)."""
    users = graph.consumers(tensor)
    if not users or depth == 0:
        return False
    for user, i in users:
        if i != 0:
            return False
        if user.op_type == "Gather":
            rank = graph.rank(tensor)
            if rank is None or positive_axis(int(user.attr("axis", 0)), rank) != axis:
                return False
            if not graph.is_const(user.input(1)):
                return False
            continue
        if user.op_type == "Split" and _split_into_squeezed_parts(graph, user, axis):
            continue
        moved = _moved_axis(user, graph, axis)
        step = 0 if user.op_type in _SAME_AXES else 1  # a QDQ pair between every two layout ops
        if moved is None or not _selected_parts(graph, user.output(0), moved, depth - step):
            return False
    return True


def _split_into_squeezed_parts(graph: Graph, split: Node, axis: int) -> bool:
    """Split along `axis` into size-1 parts, each squeezed away there: Gathers of every part (what
    ONNX Runtime's GatherSliceToSplitFusion makes of the Gathers of a fused QKV)."""
    rank = graph.rank(split.input(0))
    if rank is None or positive_axis(int(split.attr("axis", 0)), rank) != axis:
        return False
    for out in split.outputs:
        if graph.dim(out, axis) != 1:
            return False
        for reader, _ in graph.consumers(out):
            if reader.op_type != "Squeeze":
                return False
            if axis not in {positive_axis(a, rank) for a in _squeeze_axes(reader, graph) or []}:
                return False
    return True


# ops whose output keeps input 0's axes (fake quantization of a QDQ model sits between the parts)
_SAME_AXES = frozenset({"QuantizeLinear", "DequantizeLinear", "Identity", "Cast"})


def _moved_axis(node: Node, graph: Graph, axis: int) -> int | None:
    """Where `axis` of input 0 lands in the output of a Transpose / Squeeze / Unsqueeze, or of an op
    that keeps the axes (None: elsewhere)."""
    rank = graph.rank(node.input(0))
    if rank is None:
        return None
    if node.op_type in _SAME_AXES and graph.rank(node.output(0)) == rank:
        return axis
    if node.op_type == "Transpose":
        perm = list(node.attr("perm", list(range(rank - 1, -1, -1))))
        return perm.index(axis)
    if node.op_type not in ("Squeeze", "Unsqueeze"):
        return None
    axes = _squeeze_axes(node, graph)
    if axes is None:
        return None
    if node.op_type == "Squeeze":
        dropped = {positive_axis(a, rank) for a in axes}
        return None if axis in dropped else axis - sum(1 for a in dropped if a < axis)
    out_rank = rank + len(axes)
    kept = [i for i in range(out_rank) if i not in {positive_axis(a, out_rank) for a in axes}]
    return kept[axis]


class _MergeRule(Rule):
    """Shared by Flatten and Reshape: forward by block tables, backward through size-1 axes only."""

    def shapes(self, node: Node, graph: Graph) -> tuple[tuple, tuple] | None:
        in_shape, out_shape = graph.shape(node.input(0)), graph.shape(node.output(0))
        if in_shape is None or out_shape is None or None in in_shape or None in out_shape:
            return None
        return in_shape, out_shape

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        shapes = self.shapes(node, graph)
        if port.index != 0:
            fx.freeze("input 1 holds the target shape, not data")
            return
        if shapes is None:
            fx.freeze("input or output shape is not static (use --input-shape)")
            return
        in_shape, out_shape = shapes
        if port.is_input:
            mapped = _merge_map(in_shape, out_shape, axis)
            if mapped is None:
                self.split_axis(node, graph, axis, pairs, in_shape, out_shape, fx)
                return
            out_axis, table = mapped
            if not self.follow_size(node, graph, axis, out_axis, fx):
                return
            fx.to_output(0, out_axis, pairs if table is None else indexmap.through_table(pairs, table))
        else:
            in_axis = _single_axis_back(in_shape, out_shape, axis)
            if not self.follow_size(node, graph, -1 if in_axis is None else in_axis, axis, fx):
                return  # the output side's size changes too
            if in_axis is not None:
                fx.to_input(0, in_axis, pairs)
                return
            split = _split_block(in_shape, out_shape, axis)
            if split is None:
                self.merged_back(in_shape, out_shape, axis, pairs, fx)
                return
            in_axis, j0, j1 = split
            table = indexmap.block_table(tuple(int(d) for d in out_shape[j0:j1]), axis - j0)
            fx.to_input(0, in_axis, indexmap.through_table(pairs, table))

    def follow_size(self, node: Node, graph: Graph, in_axis: int, out_axis: int, fx: Effects) -> bool:
        return True

    def merged_back(self, in_shape: tuple, out_shape: tuple, axis: int, pairs: Pairs, fx: Effects) -> None:
        """Output axis `axis` merges several input axes (GQA: kv_heads x repeats -> heads).

        Only the outermost non-1 input axis can carry the channels: output
        position q belongs to its block q // inner. Going forward again the
        block widens to every position sharing it, which couples their roots.
        """
        in_prefix = np.cumprod([1] + [int(d) for d in in_shape])
        out_prefix = np.cumprod([1] + [int(d) for d in out_shape])
        lo, hi = out_prefix[axis], out_prefix[axis + 1]
        block = [i for i in range(len(in_shape)) if in_prefix[i] >= lo and in_prefix[i + 1] <= hi]
        big = [i for i in block if in_shape[i] != 1]
        if not big or in_prefix[block[0]] != lo or in_prefix[block[-1] + 1] != hi:
            fx.freeze(f"output axis {axis} mixes several input axes; channels cannot be traced back")
            return
        inner = int(hi // in_prefix[big[0] + 1])
        fx.to_input(0, big[0], np.stack([pairs[:, 0] // inner, pairs[:, 1]], axis=1))

    def split_axis(self, node, graph, axis, pairs, in_shape, out_shape, fx: Effects) -> None:
        """One input axis becomes several output axes (hidden -> heads x head_dim, channel shuffle).

        Only one of the new axes can carry the channels, so every position
        sharing its coordinate on that axis goes together: the input side is
        widened to whole blocks (whole heads), which couples their roots.
        """
        block = _split_out_axes(in_shape, out_shape, axis)
        if block is None:
            fx.freeze(f"axis {axis} of shape {list(in_shape)} is mixed into {list(out_shape)}")
            return
        j0, j1 = block
        tracked = self.split_choice(node, graph, out_shape, j0, j1)
        dims = tuple(int(d) for d in out_shape[j0:j1])
        table = indexmap.block_table(dims, tracked - j0)
        coord = np.empty(int(np.prod(dims)), dtype=np.int64)
        coord[table.reshape(-1)] = np.repeat(np.arange(table.shape[0]), table.shape[1])
        along = np.stack([coord[pairs[:, 0]], pairs[:, 1]], axis=1)
        if not self.follow_size(node, graph, -1, tracked, fx):
            return
        # `along` couples every root of a block on the output side; one root per block suffices upstream
        fx.to_input(0, axis, indexmap.through_table(indexmap.representatives(along), table))
        fx.to_output(0, tracked, along)

    def split_choice(self, node: Node, graph: Graph, out_shape: tuple, j0: int, j1: int) -> int:
        """Which of the new axes carries channels: the outermost non-1 axis (whole heads), or the
        next one when the outermost only picks parts by constant Gathers (fused QKV: the q, k, v
        parts stay equal, like an equal Split), or the innermost one when the split is undone by a
        later Reshape (a channel shuffle's groups axis is tiny and only permutes channels)."""
        big = [j for j in range(j0, j1) if out_shape[j] != 1]
        if _remerged(node, graph):
            return big[-1]
        if len(big) > 1 and _selected_parts(graph, node.output(0), big[0]):
            return big[1]
        return big[0]


@register("Flatten")
class FlattenRule(_MergeRule):
    """Output is 2-D: [prod(in[:axis]), prod(in[axis:])]; no constant to fix."""


@register("Reshape")
class ReshapeRule(_MergeRule):
    """The target shape constant's element for the changed axis follows the new size."""

    def follow_size(self, node: Node, graph: Graph, in_axis: int, out_axis: int, fx: Effects) -> bool:
        source = trace_shape_element(graph, node.input(1), out_axis)
        if source.dim is not None:  # copies a tensor's size at run time (times k): follows when that size does
            times = f"{source.scale} x " if source.scale != 1 else ""
            fx.require(source.dim, f"target shape element {out_axis} copies {times}the size of '{source.dim[0]}' "
                                   f"axis {source.dim[1]}, which does not follow the channels", source.scale,
                       (node.output(0), out_axis))
            return True
        if source.const is None:
            fx.freeze(f"target shape element {out_axis} is computed at run time and cannot be traced to a "
                      f"constant to rewrite: the pruned size would be stale")
            return False
        value = source.value
        if value == -1:
            return True
        if value == 0 and not int(node.attr("allowzero", 0)):
            if in_axis == out_axis and graph.dim(node.input(0), in_axis) == graph.dim(node.output(0), out_axis):
                return True  # copies the input's own (pruned) size
            fx.freeze(f"target shape element {out_axis} copies an input dim that does not follow the channels")
            return False
        fx.edit_const(source.const, source.index, (node.output(0), out_axis))
        return True
