"""ONNX Runtime's com.microsoft.MatMulNBits: weight-only int4 (or 2..8 bit) MatMul in packed blocks.

Y [.., N] = A [.., K] @ dequantize(B)^T. B is uint8 [N, k_blocks, blob] (each
row n holds the K weights of output feature n in blocks of `block_size`, packed
`bits` to a byte), scales [N, k_blocks] or flat [N * k_blocks], zero points
(optional) packed uint8 [N, ceil(k_blocks * bits / 8)] (or flat), or of the
scales' type and shape; bias [N].

* Output features: row n of B, of the scales and of the zero points, entry n
  of the bias; the `N` attribute follows.
* Input features: only whole blocks can go. Channel k stands for its block
  k // block_size (every channel of a block cuts the same B position, which
  couples them into one unit), and for the byte of packed zero points that
  holds the block's zero point (blocks sharing a byte go together). The scales
  of the removed blocks are consumed too (role "in"): the oracle zeroes them,
  so a removed block contributes exactly zero. `K` follows.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from .. import indexmap
from ..indexmap import Pairs
from ..ir import Graph, Node
from ..kinds import Role
from .base import Effects, Port, Rule, prod, register

SCALES, ZERO_POINTS, G_IDX, BIAS = 2, 3, 4, 5


@register("MatMulNBits", domain="com.microsoft")
class MatMulNBitsRule(Rule):
    """Output features cut rows of the packed B, scales, zero points and bias; input features go in whole blocks."""

    def roots(self, node: Node, graph: Graph) -> Iterator[tuple[str, int]]:
        if graph.is_weight(node.input(1)):
            yield node.output(0), -1

    def macs(self, node: Node, graph: Graph) -> int:
        y = graph.shape(node.output(0))
        if y is None or None in y:
            return 0
        return prod(y) * int(node.attr("K", 0))

    def values_per_element(self, node: Node, graph: Graph, tensor: str) -> int:
        """B and packed (uint8) zero points hold 8 // bits weights a byte."""
        zp = graph.const(tensor) if tensor == node.input(ZERO_POINTS) else None
        packed = tensor == node.input(1) or (zp is not None and zp.dtype == np.uint8)
        return 8 // int(node.attr("bits", 4)) if packed else 1

    def infer_shape(self, node: Node, input_shapes: list) -> list | None:
        """A [.., K] -> Y [.., N], N the attribute."""
        a = input_shapes[0] if input_shapes else None
        n = int(node.attr("N", 0))
        return None if a is None or not a or n <= 0 else [tuple(a[:-1]) + (n,)]

    def propagate(self, node: Node, graph: Graph, port: Port, axis: int, pairs: Pairs, fx: Effects) -> None:
        rank = graph.rank(port.tensor(node))
        if port.index != 0 or rank is None:
            fx.freeze(f"{port.kind}put {port.index} holds packed weights or their parameters, not data"
                      if port.index else "rank of the data is unknown")
            return
        if node.input(G_IDX):
            fx.freeze(f"g_idx '{node.input(G_IDX)}' reorders the input features across blocks")
            return
        if axis != rank - 1:  # batch and sequence axes: Y has A's rank
            fx.to_ports(port, axis, pairs, [0], [0])
            return
        if port.is_input:
            self._inputs(node, graph, rank, pairs, fx)
        else:
            self._outputs(node, graph, rank, pairs, fx)

    def _outputs(self, node: Node, graph: Graph, rank: int, pairs: Pairs, fx: Effects) -> None:
        """Output features (Y's last axis, of rank `rank`)."""
        n = int(node.attr("N", 0))
        fx.cut(node.input(1), 0, pairs, role=Role.OUT)
        for i in (SCALES, ZERO_POINTS):
            name = node.input(i)
            if not name:
                continue
            if graph.rank(name) != 1:
                fx.cut(name, 0, pairs, role=Role.OUT)
                continue
            size = graph.dim(name, 0)  # flat [N * per_row]
            if size is None:
                fx.freeze(f"size of the flat quantization parameter '{name}' is unknown")
                return
            fx.cut(name, 0, indexmap.expand(pairs, int(size) // n), role=Role.OUT)
        if node.input(BIAS):
            fx.cut(node.input(BIAS), 0, pairs, role=Role.OUT)
        fx.edit_attr("N", -1, (node.output(0), rank - 1))

    def _inputs(self, node: Node, graph: Graph, rank: int, pairs: Pairs, fx: Effects) -> None:
        """Input features (A's last axis, of rank `rank`): whole blocks."""
        n, bits, block = int(node.attr("N", 0)), int(node.attr("bits", 4)), int(node.attr("block_size", 0))
        dim = graph.dim(node.input(1), 1)
        if dim is None:
            fx.freeze(f"block count of packed weight '{node.input(1)}' is unknown")
            return
        k_blocks = int(dim)
        blocks = np.stack([pairs[:, 0] // block, pairs[:, 1]], axis=1)
        fx.cut(node.input(1), 1, blocks, role=Role.IN)
        scales = node.input(SCALES)
        self._per_block(graph, scales, blocks, n, k_blocks, fx)
        zp = node.input(ZERO_POINTS)
        if zp:
            zp_value = graph.const(zp)
            if zp_value is not None and zp_value.dtype == np.uint8 and bits < 8:
                per_byte = 8 // bits  # packed: several blocks' zero points share a byte
                blocks = np.stack([blocks[:, 0] // per_byte, blocks[:, 1]], axis=1)
                k_blocks = -(-k_blocks // per_byte)
            self._per_block(graph, zp, blocks, n, k_blocks, fx)
        fx.edit_attr("K", -1, (node.input(0), rank - 1))
        fx.label(f"blocks of {block} input features")

    @staticmethod
    def _per_block(graph: Graph, name: str, blocks: Pairs, n: int, per_row: int, fx: Effects) -> None:
        """Cut block positions of a [N, per_row] tensor, or of its flat [N * per_row] form."""
        if graph.rank(name) == 2:
            fx.cut(name, 1, blocks, role=Role.IN)
            return
        rows = np.arange(n, dtype=np.int64) * per_row
        flat = np.stack([(rows[None, :] + blocks[:, :1]).reshape(-1), np.repeat(blocks[:, 1], n)], axis=1)
        fx.cut(name, 0, flat, role=Role.IN)
