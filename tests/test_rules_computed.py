"""Weights computed from constants (Transpose, Reshape, Cast, Mul by a scale, DequantizeLinear):
the cut follows the constant subgraph up to the initializers, which keep their dtype."""
from __future__ import annotations

import numpy as np

from checks import attr, init, removed
from onnxprune.ir import limits
from helpers import make_model, node, prune_with_oracle, rng, weight


def _int8(*shape: int) -> np.ndarray:
    return rng().integers(-127, 128, shape).astype(np.int8)


def test_matmul_of_transposed_weight(tmp_path):
    """MatMul(x, Transpose(W [N, K])): the features of both layers are cut in W's own axes."""
    nodes = [node("Transpose", ["w1"], "w1t", perm=[1, 0]), node("MatMul", ["x", "w1t"], "h"),
             node("Relu", ["h"], "r"), node("Transpose", ["w2"], "w2t", perm=[1, 0]), node("MatMul", ["r", "w2t"], "y")]
    model = make_model(nodes, {"x": [3, 8]}, {"y": None}, {"w1": weight(12, 8), "w2": weight(5, 12)})
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    gone = removed(analysis, plan)
    assert len(gone[("w1", 0)]) == 6 and gone[("w2", 1)] == gone[("w1", 0)]
    assert init(pruned, "w1").shape == (6, 8) and init(pruned, "w2").shape == (5, 6)


def test_weight_only_int8_matmul(tmp_path):
    """MatMul(x, Mul(Cast(int8 W), per-column scale)): W stays int8, the scale is cut with its columns."""
    s1 = np.linspace(0.01, 0.02, 16).astype(np.float32)
    nodes = [node("Cast", ["w1q"], "w1f", to=1), node("Mul", ["w1f", "s1"], "w1"), node("MatMul", ["x", "w1"], "h"),
             node("Relu", ["h"], "r"),
             node("Cast", ["w2q"], "w2f", to=1), node("Mul", ["w2f", "s2"], "w2"), node("MatMul", ["r", "w2"], "y")]
    model = make_model(nodes, {"x": [2, 4, 8]}, {"y": None},
                       {"w1q": _int8(8, 16), "s1": s1, "w2q": _int8(16, 6), "s2": np.float32(0.01)})
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    cols = removed(analysis, plan)[("w1q", 1)]
    assert init(pruned, "w1q").dtype == np.int8 and init(pruned, "w1q").shape == (8, 16 - len(cols))
    np.testing.assert_array_equal(init(pruned, "s1"), np.delete(s1, cols))
    assert init(pruned, "w2q").dtype == np.int8 and init(pruned, "w2q").shape == (16 - len(cols), 6)
    assert init(pruned, "s2").shape == ()


def test_gemm_of_per_axis_dequantized_weight_and_reshaped_conv_weight(tmp_path):
    """Conv(x, Reshape(W flat)) then Gemm(f, DequantizeLinear(int8 W, per-row scale), transB=1)."""
    sf = np.linspace(0.01, 0.03, 6).astype(np.float32)
    nodes = [node("Reshape", ["wflat", "wshape"], "wc"), node("Conv", ["x", "wc", "bc"], "c"),
             node("Relu", ["c"], "r"), node("GlobalAveragePool", ["r"], "p"), node("Flatten", ["p"], "f"),
             node("DequantizeLinear", ["wq", "sf", "zf"], "wf", axis=0), node("Gemm", ["f", "wf", "bf"], "g", transB=1),
             node("Relu", ["g"], "gr"), node("Gemm", ["gr", "wo"], "y", transB=1)]
    model = make_model(nodes, {"x": [1, 3, 6, 6]}, {"y": None},
                       {"wflat": weight(8 * 3 * 3 * 3), "wshape": np.array([8, 3, 3, 3], np.int64), "bc": weight(8),
                        "wq": _int8(6, 8), "sf": sf, "zf": np.zeros(6, np.int8), "bf": weight(6), "wo": weight(4, 6)})
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, min_groups=2)
    gone = removed(analysis, plan)
    filters = gone[("wflat", 0)]  # the flat weight loses the 27 elements of every removed filter
    assert init(pruned, "wflat").shape == (27 * (8 - len(filters) // 27),)
    rows = gone[("wq", 0)]
    assert init(pruned, "wq").dtype == np.int8 and init(pruned, "wq").shape == (6 - len(rows), 8 - len(filters) // 27)
    np.testing.assert_array_equal(init(pruned, "sf"), np.delete(sf, rows))
    assert init(pruned, "zf").shape == (6 - len(rows),)


def test_lstm_weights_with_gates_reordered_by_slice_and_concat(tmp_path, monkeypatch):
    """The dynamo exporter reorders PyTorch's gates (i f g o) into ONNX's (i o f c) with Slice + Concat
    of the weight: hidden unit k is followed through the reorder into the original rows."""
    monkeypatch.setattr(limits, "PRIVATE_CONSTANT_MAX", 16)  # W and R stay shared by their four Slices
    hid, inp, seq, batch = 6, 5, 4, 2
    order = [0, 3, 1, 2]  # ONNX gate j is PyTorch gate order[j]
    nodes, inits = [], {"W_pt": weight(1, 4 * hid, inp), "R_pt": weight(1, 4 * hid, hid), "B": weight(1, 8 * hid),
                        "ax": np.array([1], np.int64), "zero": np.array([0], np.int64), "fc": weight(hid, 3)}
    for name in ("W", "R"):
        parts = []
        for j, g in enumerate(order):
            inits[f"{name}_lo{j}"] = np.array([g * hid], np.int64)
            inits[f"{name}_hi{j}"] = np.array([(g + 1) * hid], np.int64)
            nodes.append(node("Slice", [f"{name}_pt", f"{name}_lo{j}", f"{name}_hi{j}", "ax"], f"{name}_g{j}"))
            parts.append(f"{name}_g{j}")
        nodes.append(node("Concat", parts, name, axis=1))
    nodes += [node("LSTM", ["x", "W", "R", "B"], ["Y", "Yh"], hidden_size=hid),
              node("Squeeze", ["Yh", "zero"], "h"), node("MatMul", ["h", "fc"], "y")]
    model = make_model(nodes, {"x": [seq, batch, inp]}, {"y": None}, inits)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    units = [p for p in range(hid) if p not in removed(analysis, plan)[("fc", 0)]]
    rows = removed(analysis, plan)[("W_pt", 1)]
    assert rows == sorted(g * hid + k for g in range(4) for k in range(hid) if k not in units)
    assert init(pruned, "W_pt").shape == (1, 4 * (hid // 2), inp) and init(pruned, "R_pt").shape == (1, 4 * 3, 3)
    assert attr(pruned, next(n.name for n in pruned.graph.node if n.op_type == "LSTM"), "hidden_size") == hid // 2
