"""The staged public API: analyze (path, ModelProto or Model) -> Analysis.plan -> apply -> Model."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import make_model, node, save, weight

from onnxprune import (BadInputError, Model, ModelLoadError, Plan, PruneConfig, PruneReport, analyze,
                       prune, verify)
from onnxprune.testing import (compare, model_stats, plan_removing, random_inputs, run_model,
                               zero_consumers)


def _chain(batch=2) -> onnx.ModelProto:
    """x -> Conv(8) -> Relu -> Conv(4) -> y: one prunable group of 8 channels."""
    inits = {"w1": weight(8, 3, 3, 3), "b1": weight(8), "w2": weight(4, 8, 3, 3)}
    nodes = [node("Conv", ["x", "w1", "b1"], "c1", pads=[1, 1, 1, 1]), node("Relu", ["c1"], "r1"),
             node("Conv", ["r1", "w2"], "y", pads=[1, 1, 1, 1])]
    return make_model(nodes, {"x": [batch, 3, 6, 6]}, {"y": [batch, 4, 6, 6]}, inits)


def _dynamic_chain() -> onnx.ModelProto:
    model = _chain()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    return model


def _groups(analysis) -> list:
    return [(g.root, g.size, g.frozen_reason) for g in analysis.groups]


def test_analyze_takes_a_path_a_modelproto_or_a_model(tmp_path):
    model = _chain()
    before = model.SerializeToString()
    by_path, by_proto, by_model = analyze(save(model, tmp_path)), analyze(model), analyze(Model(model))
    assert _groups(by_path) == _groups(by_proto) == _groups(by_model)
    assert len(by_path.prunable) == 1
    assert model.SerializeToString() == before  # the caller's model is not normalised in place


def test_analyze_of_a_broken_model_object_names_it_not_a_temporary_file():
    model = _chain()
    model.graph.node[0].input[1] = "missing"
    with pytest.raises(ModelLoadError, match="the in-memory model") as err:
        analyze(model)
    assert "/tmp" not in str(err.value) and "onnxprune-" not in str(err.value)


def test_analyze_fixes_dynamic_inputs_in_the_shapes_of_a_new_graph():
    analysis = analyze(_dynamic_chain(), {"x": (5, 3, 6, 6)})
    assert analysis.input_shapes == {"x": (5, 3, 6, 6)}
    assert analysis.graph.shape("r1") == (5, 8, 6, 6)
    assert analysis.model.inputs[0].dims == ("batch", 3, 6, 6)  # the model keeps its dynamic input


def test_plan_apply_verify_save(tmp_path):
    analysis = analyze(_chain())
    plan = analysis.plan(PruneConfig(ratio=0.5, round_to=1))
    assert isinstance(plan, Plan) and [len(pg.pruned) for pg in plan.groups] == [4]
    pruned = analysis.apply(plan)
    assert isinstance(pruned, Model)
    assert pruned.param_count == analysis.model.param_count - 4 * (27 + 1 + 36)
    assert analysis.verify(plan).passed
    pruned.save(tmp_path / "out.onnx")
    again = Model.load(tmp_path / "out.onnx")
    assert [(s.name, s.dtype, s.dims) for s in again.inputs] == [("x", "float", (2, 3, 6, 6))]
    assert [(s.name, s.dims) for s in again.outputs] == [("y", (2, 4, 6, 6))]
    feeds = random_inputs(again)
    assert run_model(again, feeds).outputs[0].shape == (2, 4, 6, 6)


def test_plan_checks_its_config():
    with pytest.raises(BadInputError, match="^ratio must be in"):
        analyze(_chain()).plan(PruneConfig(ratio=1.5))


def test_verify_fails_on_a_wrong_plan_applied_elsewhere():
    """The oracle can fail: the zeroed model against a model pruned of other channels differs."""
    analysis = analyze(_chain())
    zeroed = zero_consumers(analysis, plan_removing(analysis, {"c1": [0, 1, 2]}))
    wrong = analysis.apply(plan_removing(analysis, {"c1": [5, 6, 7]}))
    feeds = random_inputs(zeroed)
    assert compare(run_model(zeroed, feeds).outputs, run_model(wrong, feeds).outputs).relative > 1e-2
    assert analysis.verify(plan_removing(analysis, {"c1": [0, 1, 2]})).passed


def test_model_stats_of_an_analysis_and_of_a_pruned_model():
    analysis = analyze(_chain())
    pruned = analysis.apply(analysis.plan(PruneConfig(ratio=0.5, round_to=1)))
    before, after = model_stats(analysis), model_stats(pruned)
    assert before.params == analysis.model.param_count and after.params == pruned.param_count
    assert after.macs < before.macs


def test_prune_of_a_model_object(tmp_path):
    model = _chain()
    out = tmp_path / "small.onnx"
    report = prune(model, str(out), PruneConfig(ratio=0.5, round_to=1))
    assert isinstance(report, PruneReport) and report.model == "the in-memory model"
    assert report.after.params < report.before.params and out.exists()
    assert report.validation and "skipped" not in report.validation
    x = np.ones((2, 3, 6, 6), np.float32)
    assert run_model(str(out), {"x": x}).outputs[0].shape == (2, 4, 6, 6)


def test_prune_of_a_model_object_needs_an_output_path():
    with pytest.raises(BadInputError, match="needs output_path"):
        prune(_chain())


def test_prune_of_a_path_still_writes_beside_it_and_keeps_the_input(tmp_path):
    path = save(_chain(), tmp_path)
    before = open(path, "rb").read()
    report = prune(path, config=PruneConfig(ratio=0.5, round_to=1))
    assert report.output == str(tmp_path / "model.pruned.onnx") and (tmp_path / "model.pruned.onnx").exists()
    assert open(path, "rb").read() == before


def test_verify_takes_a_model_object():
    assert verify(_chain(), PruneConfig(ratio=0.5, round_to=1)).passed


def test_model_wraps_only_model_protos():
    with pytest.raises(TypeError, match="onnx.ModelProto"):
        Model(b"not a model")
    with pytest.raises(TypeError, match="model path"):
        Model.of(42)
    model = Model(_chain())
    assert Model.of(model) is model and Model.of(model.proto).proto is model.proto


def test_plan_removing_names_a_missing_root():
    with pytest.raises(KeyError, match="no group has root tensor"):
        plan_removing(analyze(_chain()), {"nope": [0]})


def test_path_errors_name_python_parameters(tmp_path):
    """From Python, a refused path is named as the caller named it (output_path, plan_out), not by a CLI flag."""
    model = tmp_path / "m.onnx"
    shutil.copy(Path(__file__).resolve().parents[1] / "models" / "tiny_cnn.onnx", model)
    with pytest.raises(BadInputError, match="^plan_out '.*' is the input model"):
        prune(str(model), str(tmp_path / "out.onnx"), PruneConfig(plan_out=str(model)))
    with pytest.raises(BadInputError, match="^output_path '.*' is the input model"):
        prune(str(model), str(model))
