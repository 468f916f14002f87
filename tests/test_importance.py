"""Importance criteria and group reductions, on a conv chain with hand-set weights."""
import numpy as np
import pytest
from helpers import make_model, node, save

from onnxprune import analyze
from onnxprune.importance import CRITERIA, lamp, root_scores, unit_scores

W1 = np.array([[5.0, 5.0], [5.0, 5.1], [5.0, 4.9], [0.0, 0.5]], dtype=np.float32).reshape(4, 2, 1, 1)


def _group(tmp_path, w1=W1, w2=None):
    """x -> Conv(w1: 4 filters) -> Relu -> Conv(w2) -> y; returns (graph, the 4-channel group)."""
    w2 = np.ones((3, 4, 1, 1), np.float32) if w2 is None else w2
    model = make_model([node("Conv", ["x", "w1"], "a"), node("Relu", ["a"], "r"), node("Conv", ["r", "w2"], "y")],
                       {"x": [1, 2, 4, 4]}, {"y": None}, {"w1": w1, "w2": w2})
    analysis = analyze(save(model, tmp_path))
    (group,) = analysis.prunable
    return analysis.graph, group


def test_l1_and_l2_sum_every_coupled_slice(tmp_path):
    graph, group = _group(tmp_path)
    l1 = np.abs(W1).sum(axis=(1, 2, 3)) + 3.0  # w2 columns are three ones each
    l2 = (W1 ** 2).sum(axis=(1, 2, 3)) + 3.0
    assert np.allclose(root_scores(group, graph, "l1"), l1)
    assert np.allclose(root_scores(group, graph, "l2"), l2)


@pytest.mark.parametrize("reduction, expected", [("sum", lambda a, b: a + b), ("mean", lambda a, b: (a + b) / 2),
                                                  ("max", np.maximum)])
def test_group_reduction_combines_slices(tmp_path, reduction, expected):
    w2 = np.arange(12, dtype=np.float32).reshape(3, 4, 1, 1)
    graph, group = _group(tmp_path, w2=w2)
    out_part, in_part = np.abs(W1).sum(axis=(1, 2, 3)), np.abs(w2).sum(axis=(0, 2, 3))
    assert np.allclose(root_scores(group, graph, "l1", reduction=reduction), expected(out_part, in_part))


def test_lamp_normalises_by_the_tail_sum():
    assert np.allclose(lamp(np.array([3.0, 1.0, 2.0])), [1.0, 1 / 6, 2 / 5])
    assert np.allclose(lamp(np.zeros(3)), 0.0)


def test_lamp_keeps_the_l2_order_inside_a_group(tmp_path):
    graph, group = _group(tmp_path)
    scores = root_scores(group, graph, "lamp")
    assert list(np.argsort(scores)) == list(np.argsort(root_scores(group, graph, "l2")))
    assert scores.max() == pytest.approx(1.0) and scores.min() > 0


def test_fpgm_scores_the_filter_nearest_the_median_lowest(tmp_path):
    graph, group = _group(tmp_path)  # identical w2 columns: only w1 tells the channels apart
    fpgm = root_scores(group, graph, "fpgm")
    assert int(np.argmin(fpgm)) == 0  # [5, 5] sits between [5, 5.1] and [5, 4.9]
    assert int(np.argmin(root_scores(group, graph, "l1"))) == 3  # magnitude picks the small filter
    d = np.linalg.norm(W1.reshape(4, 2)[:, None] - W1.reshape(4, 2)[None], axis=2).sum(axis=1)
    assert np.allclose(fpgm, d)


def test_unit_scores_sum_the_roots_of_a_unit():
    class _G:
        units = np.array([0, 0, 1, 2, 2])
        unit_count = 3

    assert np.allclose(unit_scores(_G(), np.array([1.0, 2.0, 3.0, 4.0, 5.0])), [3.0, 3.0, 9.0])


def test_unknown_criterion_or_reduction_is_refused(tmp_path):
    graph, group = _group(tmp_path)
    with pytest.raises(ValueError):
        root_scores(group, graph, "taylor")
    with pytest.raises(ValueError):
        root_scores(group, graph, "l1", reduction="median")


def test_every_criterion_gives_one_finite_score_per_root(tmp_path):
    graph, group = _group(tmp_path)
    for criterion in CRITERIA:
        scores = root_scores(group, graph, criterion)
        assert scores.shape == (4,) and np.all(np.isfinite(scores)), criterion


@pytest.mark.parametrize("shape", [(7,), (5, 3), (16, 8, 3, 3), (3, 100, 7)])
def test_chunked_slice_norms_match_the_direct_sum(shape, monkeypatch):
    """Large weights are reduced in chunks of the leading axis; the result must not change."""
    from onnxprune import importance
    monkeypatch.setattr(importance, "_CHUNK_ELEMENTS", 4)  # many tiny chunks
    values = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for axis in range(values.ndim):
        for power in (1, 2):
            other = tuple(i for i in range(values.ndim) if i != axis)
            expected = (np.abs(values.astype(np.float64)) ** power).sum(axis=other) if other else \
                np.abs(values.astype(np.float64)) ** power
            np.testing.assert_allclose(importance.slice_norms(values, axis, power), expected, rtol=1e-5)
