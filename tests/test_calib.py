"""Calibration files: checking against the model's inputs, statistics, fidelity, the CLI path."""
import numpy as np
import pytest
from helpers import make_model, node, save, weight

from onnxprune import calib
from onnxprune.errors import BadInputError
from onnxprune.ir import load


def _mlp(batch=None):
    inits = {"w1": weight(6, 8), "b1": weight(8), "w2": weight(8, 3)}
    nodes = [node("MatMul", ["x", "w1"], "h"), node("Add", ["h", "b1"], "hb"), node("Relu", ["hb"], "r"),
             node("MatMul", ["r", "w2"], "y")]
    return make_model(nodes, {"x": [batch or "N", 6]}, {"y": [batch or "N", 3]}, inits)


def _npz(tmp_path, **arrays):
    path = str(tmp_path / "calib.npz")
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("arrays, message", [
    ({"input": np.zeros((4, 6), np.float32)}, "missing ['x'], unexpected ['input']"),
    ({"x": np.zeros((4, 5), np.float32)}, "expects size 6 along axis 1"),
    ({"x": np.zeros((4, 6, 1), np.float32)}, "has rank 2"),
    ({"x": np.zeros((4, 6), np.float64)}, "expects dtype float32, the array has float64"),
    ({"x": np.zeros((0, 6), np.float32)}, "same non-zero number of samples"),
])
def test_bad_calibration_files_are_rejected_clearly(tmp_path, arrays, message):
    model = _mlp()
    with pytest.raises(BadInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        calib.load(_npz(tmp_path, **arrays), model)


def test_unreadable_or_missing_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    with pytest.raises(BadInputError, match="cannot read calibration file"):
        calib.load(str(bad), _mlp())
    with pytest.raises(BadInputError, match="does not exist"):
        calib.load(str(tmp_path / "none.npz"), _mlp())


def test_fixed_batch_models_are_fed_in_their_batch(tmp_path):
    data = calib.load(_npz(tmp_path, x=np.zeros((5, 6), np.float32)), _mlp(batch=2))
    assert data.batch == 2 and data.fixed
    assert [b["x"].shape[0] for b in data.batches()] == [2, 2]  # the partial batch is dropped


def test_statistics_match_numpy(tmp_path):
    model = _mlp()
    x = np.random.default_rng(0).standard_normal((37, 6)).astype(np.float32)
    data = calib.load(_npz(tmp_path, x=x), model)
    stats = calib.collect_stats(model, data, [("r", 1), ("x", 1)])
    graph = load(save(model, tmp_path))
    w1, b1 = graph.const("w1"), graph.const("b1")
    r = np.maximum(x.astype(np.float64) @ w1 + b1, 0)
    np.testing.assert_allclose(stats[("r", 1)].mean, r.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats[("r", 1)].mean_sq, (r * r).mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats[("x", 1)].mean_abs, np.abs(x).mean(0), rtol=1e-5)
    assert stats[("r", 1)].count == 37


def test_split_holds_out_samples():
    data = calib.CalibData({"x": np.arange(10, dtype=np.float32)[:, None]}, 4)
    use, held = calib.split(data, 6)
    assert use.count == 6 and held.count == 4 and held.arrays["x"][0, 0] == 6
    use, held = calib.split(data, 100)
    assert use.count == 8 and held.count == 2


def test_fidelity_of_identical_models_is_perfect(tmp_path):
    model = _mlp()
    data = calib.CalibData({"x": np.random.default_rng(1).standard_normal((9, 6)).astype(np.float32)}, 4)
    fid = calib.fidelity(model, model, data)["outputs"]["y"]
    assert fid["cosine_mean"] == pytest.approx(1.0) and fid["relative_error"] == 0 and fid["top1_agreement"] == 1


def test_cli_with_calibration_reports_fidelity(tmp_path, capsys):
    from onnxprune.cli import main

    path = save(_mlp(), tmp_path)
    npz = _npz(tmp_path, x=np.random.default_rng(2).standard_normal((40, 6)).astype(np.float32))
    out = str(tmp_path / "p.onnx")
    assert main([path, "-o", out, "--ratio", "0.5", "--calib", npz, "--calib-samples", "30", "--importance", "act",
                 "--providers", "cpu", "--input-shape", "x:4,6"]) == 0
    text = capsys.readouterr().out
    assert "compensation lsq" in text and "fidelity y: cosine mean" in text and "on 10 held-out samples" in text


def test_activation_and_compensation_need_calibration(tmp_path, capsys):
    from onnxprune.cli import main

    path = save(_mlp(), tmp_path)
    assert main([path, "--importance", "act"]) == 2
    assert "needs calibration data" in capsys.readouterr().err
    assert main([path, "--compensate", "lsq"]) == 2
    assert main([path, "-o", str(tmp_path / "p.onnx"), "--providers", "cpu", "--input-shape", "x:4,6"]) == 0
    assert "only weight-based criteria apply" in capsys.readouterr().out


def test_calibration_data_makes_activation_importance_the_default():
    """Magnitude selection with compensation hurts transformers; with data, act is the default."""
    from onnxprune import PruneConfig
    assert PruneConfig().criterion == "l1"
    assert PruneConfig(calib="calib.npz").criterion == "act"
    assert PruneConfig(calib="calib.npz", importance="l2").criterion == "l2"
