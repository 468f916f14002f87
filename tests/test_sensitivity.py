"""Measured sensitivity: per-group output error at fractions removed, the --sensitivity flag, its report."""
import json
import logging

import numpy as np
import pytest
from helpers import make_model, node, save, weight
from test_report_html import parse

from onnxprune import PruneConfig, analyze, calib, sensitivity
from onnxprune.testing import weight_scores


def _two_branches(loud: float = 100.0, quiet: float = 0.01):
    """y = relu(x wa) (loud * va) + relu(x wb) (quiet * vb): branch a moves y far more than branch b."""
    inits = {"wa": weight(6, 8), "va": weight(8, 3) * loud, "wb": weight(6, 8), "vb": weight(8, 3) * quiet}
    nodes = [node("MatMul", ["x", "wa"], "ha"), node("Relu", ["ha"], "ra"), node("MatMul", ["ra", "va"], "ya"),
             node("MatMul", ["x", "wb"], "hb"), node("Relu", ["hb"], "rb"), node("MatMul", ["rb", "vb"], "yb"),
             node("Add", ["ya", "yb"], "y")]
    return make_model(nodes, {"x": ["N", 6]}, {"y": ["N", 3]}, inits)


def _npz(tmp_path, n=40, seed=2):
    path = str(tmp_path / "calib.npz")
    np.savez(path, x=np.random.default_rng(seed).standard_normal((n, 6)).astype(np.float32))
    return path


def _measure(tmp_path, **kwargs):
    path = save(_two_branches(), tmp_path)
    analysis = analyze(path, {"x": (4, 6)})
    data = calib.load(_npz(tmp_path), analysis.graph.proto)
    scores = weight_scores(analysis, "l1")
    result = sensitivity.measure(analysis.graph, analysis.groups, scores, data, **kwargs)
    roots = {str(g.id): g.root[0] for g in analysis.groups}
    return result, {roots[gid]: row for gid, row in result["groups"].items()}


def test_the_louder_branch_is_measured_more_sensitive(tmp_path):
    result, by_root = _measure(tmp_path)
    assert set(by_root) == {"ha", "hb"} and result["samples"] == 40 and not result["skipped"]
    loud, quiet = by_root["ha"]["relative_error"], by_root["hb"]["relative_error"]
    assert all(a > 100 * b for a, b in zip(loud, quiet))
    assert sensitivity.most_sensitive(result)[0] == by_root["ha"]["root"]


def test_the_curve_rises_with_the_fraction_and_counts_units(tmp_path):
    result, by_root = _measure(tmp_path, fractions=(0.1, 0.25, 0.5, 0.75))
    errs = by_root["ha"]["relative_error"]
    assert errs[0] > 0 and all(b >= a * 0.95 for a, b in zip(errs, errs[1:])) and errs[-1] > errs[0]
    assert by_root["ha"]["units_removed"] == [1, 2, 4, 6]  # 8 units: rounded down, at least one


def test_units_at_rounds_down_keeps_one_and_removes_at_least_one():
    class G:
        unit_count = 8
    g = G()
    assert [sensitivity.units_at(g, f) for f in (0.0, 0.05, 0.3, 0.99)] == [0, 1, 2, 7]
    g.unit_count = 1
    assert sensitivity.units_at(g, 0.5) == 0


def test_a_zero_budget_skips_every_group_and_says_so(tmp_path):
    result, by_root = _measure(tmp_path, budget_s=0)
    assert by_root == {} and len(result["skipped"]) == 2
    assert all("time budget" in s["reason"] for s in result["skipped"])


def test_the_group_cap_skips_the_smaller_groups(tmp_path):
    result, by_root = _measure(tmp_path, max_groups=1)
    assert len(by_root) == 1 and len(result["skipped"]) == 1 and "first 1 groups" in result["skipped"][0]["reason"]


def test_progress_is_logged(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="onnxprune.sensitivity"):
        _measure(tmp_path)
    assert any("sensitivity: 2/2 groups" in r.getMessage() for r in caplog.records)


