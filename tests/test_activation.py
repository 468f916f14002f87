"""Activation importance: consumer sources in groups, scores from calibration statistics."""
import numpy as np
from helpers import make_model, node, rng, save, weight

from onnxprune import PruneConfig, activation, analyze, calib


def _model():
    """Hidden channel 0 has the largest weights but is dead (Relu of a very negative bias); 1 is constant."""
    w1, b1, w2 = weight(6, 8), weight(8), weight(8, 3)
    w1[:, 0], b1[0] = 5.0, -1000.0
    w2[0] = 5.0
    w1[:, 1], b1[1] = 0.0, 3.0
    w2[1] = 2.0
    nodes = [node("MatMul", ["x", "w1"], "h"), node("Add", ["h", "b1"], "hb"), node("Relu", ["hb"], "r"),
             node("MatMul", ["r", "w2"], "y")]
    return make_model(nodes, {"x": ["N", 6]}, {"y": ["N", 3]}, {"w1": w1, "b1": b1, "w2": w2})


def _setup(tmp_path):
    analysis = analyze(save(_model(), tmp_path))
    data = calib.CalibData({"x": rng().standard_normal((64, 6)).astype(np.float32)}, 16)
    stats = calib.collect_stats(analysis.graph.proto, data, activation.stat_spaces(analysis.prunable))
    return analysis, stats


def test_in_slices_name_the_consumer_input_they_read(tmp_path):
    analysis, _ = _setup(tmp_path)
    group = next(g for g in analysis.prunable if g.root[0] == "h")
    ins = [s for s in group.slices if s.role == "in"]
    assert [(s.tensor, s.source) for s in ins] == [("w2", ("r", 1))]
    assert all(s.source is None for s in group.slices if s.role == "out")
    assert activation.stat_spaces(analysis.prunable) == [("r", 1)]


def test_dead_channel_scores_zero_although_its_weights_are_largest(tmp_path):
    analysis, stats = _setup(tmp_path)
    group = next(g for g in analysis.prunable if g.root[0] == "h")
    scores = activation.root_scores(group, analysis.graph, stats)
    assert scores[0] == 0 and np.all(scores[2:] > 0)
    r = stats[("r", 1)]
    w2 = analysis.graph.const("w2").astype(np.float64)
    np.testing.assert_allclose(scores, r.mean_sq * (w2 * w2).sum(1))
    # centered (compensation restores the mean): the constant channel 1 costs nothing either
    centered = activation.root_scores(group, analysis.graph, stats, centered=True)
    assert centered[1] < 1e-9 * centered.max() and scores[1] > 0


def test_act_plan_removes_the_dead_channel_that_magnitude_keeps(tmp_path):
    analysis, stats = _setup(tmp_path)
    gid = next(g.id for g in analysis.prunable if g.root[0] == "h")
    act = analysis.plan(PruneConfig(ratio=0.25, importance="act", calib="given", compensate="bias",
                                         round_to=1), stats)
    mag = analysis.plan(PruneConfig(ratio=0.25, importance="l1", round_to=1))
    pruned_act = next(pg.pruned for pg in act.groups if pg.id == gid)
    pruned_mag = next(pg.pruned for pg in mag.groups if pg.id == gid)
    assert set(pruned_act) == {0, 1}
    assert 0 not in pruned_mag
