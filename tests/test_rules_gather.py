"""Gather: embedding tables, constant indices on other axes, constant tables gathered by constant indices."""
import numpy as np
import pytest
import onnx
from helpers import make_model, node, prune_with_oracle, save, weight
from onnx import TensorProto

from onnxprune import analyze
from onnxprune.rule_harness import visit

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


def test_gather_along_the_channel_axis_freezes():
    v = visit("Gather", [(2, S, N), np.array([0, 2], np.int64)], {"axis": 2}, at=("in0", 2))
    assert v.frozen == "gathers along the channel axis 2: indices would need renumbering"


def test_constant_table_gathered_by_constant_index_is_cut_with_the_channels(tmp_path):
    """Relative position bias: table [R, N] gathered by a constant index, added to per-channel activations."""
    inits = {"w1": weight(E, N), "table": weight(7, N), "rel": np.array([0, 3, 6, 2, 1], np.int64),
             "w2": weight(N, 4)}
    nodes = [node("MatMul", ["x", "w1"], "h"), node("Gather", ["table", "rel"], "bias"),
             node("Add", ["h", "bias"], "hb"), node("MatMul", ["hb", "w2"], "y")]
    model = make_model(nodes, {"x": [2, S, E]}, {"y": None}, inits)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    assert _dims(pruned)["table"] == [7, N // 2] and _dims(pruned)["w2"] == [N // 2, 4]


@pytest.fixture
def large_is_small(monkeypatch):
    """Treat the toy table as a large weight: small shared constants are cloned per user at load."""
    import onnxprune.ir
    monkeypatch.setattr(onnxprune.ir.limits, "PRIVATE_CONSTANT_MAX", 4)


def _tied(extra_user: bool = False) -> onnx.ModelProto:
    """Tied embedding: ids -> Gather(E) -> FFN residual -> Gemm(., E, transB=1) logits.

    extra_user: E is also the weight of an unrelated MatMul whose output is a graph output.
    """
    inits = {"E": weight(V, E, scale=1.0), "w1": weight(E, N), "w2": weight(N, E)}
    nodes = [node("Gather", ["E", "ids"], "emb"), node("Gemm", ["emb", "w1"], "h"), node("Relu", ["h"], "hr"),
             node("Gemm", ["hr", "w2"], "o"), node("Add", ["emb", "o"], "s"),
             node("Gemm", ["s", "E"], "logits", transB=1)]
    inputs, outputs = {"ids": [S]}, {"logits": None}
    if extra_user:
        nodes.append(node("MatMul", ["x", "E"], "side"))
        inputs["x"], outputs["side"] = [2, V], None
    return make_model(nodes, inputs, outputs, inits, input_types={"ids": TensorProto.INT64})


def test_tied_embedding_and_output_weight_are_cut_together(tmp_path, large_is_small):
    """E is read by the embedding Gather and the output Gemm: both reached by the hidden group with
    the same columns, so E loses those columns once and the oracle still passes."""
    analysis, plan, pruned = prune_with_oracle(_tied(), tmp_path, ratio=0.5)
    (group,) = [g for g in analysis.groups if any(s.tensor == "E" for s in g.slices)]
    assert group.exact and {(s.tensor, s.axis) for s in group.slices if s.tensor == "E"} == {("E", 1)}
    assert group.id in {pg.id for pg in plan.groups}
    dims = _dims(pruned)
    assert dims["E"] == [V, E // 2] and dims["w1"][0] == E // 2 and dims["w2"][1] == E // 2


def test_shared_initializer_with_an_unreached_user_freezes(tmp_path, large_is_small):
    analysis = analyze(save(_tied(extra_user=True), tmp_path), {"x": (2, V)})
    frozen = [g.frozen_reason for g in analysis.groups if g.frozen_reason and "'E'" in g.frozen_reason]
    assert frozen and "shared by 3 nodes" in frozen[0] and "do not reach" in frozen[0]


def test_embedding_indices_get_random_values_inside_the_table():
    """Validation feeds token ids below the table's row count (the rule says so), not just ones."""
    from onnxprune.testing import random_inputs
    model = make_model([node("Gather", ["table", "ids"], "emb"), node("ReduceSum", ["emb"], "y", keepdims=0)],
                       {"ids": [2, 50]}, {"y": None}, {"table": weight(V, E)},
                       input_types={"ids": TensorProto.INT64})
    ids = random_inputs(model, {})["ids"]
    assert ids.min() >= 0 and ids.max() < V and len(np.unique(ids)) > 1