def test_the_cli_writes_curves_in_json_text_and_html(tmp_path, capsys):
    from onnxprune.cli import main

    path = save(_two_branches(), tmp_path)
    js, page = str(tmp_path / "r.json"), str(tmp_path / "r.html")
    assert main([path, "-o", str(tmp_path / "p.onnx"), "--calib", _npz(tmp_path), "--sensitivity", "--round-to", "1",
                 "--providers", "cpu", "--report-json", js, "--report-html", page]) == 0
    text = capsys.readouterr().out
    assert "sensitivity: 2 groups x 4 fractions measured on 8 samples" in text and "most sensitive: ha" in text
    assert "sensitivity is measured and reported only: the plan spreads a --target-* by it" in text
    data = json.load(open(js))["sensitivity"]
    assert data["fractions"] == [0.1, 0.2, 0.3, 0.5] and len(data["groups"]) == 2 and data["samples"] == 8
    html = open(page, encoding="utf-8").read()
    root = parse(html)
    lines = root.findall(".//{*}polyline")
    assert len(lines) == 2 + 1 + 2  # overview: each curve and the median; one card per group
    assert "no sensitivity curves" not in html and "id=\"sensitivity\"" in html


def test_the_cli_budget_bounds_the_measuring(tmp_path):
    """--sensitivity-budget 0: no group is measured, each is listed with the reason, the run still prunes."""
    from onnxprune.cli import main

    path = save(_two_branches(), tmp_path)
    js = str(tmp_path / "r.json")
    assert main([path, "-o", str(tmp_path / "p.onnx"), "--calib", _npz(tmp_path), "--sensitivity",
                 "--sensitivity-budget", "0", "--no-validate", "--report-json", js, "-q"]) == 0
    data = json.load(open(js))["sensitivity"]
    assert data["groups"] == {}
    assert len(data["skipped"]) == 2 and all("time budget" in s["reason"] for s in data["skipped"])


def test_sensitivity_needs_calibration_data(tmp_path, capsys):
    from onnxprune.cli import main

    path = save(_two_branches(), tmp_path)
    assert main([path, "--sensitivity"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--sensitivity" in err and "--calib" in err
    with pytest.raises(Exception, match="sensitivity.*calib"):
        PruneConfig(sensitivity=True).check()


def test_the_page_escapes_names_skips_malformed_curves_and_caps_cards():
    from onnxprune.report_html import MAX_SCORE_CARDS, render

    groups = {str(i): {"root": f"<b>&'\"{i}\x01", "units_removed": [1, 2], "relative_error": [0.01 * i, 0.02 * i]}
              for i in range(MAX_SCORE_CARDS + 5)}
    groups["bad"] = {"root": "x", "relative_error": [0.1]}  # one value for two fractions: not drawn
    html = render({"model": "m.onnx", "sensitivity": {"fractions": [0.1, 0.3], "samples": 3, "seconds": 0.5,
                                                      "groups": groups, "skipped": [{"id": 9, "reason": "<budget>"}]}})
    root = parse(html)
    assert len(root.findall(".//{*}polyline")) == MAX_SCORE_CARDS + 5 + 1 + MAX_SCORE_CARDS
    assert "<b>" not in html and "&lt;budget&gt;" in html and "1 groups not measured" in html
    assert f"the {MAX_SCORE_CARDS} most sensitive are drawn" in html


def test_class_score_outputs_get_the_softmax_kl(tmp_path):
    _, by_root = _measure(tmp_path)  # y is [N, 3]: class-score shaped
    kl = by_root["ha"]["softmax_kl"]
    assert len(kl) == 4 and all(k >= 0 for k in kl) and kl[-1] > by_root["hb"]["softmax_kl"][-1]
    same = [np.array([[1.0, 2.0, 3.0]])]
    assert sensitivity.softmax_kl(same, same) == pytest.approx(0.0, abs=1e-12)
    assert sensitivity.softmax_kl([np.zeros((2, 3, 4))], [np.zeros((2, 3, 4))]) is None


def test_the_budget_stops_a_group_between_fractions(tmp_path, monkeypatch):
    """One group of a large model can take longer than the whole budget (SmolLM2: 181 s for one group
    against 60 s): the measuring stops between fractions, and the unfinished group is listed as skipped."""
    import time

    real = sensitivity._outputs

    def slow(model, data, label):
        if label.startswith("sensitivity of"):
            time.sleep(0.2)
        return real(model, data, label)

    monkeypatch.setattr(sensitivity, "_outputs", slow)
    result, by_root = _measure(tmp_path, budget_s=0.1)
    assert not by_root and len(result["skipped"]) == 2
    assert all("time budget" in s["reason"] for s in result["skipped"])
    assert result["seconds"] < 0.6  # one fraction run, not the group's four
