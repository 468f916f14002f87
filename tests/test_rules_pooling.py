"""Pooling, Pad, Resize/Upsample: channels pass through; anything done along the channel axis freezes."""
import numpy as np
import pytest
from checks import attr, dims, init, removed
from helpers import frozen_reasons, make_model, node, prune_with_oracle, save, weight
from onnx import TensorProto

from onnxprune import analyze

C = 8


def _conv_op_conv(middle: list, inits: dict | None = None, opset: int = 17, out_hw: int = 6, extra_outputs=None,
                  c_next: int = C):
    """x [1, 3, 6, 6] -> Conv (C) -> Relu -> `middle` (reads 'r', writes 'm', c_next channels) -> 1x1 Conv -> y."""
    inits = {"w1": weight(C, 3, 3, 3), "b1": weight(C), "w2": weight(4, c_next, 1, 1), **(inits or {})}
    nodes = [node("Conv", ["x", "w1", "b1"], "a", pads=[1, 1, 1, 1]), node("Relu", ["a"], "r"), *middle,
             node("Conv", ["m", "w2"], "y")]
    outputs = {"y": [1, 4, out_hw, out_hw], **(extra_outputs or {})}
    return make_model(nodes, {"x": [1, 3, 6, 6]}, outputs, inits, opset=opset)


def _check_pair(analysis, plan, pruned):
    gone = removed(analysis, plan)
    assert len(gone[("w1", 0)]) == C // 2 and gone[("w1", 0)] == gone[("b1", 0)] == gone[("w2", 1)]
    assert dims(pruned)["w1"][0] == C // 2 and dims(pruned)["w2"] == [4, C // 2, 1, 1]


@pytest.mark.parametrize("op,attrs,out_hw", [
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]}, 3),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, 6),
    ("LpPool", {"kernel_shape": [2, 2], "p": 2}, 5),
    ("GlobalAveragePool", {}, 1),
    ("GlobalMaxPool", {}, 1),
    ("GlobalLpPool", {"p": 2}, 1),
])
def test_pooling_passes_channels_through(tmp_path, op, attrs, out_hw):
    model = _conv_op_conv([node(op, ["r"], "m", **attrs)], out_hw=out_hw)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    _check_pair(analysis, plan, pruned)


def test_maxpool_indices_output_freezes(tmp_path):
    """The indices output encodes channel offsets: pruning channels would change its values."""
    model = _conv_op_conv([node("MaxPool", ["r"], ["m", "idx"], kernel_shape=[2, 2], strides=[2, 2]),
                           node("Cast", ["idx"], "idx_f", to=TensorProto.FLOAT)],
                          out_hw=3, extra_outputs={"idx_f": [1, C, 3, 3]})
    analysis = analyze(save(model, tmp_path))
    assert not analysis.prunable
    assert any("MaxPool indices" in r for r in frozen_reasons(analysis))


SPATIAL_PADS = [0, 0, 1, 2, 0, 0, 2, 1]
CHANNEL_PADS = [0, 1, 0, 0, 0, 1, 0, 0]


def _pad(pads: list[int], opset: int, axes: list[int] | None = None):
    inits = {}
    if opset < 11:
        middle = [node("Pad", ["r"], "m", pads=pads)]
    else:
        inits["pads"] = np.array(pads, np.int64)
        inputs = ["r", "pads"]
        if axes is not None:
            inits["axes"] = np.array(axes, np.int64)
            inputs += ["", "axes"]
        middle = [node("Pad", inputs, "m")]
    full = pads if axes is None else [0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]]
    h, w = 6 + full[2] + full[6], 6 + full[3] + full[7]
    c_next = C + full[1] + full[5]
    inits.update({"w1": weight(C, 3, 3, 3), "b1": weight(C), "w2": weight(4, c_next, 1, 1)})
    nodes = [node("Conv", ["x", "w1", "b1"], "a", pads=[1, 1, 1, 1]), node("Relu", ["a"], "r"), *middle,
             node("Conv", ["m", "w2"], "y")]
    return make_model(nodes, {"x": [1, 3, 6, 6]}, {"y": [1, 4, h, w]}, inits, opset=opset)


@pytest.mark.parametrize("opset", [10, 11, 13])
def test_pad_on_spatial_axes_passes_and_keeps_its_pads(tmp_path, opset):
    model = _pad(SPATIAL_PADS, opset)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    _check_pair(analysis, plan, pruned)
    pads = attr(pruned, "Pad_m", "pads") if opset < 11 else init(pruned, "pads")
    assert list(pads) == SPATIAL_PADS


def test_pad_with_axes_input_opset18(tmp_path):
    model = _pad([1, 2, 2, 1], 18, axes=[2, 3])
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    _check_pair(analysis, plan, pruned)


@pytest.mark.parametrize("opset", [10, 11])
def test_pad_on_the_channel_axis_freezes(tmp_path, opset):
    model = _pad(CHANNEL_PADS, opset)
    analysis = analyze(save(model, tmp_path))
    # the first conv's channels are padded: frozen; the 1x1 conv's output reaches the graph output
    assert not analysis.prunable
    assert any("pads the channel axis 1" in r for r in frozen_reasons(analysis))


def test_resize_with_scales_passes(tmp_path):
    inits = {"scales": np.array([1, 1, 2, 2], np.float32)}
    model = _conv_op_conv([node("Resize", ["r", "", "scales"], "m", mode="nearest")], inits, opset=13, out_hw=12)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    _check_pair(analysis, plan, pruned)
    assert init(pruned, "scales").tolist() == [1, 1, 2, 2]


def test_resize_with_sizes_rewrites_the_channel_size(tmp_path):
    inits = {"sizes": np.array([1, C, 12, 12], np.int64)}
    model = _conv_op_conv([node("Resize", ["r", "", "", "sizes"], "m", mode="nearest")], inits, opset=13, out_hw=12)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    _check_pair(analysis, plan, pruned)
    assert init(pruned, "sizes").tolist() == [1, C // 2, 12, 12]


def test_upsample_opset9_passes(tmp_path):
    inits = {"scales": np.array([1, 1, 2, 2], np.float32)}
    model = _conv_op_conv([node("Upsample", ["r", "scales"], "m", mode="nearest")], inits, opset=9, out_hw=12)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    _check_pair(analysis, plan, pruned)


def test_resize_along_the_channel_axis_freezes(tmp_path):
    inits = {"scales": np.array([1, 2, 1, 1], np.float32)}
    model = _conv_op_conv([node("Resize", ["r", "", "scales"], "m", mode="nearest")], inits, opset=13, c_next=2 * C)
    analysis = analyze(save(model, tmp_path))
    assert not analysis.prunable
    assert any("resizes axis 1" in r for r in frozen_reasons(analysis))
