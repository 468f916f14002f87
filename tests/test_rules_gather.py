"""Gather: embedding tables, constant indices on other axes, constant tables gathered by constant indices."""
import numpy as np
import onnx
from helpers import make_model, node, prune_with_oracle, save, weight
from onnx import TensorProto

from onnxprune import analyze

V, E, S, N = 30, 8, 5, 6


def _dims(model: onnx.ModelProto) -> dict:
    return {t.name: list(t.dims) for t in model.graph.initializer}


def test_embedding_table_columns_are_a_channel_space(tmp_path):
    inits = {"table": weight(V, E, scale=1.0), "w": weight(E, N)}
    nodes = [node("Gather", ["table", "ids"], "e"), node("Relu", ["e"], "r"), node("MatMul", ["r", "w"], "y")]
    model = make_model(nodes, {"ids": [2, S]}, {"y": None}, inits, input_types={"ids": TensorProto.INT64})
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    (group,) = [g for g in analysis.groups if g.root == ("e", 2)]
    assert "embedding" in group.kinds
    assert {(s.tensor, s.axis, s.role) for s in group.slices} == {("table", 1, "out"), ("w", 0, "in")}
    assert _dims(pruned)["table"] == [V, E // 2] and _dims(pruned)["w"] == [E // 2, N]


def test_constant_index_on_another_axis_renumbers_the_channel_axis(tmp_path):
    """x [B, S, E] @ w1 -> take step -1 (axis 1, scalar index: the axis goes) -> [B, N] -> Gemm."""
    inits = {"w1": weight(E, N), "last": np.array(-1, np.int64), "w2": weight(3, N), "b2": weight(3)}
    nodes = [node("MatMul", ["x", "w1"], "h"), node("Gather", ["h", "last"], "h_last", axis=1),
             node("Gemm", ["h_last", "w2", "b2"], "y", transB=1)]
    model = make_model(nodes, {"x": [2, S, E]}, {"y": None}, inits)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    assert _dims(pruned)["w1"] == [E, N // 2] and _dims(pruned)["w2"] == [3, N // 2]


def test_gather_along_the_channel_axis_freezes(tmp_path):
    inits = {"w1": weight(E, N), "pick": np.array([0, 2], np.int64)}
    nodes = [node("MatMul", ["x", "w1"], "h"), node("Gather", ["h", "pick"], "y", axis=2)]
    analysis = analyze(save(make_model(nodes, {"x": [2, S, E]}, {"y": None}, inits), tmp_path))
    (group,) = analysis.groups
    assert "gathers along the channel axis 2" in group.frozen_reason


def test_constant_table_gathered_by_constant_index_is_cut_with_the_channels(tmp_path):
    """Relative position bias: table [R, N] gathered by a constant index, added to per-channel activations."""
    inits = {"w1": weight(E, N), "table": weight(7, N), "rel": np.array([0, 3, 6, 2, 1], np.int64),
             "w2": weight(N, 4)}
    nodes = [node("MatMul", ["x", "w1"], "h"), node("Gather", ["table", "rel"], "bias"),
             node("Add", ["h", "bias"], "hb"), node("MatMul", ["hb", "w2"], "y")]
    model = make_model(nodes, {"x": [2, S, E]}, {"y": None}, inits)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    assert _dims(pruned)["table"] == [7, N // 2] and _dims(pruned)["w2"] == [N // 2, 4]
