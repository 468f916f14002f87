"""Allocation of a cost target by measured sensitivity (--calib with --target-*): the plan spends the
pruning on the groups whose removal changes the outputs least, through the CLI as a user runs it."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from helpers import make_model, node, save, weight

from onnxprune import cli

N_IN, H, N_OUT = 16, 32, 8


def _mlp():
    """x -> A (32 hidden) -> B (32 hidden) -> y. 24 of A's channels reach B through tiny weights (nearly
    redundant); every channel of B reaches y through large ones (sensitive)."""
    rng = np.random.default_rng(0)
    w2 = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(np.float32)
    w2[8:] *= np.float32(1e-3)
    inits = {"w1": weight(N_IN, H), "b1": np.full(H, 0.1, np.float32), "w2": w2, "b2": np.full(H, 0.1, np.float32),
             "w3": (rng.standard_normal((H, N_OUT)) * 2).astype(np.float32)}
    nodes = [node("MatMul", ["x", "w1"], "m1"), node("Add", ["m1", "b1"], "a1"), node("Relu", ["a1"], "h1"),
             node("MatMul", ["h1", "w2"], "m2"), node("Add", ["m2", "b2"], "a2"), node("Relu", ["a2"], "h2"),
             node("MatMul", ["h2", "w3"], "y")]
    return make_model(nodes, {"x": ["n", N_IN]}, {"y": ["n", N_OUT]}, inits)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("alloc")
    path = save(_mlp(), folder, "mlp.onnx")
    x = np.random.default_rng(1).standard_normal((200, N_IN)).astype(np.float32)
    np.savez(folder / "calib.npz", x=x)
    return folder, path, x


def _run(setup, name: str, *flags: str) -> tuple[dict, np.ndarray]:
    folder, path, x = setup
    out, report = folder / f"{name}.onnx", folder / f"{name}.json"
    assert cli.main([path, "-o", str(out), "--calib", str(folder / "calib.npz"), "--calib-samples", "100",
                     "--round-to", "1", "--report-json", str(report), *flags]) == 0
    (y,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x[100:]})
    return json.loads(report.read_text()), y


def test_measured_allocation_spends_the_target_on_the_redundant_group(setup):
    folder, path, x = setup
    (reference,) = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x[100:]})
    measured, y_measured = _run(setup, "measured", "--target-params", "0.7")
    uniform, y_uniform = _run(setup, "uniform", "--target-params", "0.7", "--allocation", "uniform")
    for report in (measured, uniform):  # both meet the target
        assert abs(report["after"]["params"] / report["before"]["params"] - 0.7) <= 0.01 + 1e-9
    pruned = {r["root"]: r["pruned"] for r in measured["group_rows"]}
    a, b = pruned["m1[axis 1]"], pruned["m2[axis 1]"]
    assert a > b, pruned  # the redundant group gives more than the sensitive one
    even = {r["root"]: r["pruned"] for r in uniform["group_rows"]}
    assert abs(even["m1[axis 1]"] - even["m2[axis 1]"]) <= 1, even  # one unit apart at most (fine steps)
    assert any("allocation: measured sensitivity" in n for n in measured["notes"]), measured["notes"]
    assert not any("allocation: measured" in n for n in uniform["notes"])
    err = {k: float(np.linalg.norm(y - reference) / np.linalg.norm(reference))
           for k, y in (("measured", y_measured), ("uniform", y_uniform))}
    assert err["measured"] < 0.5 * err["uniform"], err


def test_allocation_measured_needs_calibration(tmp_path, capsys):
    path = save(_mlp(), tmp_path, "m.onnx")
    assert cli.main([path, "--target-params", "0.7", "--allocation", "measured"]) == 2
    assert "--allocation measured" in capsys.readouterr().err


def test_a_plain_ratio_keeps_its_meaning_with_calibration(setup):
    report, _ = _run(setup, "ratio", "--ratio", "0.25")
    rows = [r for r in report["group_rows"] if not r["frozen"]]
    assert rows and all(r["pruned"] == 8 for r in rows), rows


def _cancelling():
    """y = (x W1) W3 + (x W2) W4 + relu(x W5) W6, with W2 = W1 and W4 = -W3: the first two branches cancel
    when both lose the same channels (they score alike), so each alone looks very sensitive and the
    measured allocation spends the whole target on the third branch, which uniform pruning spares."""
    rng = np.random.default_rng(0)
    w1 = weight(N_IN, H)
    w3 = (rng.standard_normal((H, N_OUT)) * 2).astype(np.float32)
    inits = {"w1": w1, "w2": w1.copy(), "w3": w3, "w4": -w3, "w5": weight(N_IN, H),
             "w6": (rng.standard_normal((H, N_OUT)) / np.sqrt(H)).astype(np.float32)}
    nodes = [node("MatMul", ["x", "w1"], "m1"), node("MatMul", ["m1", "w3"], "ya"),
             node("MatMul", ["x", "w2"], "m2"), node("MatMul", ["m2", "w4"], "yb"),
             node("MatMul", ["x", "w5"], "m5"), node("Relu", ["m5"], "h5"), node("MatMul", ["h5", "w6"], "yc"),
             node("Add", ["ya", "yb"], "yab"), node("Add", ["yab", "yc"], "y")]
    return make_model(nodes, {"x": ["n", N_IN]}, {"y": ["n", N_OUT]}, inits)


def test_auto_allocation_keeps_one_ratio_when_the_measured_one_is_further_from_the_original(tmp_path):
    """Per-group curves measured one group at a time need not add up; the default then keeps the
    uniform plan, says so, and reports both errors. --allocation measured takes the measured one as asked."""
    path = save(_cancelling(), tmp_path, "cancel.onnx")
    x = np.random.default_rng(1).standard_normal((200, N_IN)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    (reference,) = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x[100:]})
    setup = (tmp_path, path, x)
    auto, y_auto = _run(setup, "auto", "--target-params", "0.7")
    forced, y_forced = _run(setup, "forced", "--target-params", "0.7", "--allocation", "measured")
    check = auto["plan"]["meta"]["allocation"]["check"] if "plan" in auto else None
    notes = " ".join(auto["notes"])
    assert "allocation: one ratio for all groups, not the measured allocation" in notes, auto["notes"]
    assert not any("one ratio for all groups, not" in n for n in forced["notes"]), forced["notes"]
    err = {k: float(np.linalg.norm(y - reference) / np.linalg.norm(reference))
           for k, y in (("auto", y_auto), ("forced", y_forced))}
    assert err["auto"] < 0.5 * err["forced"], (err, check)
    assert abs(auto["after"]["params"] / auto["before"]["params"] - 0.7) <= 0.01 + 1e-9
