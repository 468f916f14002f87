"""Spatial ops (pooling, Pad, Resize): channels pass through; Resize `sizes` must follow them."""
import numpy as np
import onnx
import pytest
from helpers import frozen_reasons, make_model, node, param_count, prune_with_oracle, save, weight

from onnxprune import analyze

I64 = np.int64


DYNAMIC = {"x": (1, 3, 8, 8)}  # feeds for models declared with a dynamic batch (no shape folding)


def _resize_model(sizes_nodes, sizes_inits, sizes_name="sizes", extra_conv=False, batch="N"):
    """conv(x) -> Relu -> Resize(sizes) -> conv -> y; sizes built by `sizes_nodes`.

    A dynamic batch keeps computed sizes computed: with a fully static input,
    analysis folds shape arithmetic into constants first (onnxprune/fold.py).
    """
    inits = {"w1": weight(8, 3, 3, 3), "w2": weight(4, 8, 1, 1), **sizes_inits}
    nodes = [node("Conv", ["x", "w1"], "a", pads=[1, 1, 1, 1]), node("Relu", ["a"], "r")]
    if extra_conv:
        inits["w0"] = weight(8, 3, 1, 1)
        inits["w5"] = weight(4, 8, 1, 1)
        nodes += [node("Conv", ["x", "w0"], "other"), node("Conv", ["other", "w5"], "y2")]
    nodes += sizes_nodes
    nodes += [node("Resize", ["r", "", "", sizes_name], "u", mode="nearest"),
              node("Conv", ["u", "w2"], "y")]
    outputs = {"y": None, **({"y2": None} if extra_conv else {})}
    return make_model(nodes, {"x": [batch, 3, 8, 8]}, outputs, inits)


def _shape_slice_concat(of: str):
    """The exporter's pattern: Concat(Shape(of)[0:2], [16, 16])."""
    nodes = [node("Shape", [of], "shp"), node("Slice", ["shp", "s0", "s2", "ax0"], "nc"),
             node("Concat", ["nc", "hw"], "sizes", axis=0)]
    inits = {"s0": np.array([0], I64), "s2": np.array([2], I64), "ax0": np.array([0], I64),
             "hw": np.array([16, 16], I64)}
    return nodes, inits


def test_resize_with_computed_sizes_from_its_own_input(tmp_path):
    model = _resize_model(*_shape_slice_concat("r"))
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, input_shapes=DYNAMIC)
    assert all("reaches graph output 'y'" in r for r in frozen_reasons(analysis))
    assert param_count(pruned) < param_count(model)
    assert any(n.op_type == "Shape" for n in pruned.graph.node)  # still computed at run time


def test_resize_with_sizes_gathered_element_by_element(tmp_path):
    nodes = [node("Shape", ["r"], "shp"),
             node("Gather", ["shp", "i0"], "n", axis=0), node("Gather", ["shp", "i1"], "c", axis=0),
             node("Unsqueeze", ["n", "ax0"], "n1"), node("Unsqueeze", ["c", "ax0"], "c1"),
             node("Concat", ["n1", "c1", "hw"], "sizes", axis=0)]
    inits = {"i0": np.array(0, I64), "i1": np.array(1, I64), "ax0": np.array([0], I64),
             "hw": np.array([16, 16], I64)}
    prune_with_oracle(_resize_model(nodes, inits), tmp_path, ratio=0.5, input_shapes=DYNAMIC)


def test_resize_with_constant_sizes_is_edited(tmp_path):
    model = _resize_model([], {"sizes": np.array([1, 8, 16, 16], I64)}, batch=1)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    sizes = {t.name: onnx.numpy_helper.to_array(t) for t in pruned.graph.initializer}["sizes"]
    assert sizes.tolist() == [1, 4, 16, 16]


