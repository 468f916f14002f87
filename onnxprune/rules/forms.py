"""How a linear consumer computes, for compensation: Y = sum_c sum_k A[r, c, k] * M[c, k, n] + b[n].

A rule whose op is such a consumer (Conv, Gemm, MatMul with a constant
weight) returns a `LinearForm` from `Rule.linear_form`. The form turns an
input activation into sampled rows A [R, C, K] (C input channels, K taps of
each: 1 for dense layers, the kernel for Conv), the weight into M [C, K, N]
and back, and says where the bias lives or how to add one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Graph, Node
from ..kinds import BiasAttach


@dataclass(frozen=True)
class LinearForm:
    node: str
    x: str  # the consumed input tensor
    x_axis: int  # its channel axis
    weight: str
    w_in_axis: int  # weight axis along input channels
    w_out_axis: int  # weight axis along output channels
    bias: str | None  # an existing bias initializer of shape [N]
    # (BiasAttach.INPUT, i): a new bias becomes input i; (BiasAttach.ADD,): an Add after the node
    bias_attach: tuple[BiasAttach] | tuple[BiasAttach, int]

    def matrix(self, w: np.ndarray) -> np.ndarray:
        """Weight -> M [C, K, N]."""
        raise NotImplementedError

    def weight_from(self, m: np.ndarray, like: np.ndarray) -> np.ndarray:
        """M [C, K, N] -> a weight shaped like `like` (same layout, new sizes)."""
        raise NotImplementedError

    def rows(self, x: np.ndarray, rng: np.random.Generator, max_rows: int) -> np.ndarray:
        """At most `max_rows` sampled rows A [R, C, K]; the same rng state picks the same rows for any C."""
        raise NotImplementedError


def _pick(total: int, rng: np.random.Generator, max_rows: int) -> np.ndarray:
    if total <= max_rows:
        return np.arange(total)
    return np.sort(rng.choice(total, size=max_rows, replace=False))


@dataclass(frozen=True)
class DenseForm(LinearForm):
    """Y[..., n] = X[..., c] W[c, n] (MatMul, Gemm transB=0) or W[n, c] (Gemm transB=1)."""

    def matrix(self, w: np.ndarray) -> np.ndarray:
        m = w if self.w_in_axis == 0 else w.T
        return m[:, None, :]

    def weight_from(self, m: np.ndarray, like: np.ndarray) -> np.ndarray:
        w = m[:, 0, :]
        return (w if self.w_in_axis == 0 else w.T).astype(like.dtype)

    def rows(self, x: np.ndarray, rng: np.random.Generator, max_rows: int) -> np.ndarray:
        flat = np.moveaxis(x, self.x_axis, -1).reshape(-1, x.shape[self.x_axis])
        return flat[_pick(len(flat), rng, max_rows)][:, :, None]


@dataclass(frozen=True)
class Conv2dForm(LinearForm):
    """Conv with group 1 and explicit pads: rows are sampled input patches."""

    kernel: tuple[int, int] = (1, 1)
    strides: tuple[int, int] = (1, 1)
    dilations: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)

    def matrix(self, w: np.ndarray) -> np.ndarray:
        m_out, c = w.shape[:2]
        return w.reshape(m_out, c, -1).transpose(1, 2, 0)

    def weight_from(self, m: np.ndarray, like: np.ndarray) -> np.ndarray:
        c, _, n = m.shape
        return m.transpose(2, 0, 1).reshape(n, c, *like.shape[2:]).astype(like.dtype)

    def rows(self, x: np.ndarray, rng: np.random.Generator, max_rows: int) -> np.ndarray:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        top, left, bottom, right = self.pads
        xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
        oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
        ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
        picked = _pick(x.shape[0] * oh * ow, rng, max_rows)
        n, rest = np.divmod(picked, oh * ow)
        i, j = np.divmod(rest, ow)
        ki = (np.arange(kh) * dh)[:, None] + np.zeros(kw, dtype=np.int64)[None, :]
        kj = np.zeros(kh, dtype=np.int64)[:, None] + (np.arange(kw) * dw)[None, :]
        rows_i = (i * sh)[:, None] + ki.reshape(-1)[None, :]  # [R, K]
        cols_j = (j * sw)[:, None] + kj.reshape(-1)[None, :]
        patches = xp[n[:, None], :, rows_i, cols_j]  # [R, K, C]
        return patches.transpose(0, 2, 1)


def dense_form(node: Node, graph: Graph, x_axis: int, w_in_axis: int) -> DenseForm:
    return DenseForm(node.name, node.input(0), x_axis, node.input(1), w_in_axis, 1 - w_in_axis,
                     None, (BiasAttach.INPUT, 2))


def following_bias(node: Node, graph: Graph, n: int) -> str | None:
    """The constant [N] operand of an Add that is the only reader of the node's output (MatMul + bias)."""
    users = graph.consumers(node.output(0))
    if len(users) != 1 or users[0][0].op_type != "Add" or graph.is_graph_output(node.output(0)):
        return None
    add = users[0][0]
    other = add.input(1 - users[0][1])
    if graph.is_const(other) and graph.const_shape(other) == (n,) and graph.const_users(other) == 1:
        return other
    return None


def conv2d_form(node: Node, graph: Graph) -> Conv2dForm | None:
    w = graph.shape(node.input(1))
    if w is None or len(w) != 4 or int(node.attr("group", 1)) != 1:
        return None
    if node.attr("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        return None
    bias = node.input(2) or None
    return Conv2dForm(node.name, node.input(0), 1, node.input(1), 1, 0, bias, (BiasAttach.INPUT, 2),
                      (int(w[2]), int(w[3])), tuple(node.attr("strides", [1, 1])),
                      tuple(node.attr("dilations", [1, 1])), tuple(node.attr("pads", [0, 0, 0, 0])))
