"""Loading, normalising, folding and saving models (ir.py, fold.py), seen through analyse / prune."""
import hashlib
import os

import numpy as np
import onnx
import pytest
from checks import dims, init, removed
from helpers import make_model, node, prune_with_oracle, save, weight
from onnx import helper, numpy_helper

from onnxprune import ModelLoadError, PruneConfig, analyze, ir, prune
from onnxprune.errors import BadInputError
from onnxprune.testing import random_inputs, run_model

C, HW = 8, 4


def _conv_chain(opset: int = 17):
    inits = {"w1": weight(C, 3, 3, 3), "b1": weight(C), "w2": weight(5, C, 1, 1)}
    nodes = [node("Conv", ["x", "w1", "b1"], "a", pads=[1, 1, 1, 1]), node("Relu", ["a"], "r"),
             node("Conv", ["r", "w2"], "y")]
    return make_model(nodes, {"x": [1, 3, HW, HW]}, {"y": [1, 5, HW, HW]}, inits, opset=opset)


def _config(**kw) -> PruneConfig:
    # the tiny test models have 8-channel groups: the default --round-to 8 would keep them whole
    return PruneConfig(ratio=0.5, providers=["cpu"], latency_repeats=1, round_to=1, **kw)


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _outputs(model_or_path, feeds):
    return run_model(model_or_path, feeds, optimize=False).outputs


