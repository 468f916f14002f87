"""Recurrent initial states built by ConstantOfShape / Tile: the shape constants follow the hidden size."""
import numpy as np
import pytest
from onnx import TensorProto

from checks import attr, init
from helpers import make_model, node, prune_with_oracle, save, weight
from onnxprune import analyze
from onnxprune.testing import make_plan, weight_scores

HID, EMB, SEQ = 10, 6, 5


def _lstm(state_nodes: list, h0: str, c0: str, inits: dict, batch) -> object:
    inits.update({"emb": weight(20, EMB, scale=1.0), "W": weight(1, 4 * HID, EMB), "R": weight(1, 4 * HID, HID),
                  "B": weight(1, 8 * HID), "last": np.array(-1, np.int64), "fc": weight(3, HID)})
    nodes = [node("Gather", ["emb", "tokens"], "e"), node("Transpose", ["e"], "x", perm=[1, 0, 2]), *state_nodes,
             node("LSTM", ["x", "W", "R", "B", "", h0, c0], ["Y", "Yh"], hidden_size=HID),
             node("Gather", ["Yh", "last"], "h", axis=0),
             node("Gemm", ["h", "fc"], "logits", transB=1)]
    return make_model(nodes, {"tokens": [batch, SEQ]}, {"logits": None}, inits,
                      input_types={"tokens": TensorProto.INT64})


def test_constant_of_shape_state_with_dynamic_batch(tmp_path):
    """h0 = c0 = ConstantOfShape(Concat([1], batch from Shape(x), [H])): the H element is rewritten."""
    inits = {"one": np.array([1], np.int64), "hid": np.array([HID], np.int64), "i1": np.array(1, np.int64),
             "ax0": np.array([0], np.int64)}
    state = [node("Shape", ["x"], "xs"), node("Gather", ["xs", "i1"], "b"), node("Unsqueeze", ["b", "ax0"], "bu"),
             node("Concat", ["one", "bu", "hid"], "shape", axis=0), node("ConstantOfShape", ["shape"], "h0"),
             node("ConstantOfShape", ["shape"], "c0")]
    model = _lstm(state, "h0", "c0", inits, "batch")
    analysis = analyze(save(model, tmp_path))  # the batch stays dynamic: nothing is folded
    (group,) = [g for g in analysis.prunable if "hidden" in " ".join(g.kinds)]
    plan = make_plan(analysis, weight_scores(analysis, "l1", groups=[group]), 0.5)
    assert analysis.verify(plan, input_shapes={"tokens": (3, SEQ)}).passed
    pruned = analysis.apply(plan).proto
    assert attr(pruned, next(n.name for n in pruned.graph.node if n.op_type == "LSTM"), "hidden_size") == HID // 2
    assert init(pruned, "hid").tolist() == [HID // 2]


@pytest.mark.parametrize("filled_axis", [True, False])
def test_tile_state(tmp_path, filled_axis):
    """Tile(zeros [1,1,1], [1,B,H]) fills the hidden axis; Tile(h [1,1,H], [1,B,1]) carries it."""
    if filled_axis:
        inits = {"z": np.zeros((1, 1, 1), np.float32), "rep": np.array([1, 2, HID], np.int64)}
    else:
        inits = {"z": weight(1, 1, HID), "rep": np.array([1, 2, 1], np.int64)}
    state = [node("Tile", ["z", "rep"], "h0")]
    model = _lstm(state, "h0", "h0", inits, 2)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, min_groups=1)
    if filled_axis:
        assert init(pruned, "rep").tolist() == [1, 2, HID // 2]
    else:
        assert init(pruned, "z").shape == (1, 1, HID // 2) and init(pruned, "rep").tolist() == [1, 2, 1]
