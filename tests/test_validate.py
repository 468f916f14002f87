"""Validation compares the pruned model's finiteness with the original's, output by output."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import make_model, node, save, weight

from onnxprune import cli
from onnxprune.errors import CheckFailedError
from onnxprune.validate import compare, validate_pruned


def _conv_then(op: str):
    """x -> Conv -> Relu -> Conv -> op -> y: the first Conv prunes, `op` (Log, Sqrt) makes NaN and
    -inf of the second Conv's negative and zero values on random inputs."""
    inits = {"w1": weight(16, 3, 3, 3), "b1": weight(16), "w2": weight(4, 16, 1, 1), "b2": weight(4)}
    nodes = [node("Conv", ["x", "w1", "b1"], "c1", pads=[1, 1, 1, 1]), node("Relu", ["c1"], "r1"),
             node("Conv", ["r1", "w2", "b2"], "c2"), node(op, ["c2"], "y")]
    return make_model(nodes, {"x": [1, 3, 8, 8]}, {"y": [1, 4, 8, 8]}, inits)


def test_compare_leaves_non_finite_positions_out_of_the_change():
    ref = np.array([1.0, np.nan, -np.inf, 4.0], np.float32)
    cand = np.array([1.5, np.nan, 2.0, 3.0], np.float32)
    cmp = compare([ref], [cand])
    assert cmp.max_abs == pytest.approx(1.0) and cmp.scale == pytest.approx(4.0)
    assert cmp.relative == pytest.approx(0.25)
    assert cmp.finite and cmp.reference_nonfinite == (2,) and cmp.new_nonfinite == (0,)


def test_compare_counts_non_finite_values_where_the_reference_is_finite():
    ref = [np.array([1.0, 2.0, 3.0], np.float32), np.array([np.nan, 1.0], np.float32)]
    cand = [np.array([1.0, np.inf, 3.0], np.float32), np.array([np.nan, np.nan], np.float32)]
    cmp = compare(ref, cand)
    assert not cmp.finite
    assert cmp.reference_nonfinite == (0, 1) and cmp.new_nonfinite == (1, 1) and cmp.sizes == (3, 2)
    assert np.isfinite(cmp.relative) and cmp.relative == 0.0


def test_compare_of_integer_outputs_is_unchanged():
    cmp = compare([np.array([1, 5], np.int64)], [np.array([1, 3], np.int64)])
    assert cmp.finite and cmp.max_abs == 2.0 and cmp.relative == pytest.approx(0.4)


@pytest.mark.parametrize("op", ["Log", "Sqrt"])
def test_original_nan_on_random_inputs_is_a_note_not_an_error(tmp_path, capsys, op):
    path = save(_conv_then(op), tmp_path)
    report = tmp_path / "report.json"
    code = cli.main([path, "-o", str(tmp_path / "out.onnx"), "--ratio", "0.5", "--providers", "cpu",
                     "--report-json", str(report)])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(report.read_text())
    assert data["groups_pruned"] >= 1 and data["channels_removed"] >= 8
    cpu = data["validation"]["providers"]["cpu"]
    assert np.isfinite(cpu["relative_change"]) and np.isfinite(cpu["max_abs_change"])
    assert cpu["relative_change"] > 0  # the finite positions still count
    notes = [n for n in data["notes"] if "original produces non-finite outputs on random inputs: output 'y'" in n]
    assert len(notes) == 1
    assert "original produces non-finite outputs on random inputs: output 'y'" in out


def test_pruned_non_finite_where_the_original_is_finite_is_still_an_error(tmp_path):
    # the original's Log reads exp(c2) > 0: always finite. The "pruned" model's Log reads c2 itself.
    inits = {"w1": weight(16, 3, 3, 3), "b1": weight(16), "w2": weight(4, 16, 1, 1), "b2": weight(4)}
    body = [node("Conv", ["x", "w1", "b1"], "c1", pads=[1, 1, 1, 1]), node("Relu", ["c1"], "r1"),
            node("Conv", ["r1", "w2", "b2"], "c2")]
    original = make_model(body + [node("Exp", ["c2"], "e"), node("Log", ["e"], "y")],
                          {"x": [1, 3, 8, 8]}, {"y": [1, 4, 8, 8]}, inits)
    broken = make_model(body + [node("Log", ["c2"], "y")], {"x": [1, 3, 8, 8]}, {"y": [1, 4, 8, 8]}, inits)
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    with pytest.raises(CheckFailedError, match=r"non-finite outputs on cpu where the original's are finite: "
                                               r"output 'y' \(\d+ of 256 values\)"):
        validate_pruned(save(original, tmp_path), broken, feeds, ["cpu"], repeats=0)
    result = validate_pruned(save(original, tmp_path), original, feeds, ["cpu"], repeats=0)
    assert "notes" not in result and result["providers"]["cpu"]["relative_change"] == 0.0


def _shape_arithmetic_model():
    """x [2, 3, 4] -> Reshape(x, Concat(Shape(x)[0], [-1])) -> y [2, 12]: shape arithmetic that folds."""
    nodes = [node("Shape", ["x"], "sh"), node("Gather", ["sh", "zero"], "n", axis=0),
             node("Unsqueeze", ["n", "axes"], "n1"), node("Concat", ["n1", "minus_one"], "target", axis=0),
             node("Reshape", ["x", "target"], "y")]
    inits = {"zero": np.array(0, np.int64), "axes": np.array([0], np.int64), "minus_one": np.array([-1], np.int64)}
    return make_model(nodes, {"x": [2, 3, 4]}, {"y": [2, 12]}, inits)


def test_evaluate_gives_intermediate_values():
    from onnxprune.validate import evaluate

    values = evaluate(_shape_arithmetic_model(), ["target"], {})
    assert values is not None and values["target"].tolist() == [2, -1]


def test_evaluate_of_a_model_onnx_runtime_cannot_run_is_none_and_says_why(caplog):
    import logging

    from onnxprune.validate import evaluate

    with caplog.at_level(logging.INFO, logger="onnxprune.validate"):
        assert evaluate(_shape_arithmetic_model(), ["no_such_tensor"], {}, ["Concat_target"]) is None
    assert "shape arithmetic not folded (nodes 'Concat_target')" in caplog.text
    assert "ONNX Runtime (cpu) cannot load the model" in caplog.text


def test_a_bug_while_evaluating_propagates(monkeypatch):
    """A programming error is not "cannot be evaluated": it must not be logged away as an unfoldable model."""
    from onnxprune import validate

    def broken(*args, **kwargs):
        raise KeyError("bug")

    monkeypatch.setattr(validate, "run", broken)
    with pytest.raises(KeyError, match="bug"):
        validate.evaluate(_shape_arithmetic_model(), ["target"], {})


def test_a_bug_while_folding_propagates(tmp_path, monkeypatch):
    from onnxprune import ir, validate
    from onnxprune.fold import fold_shape_arithmetic

    graph = ir.load(save(_shape_arithmetic_model(), tmp_path))
    assert fold_shape_arithmetic(graph) is not None  # the model folds: the bug below is reached

    def broken(*args, **kwargs):
        raise AttributeError("bug")

    monkeypatch.setattr(validate, "random_inputs", broken)
    with pytest.raises(AttributeError, match="bug"):
        fold_shape_arithmetic(graph)