def test_constant_nodes_and_identity_of_initializer_become_weights(tmp_path):
    w1 = weight(C, 3, 3, 3)
    nodes = [helper.make_node("Constant", [], ["w1"], name="const_w1", value=numpy_helper.from_array(w1)),
             helper.make_node("Constant", [], ["b1"], name="const_b1", value_floats=weight(C).tolist()),
             node("Identity", ["w2_stored"], "w2"),
             node("Conv", ["x", "w1", "b1"], "a", pads=[1, 1, 1, 1]), node("Relu", ["a"], "r"),
             node("Conv", ["r", "w2"], "y")]
    model = make_model(nodes, {"x": [1, 3, HW, HW]}, {"y": [1, 5, HW, HW]}, {"w2_stored": weight(5, C, 1, 1)})
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    assert [n.op_type for n in pruned.graph.node] == ["Conv", "Relu", "Conv"]
    assert dims(pruned) == {"w1": [C // 2, 3, 3, 3], "b1": [C // 2], "w2_stored": [5, C // 2, 1, 1]}
    gone = removed(analysis, plan)
    keep = np.setdiff1d(np.arange(C), gone[("w1", 0)])
    np.testing.assert_array_equal(init(pruned, "w1"), w1[keep])


def test_external_data_model_loads_and_prunes(tmp_path):
    model = _conv_chain()
    src = tmp_path / "ext.onnx"
    onnx.save(model, str(src), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.onnx.data",
              size_threshold=0)
    assert (tmp_path / "ext.onnx.data").is_file()
    out = tmp_path / "out.onnx"
    report = prune(str(src), str(out), _config())
    assert report.groups_pruned == 1
    pruned = onnx.load(str(out))
    assert dims(pruned)["w1"] == [C // 2, 3, 3, 3] and dims(pruned)["w2"] == [5, C // 2, 1, 1]
    (y,) = _outputs(pruned, random_inputs(pruned, {}))
    assert y.shape == (1, 5, HW, HW)


def test_external_data_file_beside_the_model_is_required(tmp_path):
    src = tmp_path / "ext.onnx"
    onnx.save(_conv_chain(), str(src), save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    os.unlink(tmp_path / "ext.onnx.data")
    with pytest.raises(ModelLoadError, match="ext.onnx"):
        analyze(str(src))


def _arrays(model) -> dict:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_large_model_is_saved_with_external_data(tmp_path, monkeypatch):
    inits = {"w1": weight(32, 3, 3, 3), "w2": weight(5, 32, 1, 1)}  # w1 is over the 1 KiB external threshold
    nodes = [node("Conv", ["x", "w1"], "a"), node("Relu", ["a"], "r"), node("Conv", ["r", "w2"], "y")]
    model = make_model(nodes, {"x": [1, 3, HW, HW]}, {"y": None}, inits)
    feeds = random_inputs(model, {})
    (expected,) = _outputs(model, feeds)
    monkeypatch.setattr(ir.limits, "EXTERNAL_DATA_THRESHOLD", 100)
    path = tmp_path / "big.onnx"
    ir.save(model, path)
    assert sorted(os.listdir(tmp_path)) == ["big.onnx", "big.onnx.data"]  # no temporary leftovers
    assert (tmp_path / "big.onnx.data").stat().st_size >= inits["w1"].nbytes
    reloaded = onnx.load(str(path))
    for name, value in inits.items():
        np.testing.assert_array_equal(init(reloaded, name), value)
    np.testing.assert_array_equal(_outputs(str(path), feeds)[0], expected)


def test_saving_with_external_data_leaves_the_model_in_memory_usable(tmp_path, monkeypatch):
    """onnx.save_model(save_as_external_data=True) empties the tensors it writes out; ir.save must not."""
    model = _conv_chain()
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(weight(C, 3, 3, 3), "w1"))
    before = _arrays(model)
    monkeypatch.setattr(ir.limits, "EXTERNAL_DATA_THRESHOLD", 100)
    ir.save(model, tmp_path / "a.onnx")
    after = _arrays(model)
    assert all(t.data_location == onnx.TensorProto.DEFAULT for t in model.graph.initializer)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])
    ir.save(model, tmp_path / "b.onnx")  # and it can be saved again
    np.testing.assert_array_equal(init(onnx.load(str(tmp_path / "b.onnx")), "w1"), before["w1"])


def test_external_save_of_a_model_with_only_small_tensors(tmp_path, monkeypatch):
    """Over the size threshold but no tensor big enough to move out: one plain file, no crash."""
    model = _conv_chain()
    feeds = random_inputs(model, {})
    (expected,) = _outputs(model, feeds)
    monkeypatch.setattr(ir.limits, "EXTERNAL_DATA_THRESHOLD", 100)
    ir.save(model, tmp_path / "small.onnx")
    assert os.listdir(tmp_path) == ["small.onnx"]
    np.testing.assert_array_equal(_outputs(str(tmp_path / "small.onnx"), feeds)[0], expected)


def test_opset_below_7_is_rejected_and_8_upgraded(tmp_path):
    path = save(_conv_chain(opset=6), tmp_path)
    with pytest.raises(ModelLoadError, match="opset 6; onnxprune needs opset 9"):
        analyze(path)
    assert analyze(save(_conv_chain(opset=8), tmp_path, "m8.onnx")).graph.opset == 9


def test_missing_file_is_a_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        analyze(str(tmp_path / "nope.onnx"))


@pytest.mark.parametrize("content", [b"this is not a protobuf \xff\xfe", b""])
def test_corrupt_file_is_a_load_error(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match="bad.onnx"):
        analyze(str(path))


@pytest.mark.parametrize("doc_string", ["onnxprune-zoo:stripped", ""])
def test_initializer_without_data_is_a_one_line_load_error(tmp_path, doc_string):
    """A weight-stripped export (the zoo's files, marked or not) names the empty tensor in one line."""
    model = _conv_chain()
    w2 = next(t for t in model.graph.initializer if t.name == "w2")
    w2.ClearField("raw_data")
    w2.ClearField("float_data")
    w2.doc_string = doc_string
    path = save(model, tmp_path)
    with pytest.raises(ModelLoadError) as info:
        analyze(path)
    message = str(info.value)
    assert "\n" not in message
    assert "initializer 'w2' (dims [5, 8, 1, 1], FLOAT) needs 40 values in float_data, the file holds 0" in message
    assert "zoo" not in message


def test_prune_never_modifies_its_input(tmp_path):
    path = save(_conv_chain(), tmp_path)
    digest, listing = _sha(path), sorted(os.listdir(tmp_path))
    report = prune(path, config=_config())
    assert _sha(path) == digest
    assert report.output == str(tmp_path / "model.pruned.onnx")
    assert sorted(os.listdir(tmp_path)) == sorted(listing + ["model.pruned.onnx"])
    assert dims(onnx.load(report.output))["w1"][0] == C // 2
    with pytest.raises(BadInputError, match="is the input model"):
        prune(path, path, _config())
    assert _sha(path) == digest


def _computed_reshape(batch, div: bool = True):
    """conv (C) -> Reshape to [N, C, H*W/2, 2] with the target computed by Shape -> Gather -> Mul (-> Div) -> Concat.

    Without `div` the target is [N, C, H*W, 1].
    """
    inits = {"w1": weight(C, 3, 3, 3), "w2": weight(5, C, 1, 1), "two": np.array(2, np.int64),
             "tail": np.array([2 if div else 1], np.int64), "ax": np.array([0], np.int64)}
    nodes = [node("Conv", ["x", "w1"], "a", pads=[1, 1, 1, 1]), node("Shape", ["a"], "s")]
    for i in range(4):
        inits[f"i{i}"] = np.array(i, np.int64)
        nodes.append(node("Gather", ["s", f"i{i}"], f"d{i}", axis=0))
    nodes.append(node("Mul", ["d2", "d3"], "hw"))
    if div:
        nodes.append(node("Div", ["hw", "two"], "half"))
    nodes += [node("Unsqueeze", ["d0", "ax"], "u0"), node("Unsqueeze", ["d1", "ax"], "u1"),
              node("Unsqueeze", ["half" if div else "hw", "ax"], "u2"),
              node("Concat", ["u0", "u1", "u2", "tail"], "target", axis=0),
              node("Reshape", ["a", "target"], "m"), node("Conv", ["m", "w2"], "y")]
    hw = HW * HW // 2 if div else HW * HW
    return make_model(nodes, {"x": [batch, 3, HW, HW]}, {"y": [batch, 5, hw, 2 if div else 1]}, inits)


def test_static_shape_arithmetic_is_folded_and_its_constant_rewritten(tmp_path):
    analysis, plan, pruned = prune_with_oracle(_computed_reshape(1), tmp_path, ratio=0.5)
    ops = [n.op_type for n in analysis.graph.nodes]
    assert "Shape" not in ops and "Concat" not in ops
    assert [n.op_type for n in pruned.graph.node] == ["Conv", "Reshape", "Conv"]
    (target,) = [n.input[1] for n in pruned.graph.node if n.op_type == "Reshape"]
    assert init(pruned, target).tolist() == [1, C // 2, HW * HW // 2, 2]


def test_dynamic_batch_is_not_folded(tmp_path):
    model = _computed_reshape("N", div=False)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, input_shapes={"x": (2, 3, HW, HW)})
    assert "Shape" in [n.op_type for n in analysis.graph.nodes]
    assert "Shape" in [n.op_type for n in pruned.graph.node]  # the target still follows the sizes at run time
    assert dims(pruned)["w1"][0] == C // 2
    (y,) = _outputs(pruned, random_inputs(pruned, {"x": (3, 3, HW, HW)}))
    assert y.shape == (3, 5, HW * HW, 1)  # still any batch


def test_constant_pads_fold_in_a_dynamic_batch_model(tmp_path):
    """torch's F.pad computes its pads from constants (ConstantOfShape, Concat, Reshape, Slice, Cast), so an
    EfficientNet export with a dynamic batch reads every Pad's pads from a computed tensor. They depend on
    no input: folded, the channels through the Pad prune (left computed, the group froze)."""
    inits = {"w1": weight(C, 3, 3, 3), "w2": weight(5, C, 3, 3), "head": np.array([0, 0, 1], np.int64),
             "n_zeros": np.array([3], np.int64), "tail": np.array([1, 1], np.int64),
             "flat": np.array([-1], np.int64), "start": np.array([0], np.int64), "end": np.array([8], np.int64)}
    nodes = [node("ConstantOfShape", ["n_zeros"], "zeros", value=numpy_helper.from_array(np.array([0], np.int64))),
             node("Concat", ["head", "zeros", "tail"], "joined", axis=0),
             node("Reshape", ["joined", "flat"], "flat_pads"),
             node("Slice", ["flat_pads", "start", "end"], "sliced"), node("Cast", ["sliced"], "pads", to=7),
             node("Conv", ["x", "w1"], "a"), node("Pad", ["a", "pads"], "p"), node("Conv", ["p", "w2"], "y")]
    model = make_model(nodes, {"x": ["N", 3, HW + 2, HW + 2]}, {"y": None}, inits)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, input_shapes={"x": (2, 3, HW + 2, HW + 2)})
    assert dims(pruned)["w1"][0] == C // 2
    assert pruned.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert "ConstantOfShape" not in [n.op_type for n in pruned.graph.node]
    (y,) = _outputs(pruned, random_inputs(pruned, {"x": (3, 3, HW + 2, HW + 2)}))
    assert y.shape[0] == 3


