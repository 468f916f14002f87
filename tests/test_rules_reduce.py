"""Reductions and Softmax: over other axes the channels pass; over the channel axis inexact or frozen."""
import numpy as np
import pytest
from checks import dims, group_with, removed
from helpers import make_model, node, prune_with_oracle, save, weight
from onnx import TensorProto

from onnxprune import analyze

C, HW = 8, 4


def _reduce_model(op: str, axes: list[int], keepdims: int, opset: int, head: str):
    """conv (C) -> Relu -> Reduce* over `axes` -> 1x1 conv (keepdims) or Gemm (dropped axes)."""
    inits = {"w1": weight(C, 3, 3, 3), "b1": weight(C)}
    if opset >= 18 or (opset >= 13 and op == "ReduceSum"):
        inits["axes"] = np.array(axes, np.int64)
        reduce = node(op, ["r", "axes"], "m", keepdims=keepdims)
    else:
        reduce = node(op, ["r"], "m", axes=axes, keepdims=keepdims)
    nodes = [node("Conv", ["x", "w1", "b1"], "a", pads=[1, 1, 1, 1]), node("Relu", ["a"], "r"), reduce]
    if head == "conv":
        inits["w2"] = weight(5, C, 1, 1)
        nodes.append(node("Conv", ["m", "w2"], "y"))
        out = [1, 5, 1, 1]
    else:
        inits["w2"] = weight(5, C)
        nodes.append(node("Gemm", ["m", "w2"], "y", transB=1))
        out = [1, 5]
    return make_model(nodes, {"x": [1, 3, HW, HW]}, {"y": out}, inits, opset=opset)


@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax", "ReduceSum"])
@pytest.mark.parametrize("keepdims,head", [(1, "conv"), (0, "gemm")])
def test_reduce_over_spatial_axes_passes(tmp_path, opset, op, keepdims, head):
    model = _reduce_model(op, [2, 3], keepdims, opset, head)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    (group,) = analysis.prunable
    assert group.exact
    gone = removed(analysis, plan)
    assert gone[("w1", 0)] == gone[("w2", 1)] and len(gone[("w1", 0)]) == C // 2
    assert dims(pruned)["w2"][:2] == [5, C // 2]


def test_reduce_over_the_channel_axis_is_inexact(tmp_path):
    """RMSNorm-style statistic over the channels: the group stays prunable but is marked inexact."""
    inits = {"w1": weight(C, 3, 3, 3), "w2": weight(5, C, 1, 1)}
    nodes = [node("Conv", ["x", "w1"], "a", pads=[1, 1, 1, 1]), node("ReduceMean", ["a"], "mu", axes=[1]),
             node("Sub", ["a", "mu"], "c"), node("Conv", ["c", "w2"], "y")]
    model = make_model(nodes, {"x": [1, 3, HW, HW]}, {"y": [1, 5, HW, HW]}, inits, opset=13)
    analysis = analyze(save(model, tmp_path))
    (group,) = analysis.prunable
    assert not group.exact
    assert any("ReduceMean reduces over the pruned axis 1" in r for r in group.inexact_reasons)


def _softmax_model(axis: int | None, opset: int):
    inits = {"w1": weight(C, 3, 3, 3), "w2": weight(5, C, 1, 1)}
    attrs = {} if axis is None else {"axis": axis}
    nodes = [node("Conv", ["x", "w1"], "a", pads=[1, 1, 1, 1]), node("Softmax", ["a"], "s", **attrs),
             node("Conv", ["s", "w2"], "y")]
    return make_model(nodes, {"x": [1, 3, HW, HW]}, {"y": [1, 5, HW, HW]}, inits, opset=opset)


@pytest.mark.parametrize("axis,opset", [(1, 13), (-3, 13), (None, 11), (1, 11), (0, 11)])
def test_softmax_over_the_channel_axis_freezes(tmp_path, axis, opset):
    """Opset < 13 Softmax normalises over the flattened axes [axis:], so axis 0 or the default 1 covers the
    channels too; opset >= 13 over `axis` only."""
    analysis = analyze(save(_softmax_model(axis, opset), tmp_path))
    group = group_with(analysis, "w1")
    assert group.frozen_reason and "Softmax normalises over the channel axis 1" in group.frozen_reason


@pytest.mark.parametrize("axis,opset", [(-1, 13), (2, 13), (2, 11), (None, 13)])
def test_softmax_over_spatial_axes_passes(tmp_path, axis, opset):
    analysis, plan, pruned = prune_with_oracle(_softmax_model(axis, opset), tmp_path, ratio=0.5)
    assert analysis.prunable[0].exact and dims(pruned)["w2"] == [5, C // 2, 1, 1]


def test_argmax_over_channels_freezes(tmp_path):
    inits = {"w1": weight(C, 3, 3, 3)}
    nodes = [node("Conv", ["x", "w1"], "a", pads=[1, 1, 1, 1]), node("ArgMax", ["a"], "idx", axis=1),
             node("Cast", ["idx"], "y", to=TensorProto.FLOAT)]
    model = make_model(nodes, {"x": [1, 3, HW, HW]}, {"y": [1, 1, HW, HW]}, inits)
    analysis = analyze(save(model, tmp_path))
    (group,) = analysis.groups
    assert "ArgMax over the channel axis 1 returns channel positions" in group.frozen_reason


def test_argmax_over_a_spatial_axis_passes(tmp_path):
    inits = {"w1": weight(C, 3, 3, 3), "w2": weight(5, C, 1, 1)}
    nodes = [node("Conv", ["x", "w1"], "a", pads=[1, 1, 1, 1]), node("ArgMax", ["a"], "idx", axis=3),
             node("Cast", ["idx"], "f", to=TensorProto.FLOAT), node("Conv", ["f", "w2"], "y")]
    model = make_model(nodes, {"x": [1, 3, HW, HW]}, {"y": [1, 5, HW, 1]}, inits)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    assert dims(pruned)["w2"] == [5, C // 2, 1, 1]
