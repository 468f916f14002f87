"""--report-html: one self-contained, well-formed page holding the numbers of the JSON report."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest
from helpers import make_model, node, weight

from onnxprune import PruneConfig, cli, prune, report_html

HOSTILE = "<script>alert(1)</script>"


def hostile_model():
    """x -> Conv(32, named HOSTILE, output HOSTILE) -> Relu -> Conv(16) -> Relu -> Conv(4) -> y."""
    nodes = [node("Conv", ["x", "w0", "b0"], HOSTILE, pads=[1, 1, 1, 1]), node("Relu", [HOSTILE], "r0"),
             node("Conv", ["r0", "w1", "b1"], "a1", pads=[1, 1, 1, 1]), node("Relu", ["a1"], "r1"),
             node("Conv", ["r1", "wy"], "y")]
    nodes[0].name = HOSTILE
    inits = {"w0": weight(32, 3, 3, 3), "b0": weight(32), "w1": weight(16, 32, 3, 3), "b1": weight(16),
             "wy": weight(4, 16, 1, 1)}
    return make_model(nodes, {"x": [1, 3, 6, 6]}, {"y": None}, inits)


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """(report dict, page text, page path, json path) of one pruning, both reports saved."""
    import onnx

    tmp = tmp_path_factory.mktemp("html")
    model = tmp / "model.onnx"
    onnx.save(hostile_model(), str(model))
    page, report = tmp / "report.html", tmp / "report.json"
    result = prune(str(model), str(tmp / "out.onnx"), PruneConfig(ratio=0.5, providers=["cpu"]))
    result.save_json(str(report))
    report_html.save_html(result, str(page))
    return json.loads(report.read_text()), page.read_text(encoding="utf-8"), page, report


def parse(text: str) -> ET.Element:
    """The page as XML (it is written XHTML-compatible): fails on any unbalanced or unquoted markup."""
    assert text.startswith("<!DOCTYPE html>\n")
    return ET.fromstring(text[len("<!DOCTYPE html>\n"):])


def page_text(root: ET.Element) -> str:
    return " ".join(" ".join(root.itertext()).split())


def test_the_page_is_well_formed_and_self_contained(pruned):
    _, text, _, _ = pruned
    root = parse(text)
    assert root.tag == "html" and root.find("head/style") is not None
    for tag in ("script", "link", "img", "iframe", "object", "embed"):
        assert root.find(f".//{tag}") is None, tag
    assert not re.search(r"https?://|src=|href=|url\(|@import", text)


def test_the_page_holds_the_json_numbers(pruned):
    report, text, _, _ = pruned
    root = parse(text)
    values = [e.get("data-value") for e in root.iter() if e.get("data-value") is not None]
    for side in ("before", "after"):
        for key in ("params", "macs", "file_bytes"):
            assert str(report[side][key]) in values, (side, key)
    for key in ("groups_total", "groups_pruned", "groups_frozen", "channels_removed"):
        assert str(report[key]) in values, key
    latency = report["validation"]["providers"]["cpu"]
    assert f"{latency['latency_before_ms']:.2f} ms" in page_text(root)
    by_group: dict[str, list[str]] = {}
    for e in root.iter():
        if e.get("data-group") is not None:
            by_group.setdefault(e.get("data-group"), []).append(" ".join("".join(e.itertext()).split()))
    rows = report["group_rows"]
    assert sum(1 for r in rows if r["pruned"]) >= 2 and any("score_hist" in r for r in rows)
    for r in rows:
        texts = by_group[str(r["id"])]
        if r["frozen"]:
            assert f"{r['size']} (frozen)" in texts
        elif r["pruned"]:
            assert f"{r['size']} \u2192 {r['size'] - r['pruned']}" in texts
        if "score_hist" in r:
            assert any(t.startswith(f"{r['units'] - r['units_pruned']} of {r['units']} ") for t in texts), texts


def test_every_frozen_reason_is_listed(pruned):
    report, text, _, _ = pruned
    shown = page_text(parse(text))
    reasons = [r["frozen"] for r in report["group_rows"] if r["frozen"]] + [r for r, _ in report["frozen_reasons"]]
    assert reasons
    for reason in reasons:
        assert " ".join(reason.split()) in shown


def test_a_hostile_name_is_escaped(pruned):
    report, text, _, _ = pruned
    assert any(r["node"] == HOSTILE for r in report["group_rows"])
    assert "<script" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert HOSTILE in page_text(parse(text))


def test_a_saved_json_report_renders_the_same_page(pruned, tmp_path, capsys):
    _, text, _, report_json = pruned
    out = tmp_path / "again.html"
    assert report_html.main([str(report_json), str(out)]) == 0
    assert out.read_text(encoding="utf-8") == text


def test_the_renderer_refuses_bad_input_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert report_html.main([str(bad), str(tmp_path / "o.html")]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "o.html").exists()
    assert report_html.main([str(bad), str(bad)]) == 2  # the output would overwrite the report
    assert report_html.main([]) == 2


def synthetic_report(groups: int) -> dict:
    rows = []
    for i in range(groups):
        frozen = f"frozen \x01 reason {i % 3} \udc80" if i % 10 == 0 else None
        row = {"id": i, "root": f"t{i}[axis 1]", "node": f"n{i}" * 30, "size": 64, "pruned": 0 if frozen else 16,
               "exact": True, "kind": "", "units": 64, "units_pruned": 0 if frozen else 16, "frozen": frozen,
               "inexact": []}
        if not frozen:
            row.update(score_hist={"lo": 0.0, "hi": 1.0, "kept": [0] * 12 + [4] * 12, "removed": [2] * 8 + [0] * 16},
                       score_cut=0.3)
        rows.append(row)
    stats = {"params": 10, "macs": 20, "file_bytes": 30}
    return {"model": "m.onnx", "output": None, "before": stats, "after": stats, "groups_total": groups,
            "group_rows": rows, "frozen_reasons": [["frozen reason 0", 1]], "validation": {"skipped": "--no-validate"},
            "calibration": {"samples": 8, "compensation": {"mode": "bias", "consumers": 3},
                            "fidelity": {"samples": 4, "outputs": {"y&z": {"cosine_mean": 0.99, "cosine_min": 0.9,
                                                                           "relative_error": 0.1}}}}}


def test_a_large_report_stays_compact():
    text = report_html.render(synthetic_report(4000))
    root = parse(text)
    layer_rows = [g for g in root.iter("g")]
    cards = [d for d in root.iter("div") if d.get("class") == "card"]
    assert len(layer_rows) == report_html.MAX_LAYER_ROWS
    assert len(cards) == report_html.MAX_SCORE_CARDS + 1  # and one card adding all up
    shown = page_text(root)
    assert "3600 more groups not drawn" in shown and "3600 scored groups" in shown
    assert "100 more" in shown  # frozen spaces past MAX_FROZEN_ROWS
    assert len(text) < 2_000_000


def test_calibration_fidelity_and_odd_characters_render():
    shown = page_text(parse(report_html.render(synthetic_report(3))))
    assert "compensation bias on 3 consumers" in shown and "y&z" in shown and "0.9900" in shown
    assert "\\x01" in shown and "\\udc80" in shown  # control characters and lone surrogates shown, not written raw


# -- the CLI flag ---------------------------------------------------------------------------------------

@pytest.fixture
def model_file(tmp_path):
    import onnx

    path = tmp_path / "model.onnx"
    onnx.save(hostile_model(), str(path))
    return path


def test_the_cli_writes_the_page_of_its_json_report(model_file, tmp_path, capsys):
    page, report = tmp_path / "r.html", tmp_path / "r.json"
    assert cli.main([str(model_file), "-o", str(tmp_path / "o.onnx"), "--ratio", "0.5", "--no-validate", "-q",
                     "--report-json", str(report), "--report-html", str(page)]) == 0
    assert page.read_text(encoding="utf-8") == report_html.render(json.loads(report.read_text()))


def test_the_cli_checks_the_page_path_before_any_work(model_file, tmp_path, capsys):
    out = tmp_path / "o.onnx"
    (tmp_path / "folder").mkdir()
    assert cli.main([str(model_file), "-o", str(out), "--report-html", str(tmp_path / "folder"), "-q"]) == 2
    assert "--report-html" in capsys.readouterr().err and not out.exists()
    assert cli.main([str(model_file), "-o", str(out), "--report-html", str(model_file), "-q"]) == 2
    assert not out.exists()


def test_a_page_that_cannot_be_written_removes_the_model_plan_and_json(model_file, tmp_path, monkeypatch, capsys):
    from onnxprune.errors import OutputWriteError

    def fail(report, path):
        raise OutputWriteError(f"cannot write '{path}': No space left on device")

    monkeypatch.setattr(report_html, "save_html", fail)
    out, plan, report, page = (tmp_path / name for name in ("o.onnx", "p.json", "r.json", "r.html"))
    code = cli.main([str(model_file), "-o", str(out), "--plan-out", str(plan), "--report-json", str(report),
                     "--report-html", str(page), "--ratio", "0.5", "--no-validate", "-q"])
    assert code == 2 and "No space left" in capsys.readouterr().err
    assert not any(p.exists() for p in (out, plan, report, page))