def test_dynamic_batch_with_a_divided_target_prunes_given_input_shapes(tmp_path):
    """ONNX shape inference cannot see through Div; a copy folded for the given shapes tells the analysis
    the static shapes, while the pruned model keeps its dynamic batch."""
    model = _computed_reshape("N", div=True)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, input_shapes={"x": (2, 3, HW, HW)})
    assert pruned.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    (y,) = run_model(pruned, {"x": np.ones((5, 3, HW, HW), np.float32)}).outputs
    assert y.shape[0] == 5


def test_constant_shared_by_exporter_does_not_couple_layers(tmp_path):
    """Exporters share one all-zero bias between convs: each conv must still be prunable on its own."""
    c = 128  # a bias larger than a shape constant
    inits = {"w1": weight(c, 3, 3, 3), "w2": weight(c, c, 3, 3), "zero": np.zeros(c, np.float32),
             "w3": weight(4, c, 1, 1)}
    model = make_model([node("Conv", ["x", "w1", "zero"], "a", pads=[1, 1, 1, 1]), node("Relu", ["a"], "r"),
                        node("Conv", ["r", "w2", "zero"], "b", pads=[1, 1, 1, 1]), node("Relu", ["b"], "r2"),
                        node("Conv", ["r2", "w3"], "y")], {"x": [1, 3, 8, 8]}, {"y": [1, 4, 8, 8]}, inits)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, min_groups=2)
    biases = sorted(list(t.dims) for t in pruned.graph.initializer if t.name.startswith("zero"))
    assert biases == [[c // 2], [c // 2]]


def test_shared_constant_stays_shared_in_the_output_when_nothing_cuts_it(tmp_path):
    """The load-time clone of a shared constant is undone when both users keep it whole."""
    c = 128
    inits = {"w1": weight(c, 3, 3, 3), "w2": weight(4, c, 1, 1), "w3": weight(4, c, 1, 1),
             "shared": np.full(4, 0.5, np.float32)}
    model = make_model([node("Conv", ["x", "w1"], "a", pads=[1, 1, 1, 1]), node("Relu", ["a"], "r"),
                        node("Conv", ["r", "w2", "shared"], "y1"), node("Conv", ["r", "w3", "shared"], "y2"),
                        node("Add", ["y1", "y2"], "y")], {"x": [1, 3, 8, 8]}, {"y": [1, 4, 8, 8]}, inits)
    src = tmp_path / "in.onnx"
    onnx.save(model, str(src))
    report = prune(str(src), str(tmp_path / "out.onnx"), _config())
    out = onnx.load(str(tmp_path / "out.onnx"))
    assert [t.name for t in out.graph.initializer].count("shared") == 1
    assert not any(t.name.startswith("shared__") for t in out.graph.initializer)
    assert report.before.params == sum(int(np.prod(t.dims)) for t in model.graph.initializer)


def test_calibration_data_fixes_dynamic_inputs_for_the_analysis(tmp_path):
    """Without --input-shape, the calibration samples' shape (batch 1) is used to learn static shapes."""
    model = _computed_reshape("N", div=True)
    src = tmp_path / "dyn.onnx"
    onnx.save(model, str(src))
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((6, 3, HW, HW)).astype(np.float32))
    report = prune(str(src), str(tmp_path / "out.onnx"), _config(calib=str(calib)))
    assert report.groups_pruned >= 1 and report.after.macs < report.before.macs
    out = onnx.load(str(tmp_path / "out.onnx"))
    assert out.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"


def test_model_over_the_size_limit_is_validated_from_its_file(tmp_path, monkeypatch):
    """ONNX Runtime takes a >2 GB model only as a file: it is written first, then validated."""
    monkeypatch.setattr(ir.limits, "EXTERNAL_DATA_THRESHOLD", 100)
    src = save(_conv_chain(), tmp_path, "big.onnx")
    out = tmp_path / "big.pruned.onnx"
    report = prune(src, str(out), _config())  # from memory this raised "validated from their saved file"
    assert out.exists() and report.validation["providers"]["cpu"]["latency_after_ms"] > 0


def test_output_over_the_size_limit_is_removed_when_validation_fails(tmp_path, monkeypatch):
    from onnxprune import api
    from onnxprune.errors import CheckFailedError

    def broken(*args, **kwargs):
        raise CheckFailedError("pretend the pruned model is wrong")

    monkeypatch.setattr(ir.limits, "EXTERNAL_DATA_THRESHOLD", 100)
    monkeypatch.setattr(api, "validate_pruned", broken)
    src = save(_conv_chain(), tmp_path, "big.onnx")
    out = tmp_path / "big.pruned.onnx"
    with pytest.raises(CheckFailedError):
        prune(src, str(out), _config())
    assert not out.exists() and not os.path.exists(str(out) + ".data")


# -- do no harm: folding and normalisation never change what the model computes (onnx_suite bugs) --

def _prune_cli(model: onnx.ModelProto, tmp_path, *flags: str) -> onnx.ModelProto:
    from onnxprune.cli import main

    src, out = str(tmp_path / "in.onnx"), str(tmp_path / "out.onnx")
    onnx.save(model, src)
    assert main([src, "-o", out, "-q", "--providers", "cpu", *flags]) == 0
    onnx.checker.check_model(out, full_check=True)
    return onnx.load(out)


def _same_outputs(a, b, feeds_list):
    for feeds in feeds_list:
        for x, y in zip(_outputs(a, feeds), _outputs(b, feeds)):
            assert x.shape == y.shape
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)


