"""Weights in external data stay on disk (ir/external.py, ir/save.py): read when used, cut when the output
is written, streamed into a data file of the input's kind; the input's files are never touched, and a
model naming data it cannot have is refused in one line. Seen through the CLI as a user runs it."""
from __future__ import annotations

import hashlib
import importlib
import json
import os

import numpy as np
import onnx
import pytest
from helpers import make_model, node, weight
from onnx import numpy_helper

from onnxprune import ModelLoadError, analyze, cli, ir
from onnxprune.testing import random_inputs, run_model

C, HW = 16, 4


def _model() -> onnx.ModelProto:
    """Conv -> Relu -> Conv -> Relu -> MatMul: one weight cut on its rows, one on its columns, one on both."""
    inits = {"w1": weight(C, 3, 3, 3), "b1": weight(C), "w2": weight(C, C, 3, 3), "b2": weight(C),
             "w3": weight(C * HW * HW, 10)}
    nodes = [node("Conv", ["x", "w1", "b1"], "a", pads=[1, 1, 1, 1]), node("Relu", ["a"], "r"),
             node("Conv", ["r", "w2", "b2"], "c", pads=[1, 1, 1, 1]), node("Relu", ["c"], "s"),
             node("Flatten", ["s"], "f"), node("MatMul", ["f", "w3"], "y")]
    return make_model(nodes, {"x": [1, 3, HW, HW]}, {"y": [1, 10]}, inits)


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _saved(tmp_path, location: str = "model.onnx_data", threshold: int = 0):
    """The model with external data in tmp_path/in, and the same model as one file, tmp_path/plain.onnx."""
    model = _model()
    onnx.save(model, str(tmp_path / "plain.onnx"))
    folder = tmp_path / "in"
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location,
              size_threshold=threshold)
    return path


def _arrays(path) -> dict:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


FLAGS = ["--ratio", "0.5", "--round-to", "1", "--providers", "cpu"]


