"""The command line contract: flags, outputs, exit codes (0 ok, 1 failed check, 2 bad usage/input)."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from helpers import make_model, node, weight

import build_example
from onnxprune import cli


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(build_example.build(), str(path))
    return path


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(args, capsys):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_default_run_writes_pruned_model_beside_input_and_keeps_input(model_path, capsys):
    before = _digest(model_path)
    code, out, err = _run([model_path, "--ratio", "0.3", "--providers", "cpu"], capsys)
    assert code == 0, err
    pruned = model_path.with_name("tiny.pruned.onnx")
    assert pruned.exists() and _digest(model_path) == before
    assert "params" in out and "MACs" in out and "latency" in out
    small = onnx.load(str(pruned))
    count = lambda m: sum(int(np.prod(t.dims)) for t in m.graph.initializer)  # noqa: E731
    assert count(small) < count(onnx.load(str(model_path)))


def test_output_flag_and_refusing_to_overwrite_input(model_path, tmp_path, capsys):
    out_path = tmp_path / "sub" / "out.onnx"
    assert _run([model_path, "-o", out_path, "--no-validate"], capsys)[0] == 0
    assert out_path.exists()
    before = _digest(model_path)
    code, _, err = _run([model_path, "-o", model_path], capsys)
    assert code == 2 and "is the input model" in err and _digest(model_path) == before


@pytest.mark.parametrize("ratio", ["1.5", "-0.1", "1", "abc"])
def test_bad_ratio_is_one_line_exit_2(model_path, ratio, capsys):
    code, _, err = _run([model_path, "--ratio", ratio], capsys)
    assert code == 2 and "--ratio" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_missing_and_corrupt_files(tmp_path, capsys):
    code, _, err = _run([tmp_path / "nope.onnx"], capsys)
    assert code == 2 and "does not exist" in err
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf \x00\xff" * 10)
    code, _, err = _run([bad], capsys)
    assert code == 2 and "bad.onnx" in err and "Traceback" not in err


def test_unsupported_opset(tmp_path, capsys):
    model = make_model([node("Relu", ["x"], "y")], {"x": [1, 4]}, {"y": [1, 4]}, opset=6)
    path = tmp_path / "old.onnx"
    onnx.save(model, str(path))
    code, _, err = _run([path], capsys)
    assert code == 2 and "opset 6" in err  # opsets 7 and 8 are upgraded (test_cli_errors.py)


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn", "random"])
def test_importance_choices(model_path, tmp_path, criterion, capsys):
    code, _, err = _run([model_path, "-o", tmp_path / f"{criterion}.onnx", "--importance", criterion,
                         "--providers", "cpu"], capsys)
    assert code == 0, err


def test_unknown_importance_is_usage_error(model_path, capsys):
    code, _, err = _run([model_path, "--importance", "magic"], capsys)
    assert code == 2 and "magic" in err


def test_plan_out_then_plan_in_reproduces_the_same_model(model_path, tmp_path, capsys):
    plan = tmp_path / "plan.json"
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert _run([model_path, "-o", first, "--plan-out", plan, "--ratio", "0.5", "--no-validate"], capsys)[0] == 0
    data = json.loads(plan.read_text())
    g = data["groups"][0]
    assert {"id", "exact", "size", "pruned", "slices"} <= set(g) and "frozen" in data
    assert {"tensor", "axis", "indices", "role"} <= set(g["slices"][0])
    assert {s["role"] for grp in data["groups"] for s in grp["slices"]} == {"in", "out"}
    # --plan-in ignores ratio and importance
    assert _run([model_path, "-o", second, "--plan-in", plan, "--ratio", "0.1", "--importance", "random",
                 "--no-validate"], capsys)[0] == 0
    dims = lambda p: {t.name: list(t.dims) for t in onnx.load(str(p)).graph.initializer}  # noqa: E731
    assert dims(first) == dims(second)


def test_plan_in_subset_of_groups(model_path, tmp_path, capsys):
    plan = tmp_path / "plan.json"
    _run([model_path, "-o", tmp_path / "a.onnx", "--plan-out", plan, "--no-validate"], capsys)
    data = json.loads(plan.read_text())
    data["groups"] = data["groups"][:1]
    plan.write_text(json.dumps(data))
    code, out, err = _run([model_path, "-o", tmp_path / "b.onnx", "--plan-in", plan, "--providers", "cpu"], capsys)
    assert code == 0, err
    assert "1 pruned" in out


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"groups": [{"id": 0}]}', "malformed"),
    ('{"groups": [{"id": 0, "root": {"tensor": "nope", "axis": 1}, "size": 3, "pruned": [0]}]}', "expects root"),
])
def test_bad_plan_files(model_path, tmp_path, content, message, capsys):
    plan = tmp_path / "plan.json"
    plan.write_text(content)
    code, _, err = _run([model_path, "--plan-in", plan, "-o", tmp_path / "o.onnx"], capsys)
    assert code == 2 and message in err


def test_plan_that_splits_coupled_channels_is_refused(model_path, tmp_path, capsys):
    plan = tmp_path / "plan.json"
    _run([model_path, "-o", tmp_path / "a.onnx", "--plan-out", plan, "--no-validate"], capsys)
    data = json.loads(plan.read_text())
    data["groups"][0]["pruned"] = list(range(data["groups"][0]["size"]))  # everything
    plan.write_text(json.dumps(data))
    code, _, err = _run([model_path, "--plan-in", plan, "-o", tmp_path / "o.onnx"], capsys)
    assert code == 2 and "every channel" in err


def test_report_json(model_path, tmp_path, capsys):
    report = tmp_path / "r.json"
    assert _run([model_path, "-o", tmp_path / "o.onnx", "--report-json", report, "--providers", "cpu"], capsys)[0] == 0
    data = json.loads(report.read_text())
    assert data["after"]["params"] < data["before"]["params"]
    assert data["after"]["macs"] < data["before"]["macs"]
    assert data["groups_pruned"] > 0 and data["validation"]["providers"]["cpu"]["latency_after_ms"] > 0
    assert data["frozen_reasons"]


def _dynamic_model(tmp_path):
    inits = {"w1": weight(8, 3, 3, 3), "w2": weight(4, 8, 1, 1)}
    model = make_model([node("Conv", ["x", "w1"], "a", pads=[1, 1, 1, 1]), node("Relu", ["a"], "r"),
                        node("Conv", ["r", "w2"], "y")], {"x": ["batch", 3, "h", "w"]}, {"y": None}, inits)
    path = tmp_path / "dyn.onnx"
    onnx.save(model, str(path))
    return path


def test_dynamic_input_needs_input_shape(tmp_path, capsys):
    path = _dynamic_model(tmp_path)
    code, _, err = _run([path, "--providers", "cpu"], capsys)
    assert code == 2 and "--input-shape x:" in err
    code, out, err = _run([path, "--providers", "cpu", "--input-shape", "x:2,3,16,16", "--round-to", "1"], capsys)
    assert code == 0, err
    assert "1 pruned" in out


@pytest.mark.parametrize("spec, message", [("x", "NAME:D0"), ("x:1,a", "NAME:D0"), ("x:0,3", "NAME:D0"),
                                           ("nope:1,3,8,8", "nope"), ("x:1,3", "rank")])
def test_bad_input_shape(tmp_path, spec, message, capsys):
    code, _, err = _run([_dynamic_model(tmp_path), "--input-shape", spec], capsys)
    assert code == 2 and message in err


def test_no_validate_and_providers(model_path, tmp_path, capsys):
    code, out, _ = _run([model_path, "-o", tmp_path / "a.onnx", "--no-validate"], capsys)
    assert code == 0 and "validation skipped" in out
    code, _, err = _run([model_path, "-o", tmp_path / "b.onnx", "--providers", "tpu"], capsys)
    assert code == 2 and "tpu" in err


def test_cuda_provider_is_skipped_with_a_note_when_absent(model_path, tmp_path, capsys):
    from onnxprune import available_providers
    if "cuda" in available_providers():
        pytest.skip("CUDA provider present: covered by test_cuda.py")
    code, out, _ = _run([model_path, "-o", tmp_path / "a.onnx", "--providers", "cpu,cuda"], capsys)
    assert code == 0 and "cuda" in out and "skipped" in out


def test_verify_passes_and_fails(model_path, capsys, monkeypatch):
    code, out, _ = _run(["verify", model_path, "--ratio", "0.5"], capsys)
    assert code == 0 and "PASSED" in out
    from onnxprune.rules import conv
    original = conv._ConvBase.propagate

    def forgetful(self, node, graph, port, axis, pairs, fx):
        if not port.is_input:  # filters are cut, but no consumer is told
            original(self, node, graph, port, axis, pairs, fx)

    monkeypatch.setattr(conv._ConvBase, "propagate", forgetful)
    code, out, _ = _run(["verify", model_path, "--ratio", "0.5"], capsys)
    assert code == 1 and "FAILED" in out


def test_analyze_writes_nothing(model_path, tmp_path, capsys):
    listing = sorted(p.name for p in model_path.parent.iterdir())
    code, out, _ = _run(["analyze", model_path], capsys)
    assert code == 0 and "groups" in out and "frozen" in out
    assert sorted(p.name for p in model_path.parent.iterdir()) == listing
    target = tmp_path / "groups.json"
    assert _run(["analyze", model_path, "--json", target], capsys)[0] == 0
    assert json.loads(target.read_text())["groups"]


def test_console_entry_point_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "onnxprune", str(tmp_path / "missing.onnx")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "does not exist" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "onnxprune", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and "onnxprune" in proc.stdout


def test_inexact_groups_only_with_flag(tmp_path, capsys):
    """A LayerNorm over the channels makes the group inexact: skipped by default, pruned with --inexact."""
    inits = {"w1": weight(8, 16), "g": np.ones(16, np.float32), "b": np.zeros(16, np.float32), "w2": weight(16, 4)}
    model = make_model([node("MatMul", ["x", "w1"], "h"), node("LayerNormalization", ["h", "g", "b"], "n"),
                        node("MatMul", ["n", "w2"], "y")], {"x": [2, 8]}, {"y": [2, 4]}, inits)
    path = tmp_path / "ln.onnx"
    onnx.save(model, str(path))
    code, out, _ = _run([path, "-o", tmp_path / "a.onnx", "--providers", "cpu", "--ratio", "0.5"], capsys)
    assert code == 0 and "inexact groups left unpruned" in out and "0 pruned" in out
    code, out, _ = _run([path, "-o", tmp_path / "b.onnx", "--providers", "cpu", "--ratio", "0.5", "--inexact"], capsys)
    assert code == 0 and "1 pruned (1 inexact)" in out