def test_shape_of_a_tensor_padded_by_input_values_is_not_folded(tmp_path):
    """CenterCropPad's expansion: Pad by pads computed from an input's values, then Shape of the result.
    With static inputs that Shape still changes with the values: folding it (at random inputs) broke the
    model for every other pads input."""
    nodes = [node("Pad", ["x", "pads"], "p"), node("Shape", ["p"], "s"), node("Reshape", ["p", "s"], "y")]
    model = make_model(nodes, {"x": [2, 3], "pads": [4]}, {"y": None}, input_types={"pads": onnx.TensorProto.INT64})
    out = _prune_cli(model, tmp_path, "--no-validate")
    assert "Shape" in [n.op_type for n in out.graph.node]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    _same_outputs(model, out, [{"x": x, "pads": np.array(p, np.int64)} for p in ([0, 0, 0, 0], [1, 2, 0, 1])])


def test_shape_of_a_statically_shaped_tensor_is_still_folded():
    from onnxprune.fold import foldable_tensors

    nodes = [node("Pad", ["x", "pads"], "p"), node("Shape", ["x"], "s"), node("Shape", ["p"], "sp"),
             node("Mul", ["s", "sp"], "s2"), node("Reshape", ["p", "s2"], "y")]
    model = make_model(nodes, {"x": [2, 3], "pads": [4]}, {"y": ["a", "b"]},
                       input_types={"pads": onnx.TensorProto.INT64})
    graph = ir.Graph(model, ir.infer_shapes(model, {}))
    derived, frontier = foldable_tensors(graph)
    assert "s" in derived and "sp" not in derived and "s2" not in derived  # s2 reads a value-dependent shape


