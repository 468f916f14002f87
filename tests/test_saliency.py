"""Reconstruction-aware importance (`--importance obs`): units ranked by the error left after a refit."""
import numpy as np
import pytest
from helpers import make_model, node, save, weight

from onnxprune import analyze, calib, cli, saliency, sensitivity
from onnxprune.testing import run_model


def _twins_model():
    """x [N, 6] -> MatMul (6 -> 8) -> Relu -> MatMul (8 -> 4). Hidden channels 2 and 3 are the same unit
    twice and carry the largest output weights: each alone is the most energetic channel, yet either can
    go at no cost, since a refit hands its weight to the other."""
    w1, w2 = weight(6, 8), weight(8, 4)
    w1[:, 3] = w1[:, 2]
    w2[2:4] *= 4.0
    nodes = [node("MatMul", ["x", "w1"], "h"), node("Relu", ["h"], "r"), node("MatMul", ["r", "w2"], "y")]
    return make_model(nodes, {"x": ["N", 6]}, {"y": ["N", 4]}, {"w1": w1, "w2": w2})


def _calib(tmp_path, n=256, width=6, seed=3):
    x = np.random.default_rng(seed).standard_normal((n, width)).astype(np.float32)
    path = str(tmp_path / "calib.npz")
    np.savez(path, x=x)
    return path


def _cli_error(tmp_path, model, importance: str) -> float:
    """Prune one hidden channel of eight through the CLI (lsq, the default with --calib); relative
    output error on new inputs."""
    path, out = save(model, tmp_path), str(tmp_path / f"{importance}.onnx")
    code = cli.main([path, "-o", out, "--ratio", "0.125", "--round-to", "1", "--calib", _calib(tmp_path),
                     "--importance", importance, "--providers", "cpu"])
    assert code == 0
    x = np.random.default_rng(11).standard_normal((200, 6)).astype(np.float32)
    a, b = run_model(model, {"x": x}).outputs[0], run_model(out, {"x": x}).outputs[0]
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


def test_obs_removes_a_redundant_twin_that_act_keeps(tmp_path):
    obs = _cli_error(tmp_path, _twins_model(), "obs")
    act = _cli_error(tmp_path, _twins_model(), "act")
    assert obs < 0.2 * act, (obs, act)


def _first_choice_reference(x: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> tuple[int, float]:
    """Brute force: for each hidden channel, drop it, refit the rest and a bias by least squares on the
    same inputs, and return the channel whose loss is smallest and that loss relative to the output's
    variance."""
    r = np.maximum(x @ w1, 0.0).astype(np.float64)
    y = r @ w2
    centred_y = y - y.mean(0)
    errors = []
    for c in range(r.shape[1]):
        keep = [i for i in range(r.shape[1]) if i != c]
        z = np.concatenate([r[:, keep], np.ones((len(r), 1))], axis=1)
        theta, *_ = np.linalg.lstsq(z, y, rcond=None)
        errors.append(np.sum((z @ theta - y) ** 2) / np.sum(centred_y ** 2))
    best = int(np.argmin(errors))
    return best, float(errors[best])


def test_first_greedy_step_is_the_best_refit_removal(tmp_path, monkeypatch):
    """The first unit removed, and its score, are those of a brute-force search over every single
    removal followed by a least-squares refit (no damping, all rows)."""
    monkeypatch.setattr(saliency, "DAMPING", 1e-12)
    w1, w2 = weight(6, 8), weight(8, 4)
    model = make_model([node("MatMul", ["x", "w1"], "h"), node("Relu", ["h"], "r"), node("MatMul", ["r", "w2"], "y")],
                       {"x": ["N", 6]}, {"y": ["N", 4]}, {"w1": w1, "w2": w2})
    analysis = analyze(save(model, tmp_path))
    x = np.random.default_rng(5).standard_normal((512, 6)).astype(np.float32)
    covs = saliency.covariances(analysis.graph, analysis.prunable, calib.CalibData({"x": x}, 512))
    group = next(g for g in analysis.prunable if g.root[0] == "h")
    scores = saliency.unit_scores(group, analysis.graph, covs)
    best, error = _first_choice_reference(x, w1, w2)
    assert int(np.argmin(scores)) == best
    assert scores[best] == pytest.approx(error, rel=1e-6)
    assert len(set(np.round(scores, 12))) == len(scores)  # a strict removal order


def test_obs_keeps_the_dead_channel_oracle(tmp_path, capsys):
    """A hidden channel whose consumer weights are zero goes first and pruning it changes nothing: the
    oracle passes with the default validation, and the output is the original's."""
    w1, w2 = weight(6, 8), weight(8, 4)
    w2[5] = 0.0
    model = make_model([node("MatMul", ["x", "w1"], "h"), node("Relu", ["h"], "r"), node("MatMul", ["r", "w2"], "y")],
                       {"x": ["N", 6]}, {"y": ["N", 4]}, {"w1": w1, "w2": w2})
    path, out = save(model, tmp_path), str(tmp_path / "out.onnx")
    code = cli.main([path, "-o", out, "--ratio", "0.125", "--round-to", "1", "--calib", _calib(tmp_path),
                     "--importance", "obs", "--compensate", "none", "--providers", "cpu"])
    assert code == 0, capsys.readouterr().err
    x = np.random.default_rng(2).standard_normal((32, 6)).astype(np.float32)
    np.testing.assert_allclose(run_model(out, {"x": x}).outputs[0], run_model(model, {"x": x}).outputs[0],
                               rtol=1e-5, atol=1e-6)


def test_obs_without_calibration_is_a_usage_error(tmp_path, capsys):
    path = save(_twins_model(), tmp_path)
    assert cli.main([path, "--importance", "obs"]) == 2
    assert "--calib" in capsys.readouterr().err


def test_compensated_sensitivity_sees_that_a_twin_costs_nothing(tmp_path):
    """Zeroing a twin of the twins model moves the output; refit from the covariance (what lsq will do),
    removing it costs nothing. The compensated curve says so, the zeroed one does not."""
    analysis = analyze(save(_twins_model(), tmp_path))
    x = np.random.default_rng(5).standard_normal((256, 6)).astype(np.float32)
    data = calib.CalibData({"x": x}, 64)
    group = next(g for g in analysis.prunable if g.root[0] == "h")
    scores = {group.id: np.where(np.arange(8) == 2, 0.0, 1.0)}  # unit 2 (a twin) goes first
    covs = saliency.covariances(analysis.graph, analysis.prunable, data)
    zeroed = sensitivity.measure(analysis.graph, analysis.groups, scores, data, fractions=(0.125,))
    refit = sensitivity.measure(analysis.graph, analysis.groups, scores, data, fractions=(0.125,), covariances=covs)
    assert refit["compensated"] and not zeroed["compensated"]
    refit_error = refit["groups"][str(group.id)]["relative_error"][0]
    zeroed_error = zeroed["groups"][str(group.id)]["relative_error"][0]
    assert refit_error < 0.02 and zeroed_error > 10 * refit_error, (refit_error, zeroed_error)