def test_resize_with_sizes_copied_from_another_tensor_freezes(tmp_path):
    """The channel element copies a different tensor's channel count: not provable, so frozen."""
    nodes, inits = _shape_slice_concat("other")
    model = _resize_model(nodes, inits, extra_conv=True)
    analysis = analyze(save(model, tmp_path), DYNAMIC)
    reasons = frozen_reasons(analysis)
    assert any("sizes 'sizes' are computed at run time and element 1 copies 'other' axis 1" in r for r in reasons)


def test_static_model_folds_computed_sizes_into_an_edited_constant(tmp_path):
    """With a static input the same sizes are folded to a constant, which then follows the channels."""
    nodes, inits = _shape_slice_concat("other")
    model = _resize_model(nodes, inits, extra_conv=True, batch=1)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, min_groups=2)
    resize = next(n for n in pruned.graph.node if n.op_type == "Resize")
    sizes = {t.name: onnx.numpy_helper.to_array(t) for t in pruned.graph.initializer}[resize.input[3]]
    assert sizes.tolist() == [1, 4, 16, 16]


def test_resize_scaling_the_channel_axis_freezes(tmp_path):
    model = _resize_model([], {"sizes": np.array([1, 16, 16, 16], I64)}, batch=1)
    analysis = analyze(save(model, tmp_path), {})
    assert any("resizes axis 1" in r for r in frozen_reasons(analysis))


@pytest.mark.parametrize("op,attrs", [("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]}),
                                      ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
                                      ("GlobalAveragePool", {})])
def test_pooling_passes_channels_through(tmp_path, op, attrs):
    inits = {"w1": weight(8, 3, 3, 3), "w2": weight(4, 8, 1, 1)}
    nodes = [node("Conv", ["x", "w1"], "a"), node(op, ["a"], "p", **attrs), node("Conv", ["p", "w2"], "y")]
    prune_with_oracle(make_model(nodes, {"x": [1, 3, 8, 8]}, {"y": None}, inits), tmp_path)


def test_pad_of_spatial_axes_passes_and_channel_pad_freezes(tmp_path):
    inits = {"w1": weight(8, 3, 3, 3), "w2": weight(4, 8, 1, 1), "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], I64)}
    nodes = [node("Conv", ["x", "w1"], "a"), node("Pad", ["a", "pads"], "p"), node("Conv", ["p", "w2"], "y")]
    prune_with_oracle(make_model(nodes, {"x": [1, 3, 8, 8]}, {"y": None}, inits), tmp_path)
    inits["pads"] = np.array([0, 1, 0, 0, 0, 0, 0, 0], I64)
    inits["w2"] = weight(4, 9, 1, 1)
    analysis = analyze(save(make_model(nodes, {"x": [1, 3, 8, 8]}, {"y": None}, inits), tmp_path), {})
    assert any("pads the channel axis 1" in r for r in frozen_reasons(analysis))


def test_resize_scales_cast_from_fp16_are_folded(tmp_path):
    """onnxconverter-common's fp16 conversion stores Resize scales as fp16 and casts them back to fp32
    at run time: without folding that Cast the output size is unknown and every group reaching the
    Resize froze ("resizes axis 1")."""
    nodes = [node("Conv", ["x", "w1", "b1"], "c1", pads=[1] * 4), node("Relu", ["c1"], "r"),
             node("Cast", ["scales16"], "scales", to=onnx.TensorProto.FLOAT),
             node("Resize", ["r", "", "scales"], "u", mode="nearest"),
             node("Conv", ["u", "w2"], "y", pads=[1] * 4)]
    model = make_model(nodes, {"x": [1, 3, 8, 8]}, {"y": [1, 4, 16, 16]},
                       {"w1": weight(8, 3, 3, 3), "b1": weight(8), "w2": weight(4, 8, 3, 3),
                        "scales16": np.array([1, 1, 2, 2], np.float16)})
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, min_groups=1)
    assert not [r for r in frozen_reasons(analysis) if "resizes" in r]
    assert {t.name: list(t.dims) for t in pruned.graph.initializer}["w1"] == [4, 3, 3, 3]
