"""A fixed sample of ONNX's operator test models through the CLI (tools/onnx_suite.py runs them all).

The sample holds every class of bug the whole suite found: a Shape of a tensor padded by input values
(CenterCropPad), top-level constants read only inside If / Loop / Scan bodies, IR 3 models (initializers
among the inputs, Constant nodes), sequence and optional inputs and outputs, random ops, and models
that prune. Each output must pass the checker and run on the shipped test inputs, identical to the
input model when nothing was pruned.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import make_model, node, save

import onnx_suite
from onnxprune.cli import main

SAMPLE = [
    # value-dependent shapes: the CenterCropPad expansions pad by an input's values
    "node/test_center_crop_pad_crop", "node/test_center_crop_pad_crop_and_pad_expanded",
    "node/test_center_crop_pad_pad_expanded", "node/test_center_crop_pad_crop_axes_hwc_expanded",
    "node/test_nonzero_example", "node/test_top_k", "node/test_range_float_type_positive_delta_expanded",
    "node/test_expand_dim_changed", "node/test_tile", "node/test_reshape_reordered_all_dims",
    "node/test_constantofshape_int_zeros", "node/test_resize_upsample_sizes_nearest",
    # constants of the main graph read inside control-flow bodies
    "node/test_linear_attention_delta_expanded", "node/test_linear_attention_gated_expanded",
    "node/test_if", "node/test_if_seq", "node/test_if_opt", "node/test_loop11", "node/test_loop13_seq",
    "node/test_loop16_seq_none", "node/test_scan9_sum", "node/test_scan_sum", "node/test_affine_grid_2d_expanded",
    # sequences, optionals, strings
    "node/test_identity_opt", "node/test_identity_sequence", "node/test_optional_get_element_sequence",
    "node/test_optional_has_element_empty_optional_input", "node/test_split_to_sequence_1",
    "node/test_sequence_map_identity_1_sequence", "node/test_sequence_insert_at_back",
    "node/test_string_concat", "node/test_mvn_expanded", "node/test_bernoulli_expanded",
    # fails onnx.checker itself (its function body), runs in ONNX Runtime: its output may fail it the same way
    "node/test_mvn",
    # prunable and ordinary ops
    "node/test_conv_with_strides_padding", "node/test_gemm_default_matrix_bias", "node/test_matmul_2d",
    "node/test_lstm_defaults", "node/test_gru_defaults", "node/test_batchnorm_example", "node/test_relu",
    "node/test_layer_normalization_2d_axis0_expanded", "node/test_softmax_example_expanded",
    "node/test_dropout_default", "node/test_constant_pad", "node/test_slice",
    # IR 3 (initializers among the inputs, Constant nodes), older opsets, the other folders
    "pytorch-converted/test_PixelShuffle", "pytorch-operator/test_operator_repeat",
    "pytorch-operator/test_operator_repeat_dim_overflow", "pytorch-converted/test_Conv2d",
    "pytorch-converted/test_MaxPool2d_stride_padding_dilation", "light/light_squeezenet",
    "simple/test_expand_shape_model1", "simple/test_sequence_model1", "simple/test_shrink",
    "simple/test_single_relu_model", "simple/test_gradient_of_add",
]


@pytest.fixture(scope="module")
def totals(tmp_path_factory):
    work = tmp_path_factory.mktemp("onnx_suite")
    wanted = set(SAMPLE)
    cases = [c for c in onnx_suite.collect(work, [name.split("/", 1)[1] for name in SAMPLE]) if c.name in wanted]
    # the names are onnx 1.23's; an older onnx lacks a few of the newest cases
    assert len(cases) >= len(SAMPLE) - 8, sorted(wanted - {c.name for c in cases})
    return onnx_suite.run_suite(cases, jobs=1, timeout=120)


def test_sample_of_onnx_operator_tests_has_no_broken_output(totals):
    assert not totals.broken, onnx_suite.format_totals(totals)
    assert set(totals.rc) <= {"0", "1", "2"}
    assert not [r for r in totals.failed if r.name == "node/test_mvn"], "checker tolerance lost"
    assert totals.checked >= 40  # the outputs were run, not only written
    assert totals.pruned >= 2  # light_squeezenet prunes in both modes: the checks see pruned models too


def test_the_runner_catches_a_broken_output(tmp_path, monkeypatch):
    """The checks can fail: an output with a constant where the shape follows the input values."""
    cases = onnx_suite.collect(tmp_path, ["test_center_crop_pad_pad_expanded"])
    from onnxprune.rules.shape_only import ShapeOnlyRule

    monkeypatch.setattr(ShapeOnlyRule, "static_shape_read", lambda self, node, graph: True)  # the old fold
    totals = onnx_suite.run_suite([c for c in cases if c.name.endswith("pad_pad_expanded")], jobs=1)
    assert totals.broken and "shape" in totals.broken[0].broken


def _run(model, tmp_path, capsys, *flags):
    path = save(model, tmp_path)
    report = str(tmp_path / "r.json")
    assert main([path, "-o", str(tmp_path / "out.onnx"), "--report-json", report, "--providers", "cpu", *flags]) == 0
    text = capsys.readouterr().out
    with open(report) as f:
        return text, json.load(f)


def test_nothing_pruned_says_the_model_has_no_prunable_roots(tmp_path, capsys):
    model = make_model([node("Relu", ["x"], "r"), node("Sigmoid", ["r"], "y")], {"x": [2, 3]}, {"y": [2, 3]})
    text, report = _run(model, tmp_path, capsys)
    lines = [ln for ln in text.splitlines() if "nothing pruned" in ln]
    assert len(lines) == 1 and "no prunable roots" in lines[0] and "Relu" in lines[0] and "Sigmoid" in lines[0]
    assert report["nothing_pruned"] == lines[0].strip()


def test_nothing_pruned_names_the_frozen_reasons(tmp_path, capsys):
    w = np.ones((4, 3), np.float32)
    model = make_model([node("MatMul", ["x", "w"], "a"), node("CumSum", ["a", "axis"], "y")],
                       {"x": [2, 4]}, {"y": [2, 3]}, {"w": w, "axis": np.array(1, np.int64)})
    text, report = _run(model, tmp_path, capsys)
    (line,) = [ln for ln in text.splitlines() if "nothing pruned" in ln]
    assert "frozen" in line and "CumSum" in line


def test_nothing_pruned_when_round_to_keeps_every_group_whole(tmp_path, capsys):
    model = make_model([node("MatMul", ["x", "w"], "a"), node("Relu", ["a"], "r"), node("MatMul", ["r", "w2"], "y")],
                       {"x": [2, 4]}, {"y": [2, 3]},
                       {"w": np.ones((4, 6), np.float32), "w2": np.ones((6, 3), np.float32)})
    text, report = _run(model, tmp_path, capsys)
    (line,) = [ln for ln in text.splitlines() if "nothing pruned" in ln]
    assert "--round-to 8" in line and report["channels_removed"] == 0