def test_random_ops_are_never_folded(tmp_path):
    nodes = [node("Shape", ["x"], "s"), node("ConstantOfShape", ["s"], "z"),
             node("RandomUniformLike", ["z"], "r"), node("Add", ["x", "r"], "y")]
    model = make_model(nodes, {"x": [2, 3]}, {"y": [2, 3]})
    out = _prune_cli(model, tmp_path, "--no-validate")
    assert "RandomUniformLike" in [n.op_type for n in out.graph.node]


def _branch(name: str, op: str, operand: str) -> onnx.GraphProto:
    return helper.make_graph([helper.make_node(op, ["x", operand], [f"{name}_y"])], name, [],
                             [helper.make_tensor_value_info(f"{name}_y", onnx.TensorProto.FLOAT, [2, 3])])


def test_constants_read_only_inside_control_flow_bodies_survive_folding(tmp_path):
    """A top-level Constant (and an Identity of a weight) read only in If bodies, one nested two deep: the
    fold that runs for the Reshape must not drop them as unused."""
    c = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.full((2, 3), 2.0, np.float32)))
    inner = helper.make_node("If", ["cond"], ["inner_y"], then_branch=_branch("t2", "Add", "c"),
                             else_branch=_branch("e2", "Sub", "ident"))
    outer_then = helper.make_graph([inner], "t1", [],
                                   [helper.make_tensor_value_info("inner_y", onnx.TensorProto.FLOAT, [2, 3])])
    nodes = [c, node("Identity", ["w"], "ident"),
             helper.make_node("If", ["cond"], ["f"], name="outer", then_branch=outer_then,
                              else_branch=_branch("e1", "Mul", "c")),
             node("Shape", ["x"], "s"), node("Reshape", ["f", "s"], "y")]
    model = make_model(nodes, {"x": [2, 3], "cond": []}, {"y": [2, 3]}, {"w": np.full((2, 3), 3.0, np.float32)},
                       input_types={"cond": onnx.TensorProto.BOOL})
    out = _prune_cli(model, tmp_path, "--no-validate")
    assert "Shape" not in [n.op_type for n in out.graph.node]  # the fold did run
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    _same_outputs(model, out, [{"x": x, "cond": np.array(v)} for v in (True, False)])


def test_ir3_model_with_initializers_as_inputs_stays_valid_when_pruned(tmp_path):
    """IR 3 lists every initializer among the graph inputs: pruned (new shapes) and folded (new and removed
    initializers), the output must still be a valid model that runs on the true inputs alone."""
    model = _computed_reshape(1)
    for t in model.graph.initializer:
        model.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    model.ir_version = 3
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", 13))
    out = _prune_cli(model, tmp_path, "--ratio", "0.5", "--round-to", "1")
    assert dims(out)["w1"][0] == C // 2
    inits = {t.name for t in out.graph.initializer}
    assert out.ir_version >= 4 or inits <= {i.name for i in out.graph.input}
    assert not [i.name for i in out.graph.input if i.name not in inits and i.name != "x"]
    (y,) = _outputs(out, {"x": np.ones((1, 3, HW, HW), np.float32)})
    assert y.shape == (1, 5, HW * HW // 2, 2)