def test_external_weights_are_cut_into_a_data_file_of_the_inputs_kind(tmp_path, capsys):
    src = _saved(tmp_path)
    before = {p: _sha(p) for p in (src, src.parent / "model.onnx_data")}
    plain = tmp_path / "plain.onnx"
    out_dir = tmp_path / "out"
    out = out_dir / "pruned.onnx"
    assert cli.main([str(src), "-o", str(out), *FLAGS]) == 0
    assert cli.main([str(plain), "-o", str(tmp_path / "plain.pruned.onnx"), *FLAGS]) == 0
    assert sorted(os.listdir(out_dir)) == ["pruned.onnx", "pruned.onnx_data"]  # the input's kind of name
    assert {p: _sha(p) for p in before} == before  # the input's files are untouched
    stored = onnx.load(str(out), load_external_data=False)
    big = [t for t in stored.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert {t.name for t in big} >= {"w1", "w2", "w3"}
    assert all({e.key: e.value for e in t.external_data}["location"] == "pruned.onnx_data" for t in big)
    assert not any(e.key.startswith("onnxprune") for t in big for e in t.external_data)
    # the same cut as the in-memory pipeline, value for value
    streamed, in_memory = _arrays(out), _arrays(tmp_path / "plain.pruned.onnx")
    assert streamed.keys() == in_memory.keys()
    for name, value in in_memory.items():
        np.testing.assert_array_equal(streamed[name], value, err_msg=name)
    assert streamed["w2"].shape[:2] == (C // 2, C // 2)  # cut on both axes
    feeds = random_inputs(onnx.load(str(plain)), {})
    np.testing.assert_array_equal(run_model(str(out), feeds).outputs[0],
                                  run_model(str(tmp_path / "plain.pruned.onnx"), feeds).outputs[0])
    onnx.checker.check_model(str(out), full_check=True)


def test_the_oracle_and_calibration_read_external_weights(tmp_path, capsys):
    src = _saved(tmp_path)
    assert cli.main(["verify", str(src), *FLAGS[:4]]) == 0
    assert "oracle PASSED" in capsys.readouterr().out
    x = np.random.default_rng(0).standard_normal((40, 3, HW, HW)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    plain = tmp_path / "plain.onnx"
    calib = ["--calib", str(tmp_path / "calib.npz"), "--calib-samples", "30", "--compensate", "lsq"]
    assert cli.main([str(src), "-o", str(tmp_path / "a.onnx"), *FLAGS, *calib]) == 0
    assert cli.main([str(plain), "-o", str(tmp_path / "b.onnx"), *FLAGS, *calib]) == 0
    a, b = _arrays(tmp_path / "a.onnx"), _arrays(tmp_path / "b.onnx")
    for name in b:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("keep", [{0: [0, 2, 3, 6]}, {1: [1, 4]}, {0: [5, 6], 2: [0, 2]}, {0: [0, 1, 2, 3, 4, 5, 6]}])
def test_a_pending_cut_reads_and_writes_the_kept_part(tmp_path, monkeypatch, keep):
    """Cut rows (runs copied as byte ranges), columns and both, through chunks of one row at a time."""
    value = np.arange(7 * 5 * 3, dtype=np.float32).reshape(7, 5, 3)
    model = make_model([node("Identity", ["w"], "y")], {}, {"y": None}, {"w": value})
    src = tmp_path / "src.onnx"
    onnx.save(model, str(src), save_as_external_data=True, location="src.onnx.data", size_threshold=0)
    proto = ir.read_model(src)
    kept = {axis: np.array(idx) for axis, idx in keep.items()}
    expected = value[np.ix_(*[kept.get(a, np.arange(n)) for a, n in enumerate(value.shape)])]
    cut = ir.copy_model(proto, {"w": ir.Kept(kept)})
    assert list(ir.initializer_shapes(cut, ["w"])["w"]) == list(expected.shape)
    np.testing.assert_array_equal(ir.initializer_reader(cut)("w"), expected)
    again = ir.copy_model(cut, {"w": ir.Kept({0: np.array([0])})})  # a cut of a cut: composed on the source
    np.testing.assert_array_equal(ir.initializer_reader(again)("w"), expected[:1])
    monkeypatch.setattr(importlib.import_module("onnxprune.ir.save"), "CHUNK_BYTES", 1)
    ir.save(cut, tmp_path / "out" / "cut.onnx")
    written = onnx.load(str(tmp_path / "out" / "cut.onnx")).graph.initializer[0]
    np.testing.assert_array_equal(numpy_helper.to_array(written), expected)


def test_output_data_never_replaces_the_inputs_data(tmp_path):
    """Input a.onnx with data 'b.onnx.data'; output b.onnx would be given that very name."""
    folder = tmp_path / "m"
    folder.mkdir()
    onnx.save(_model(), str(folder / "a.onnx"), save_as_external_data=True, location="b.onnx.data", size_threshold=0)
    digest = _sha(folder / "b.onnx.data")
    assert cli.main([str(folder / "a.onnx"), "-o", str(folder / "b.onnx"), *FLAGS]) == 0
    assert _sha(folder / "b.onnx.data") == digest
    assert "pruned.b.onnx.data" in os.listdir(folder)
    assert run_model(str(folder / "b.onnx"), random_inputs(_model(), {})).outputs[0].shape == (1, 10)


def _external(tmp_path, location: str, offset: int = 0, length: int | None = None, data: bytes = b"") -> str:
    model = _model()
    folder = tmp_path / "bad"
    folder.mkdir(exist_ok=True)
    (folder / "weights.bin").write_bytes(data)
    t = next(t for t in model.graph.initializer if t.name == "w3")
    t.ClearField("raw_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    entries = {"location": location, "offset": str(offset)}
    if length is not None:
        entries["length"] = str(length)
    for k, v in entries.items():
        e = t.external_data.add()
        e.key, e.value = k, v
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return str(path)


W3_BYTES = C * HW * HW * 10 * 4


@pytest.mark.parametrize("case, expected", [
    (dict(location=""), "names no location"),
    (dict(location="/etc/passwd"), "absolute path '/etc/passwd'"),
    (dict(location="../../outside.bin"), "outside the model's folder"),
    (dict(location="missing.bin"), "names external data 'missing.bin' that does not exist"),
    (dict(location="weights.bin", length=100, data=bytes(W3_BYTES)), f"needs {W3_BYTES} bytes of external data"),
    (dict(location="weights.bin", offset=64, data=bytes(W3_BYTES)), f"which holds {W3_BYTES}"),
])
def test_external_data_it_cannot_have_is_refused_in_one_line(tmp_path, capsys, case, expected):
    path = _external(tmp_path, **case)
    with pytest.raises(ModelLoadError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        analyze(path)
    assert cli.main([path, "-o", str(tmp_path / "o.onnx")]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1, err


def test_a_saved_model_records_no_private_entries_and_relative_locations(tmp_path):
    src = _saved(tmp_path, location="all.bin")
    report_path = tmp_path / "r.json"
    assert cli.main([str(src), "-o", str(tmp_path / "o" / "m.onnx"), *FLAGS, "--report-json", str(report_path)]) == 0
    stored = onnx.load(str(tmp_path / "o" / "m.onnx"), load_external_data=False)
    locations = {e.value for t in stored.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"m.onnx.data"}
    assert json.loads(report_path.read_text())["after"]["params"] > 0
