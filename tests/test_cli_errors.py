"""Every error path of the CLI is one clear line and exit 2 (1 only for a true check failure), with
no traceback, nothing written and the input unchanged: broken models, plans, calibration files,
output paths and flags (see also tools/hostile_inputs.py, which tries a few hundred such cases)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hostile_inputs
import onnxprune.ir
from onnxprune import cli
from onnxprune.cli import parse_input_shape

CPU = ["--providers", "cpu"]


def mlp(batch=2, opset: int = 17, scalar_input: bool = False) -> onnx.ModelProto:
    """x [batch, 16] -> MatMul 32 -> Relu -> MatMul 4 (times a scalar input `s` if asked)."""
    return _model(hostile_inputs.mlp(batch, opset), scalar_input)


def _model(model: onnx.ModelProto, scalar_input: bool) -> onnx.ModelProto:
    if scalar_input:
        model.graph.node.append(helper.make_node("Mul", ["y", "s"], ["z"], name="scale"))
        model.graph.input.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, None))
        del model.graph.output[:]
        model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    return model


def _write(tmp_path: Path, name: str, content) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.SerializeToString())
    return path


def _files(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def _fails(args, capsys, tmp_path: Path, code: int = 2, *words: str) -> str:
    """Run the CLI; assert exit `code`, one line naming `words`, no traceback, no file written or changed."""
    before = _files(tmp_path)
    got = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert got == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err and "check failed" not in err, err
    for w in words:
        assert w in err, (w, err)
    assert _files(tmp_path) == before, "a failed run wrote or changed a file"
    return err


@pytest.fixture
def model_path(tmp_path) -> Path:
    return _write(tmp_path, "mlp.onnx", mlp())


# -- models --

def _tensor_edit(edit) -> onnx.ModelProto:
    model = mlp()
    edit(model.graph.initializer[0])
    return model


def _dims(t, dims):
    del t.dims[:]
    t.dims.extend(dims)


def _named(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    model.graph.node[1].name = name
    return model


def _opsets(model: onnx.ModelProto, imports) -> onnx.ModelProto:
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in imports)
    return model


def _unknown_op(model: onnx.ModelProto) -> onnx.ModelProto:
    model.graph.node[1].op_type = "FooBar"
    return model


def _external_missing() -> onnx.ModelProto:
    model = mlp()
    hostile_inputs._external(model, "weights.bin")
    return model


BAD_MODELS = {
    "empty": (b"", "holds no graph nodes"),
    "truncated": (mlp().SerializeToString()[:700], "cannot read"),
    "text_non_utf8": (b"\xff\xfe\xfa not a model \x80" * 20, "cannot read"),
    "non_utf8_node_name": (hostile_inputs.with_bad_utf8(_named(mlp(), "BADNAME_NODE"), "BADNAME_NODE"),
                           "not valid UTF-8 in model.graph.node[1].name"),
    "payload_short": (_tensor_edit(lambda t: setattr(t, "raw_data", t.raw_data[:-4])),
                      "initializer 'w1' (dims [16, 32], FLOAT) needs 2048 bytes of raw data, the file holds 2044"),
    "payload_missing": (_tensor_edit(lambda t: t.ClearField("raw_data")), "needs 512 values in float_data"),
    "dims_2e64": (_tensor_edit(lambda t: _dims(t, [2 ** 32, 2 ** 32])), "declares 18446744073709551616 elements"),
    "dims_negative": (_tensor_edit(lambda t: _dims(t, [-16, -32])), "negative dims"),
    "dtype_unknown": (_tensor_edit(lambda t: setattr(t, "data_type", 999)), "element type 999"),
    "external_missing": (_external_missing(), "weights.bin"),
    "opset_6": (hostile_inputs.old_cnn(6), "uses opset 6; onnxprune needs opset 9"),
    "opset_none": (_opsets(mlp(), []), "imports no default-domain (ai.onnx) opset"),
    "opset_custom_only": (_opsets(mlp(), [("com.example", 1)]), "imports no default-domain"),
    "opset_99": (_opsets(mlp(), [("", 99)]), "uses opset 99"),
    "checker_fails": (_unknown_op(mlp()), "is not a valid ONNX model (onnx.checker)"),
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_broken_model_is_exit_2_naming_the_problem(case, tmp_path, capsys):
    content, words = BAD_MODELS[case]
    path = _write(tmp_path, f"{case}.onnx", content)
    _fails([path, *CPU], capsys, tmp_path, 2, path.name, words)


def test_model_path_that_is_a_directory_or_missing(tmp_path, capsys):
    (tmp_path / "dir.onnx").mkdir()
    _fails([tmp_path / "dir.onnx"], capsys, tmp_path, 2, "is a directory")
    _fails([tmp_path / "nope.onnx"], capsys, tmp_path, 2, "does not exist")


def test_invalid_input_model_is_not_a_check_failure(tmp_path, capsys):
    """A model onnx.checker refuses (MatMul dims that do not chain) is the user's input: exit 2."""
    model = mlp()
    _dims(model.graph.initializer[1], [8, 4])
    model.graph.initializer[1].raw_data = np.ones((8, 4), np.float32).tobytes()
    path = _write(tmp_path, "bad.onnx", model)
    _fails([path, *CPU], capsys, tmp_path, 2, "onnx.checker", "mm2")


def test_input_model_onnx_runtime_cannot_run_is_exit_2(tmp_path, capsys):
    """onnx accepts an op of a declared custom domain; ONNX Runtime cannot load it: the input's fault."""
    model = mlp()
    model.graph.node[1].domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    path = _write(tmp_path, "custom.onnx", model)
    _fails([path, *CPU], capsys, tmp_path, 2, "the input model cannot be validated", "com.example")


@pytest.mark.parametrize("opset", [7, 8])
def test_opset_7_and_8_are_upgraded(opset, tmp_path, capsys, caplog):
    path = _write(tmp_path, "old.onnx", hostile_inputs.old_cnn(opset))
    out = tmp_path / "out.onnx"
    assert cli.main([str(path), "-o", str(out), "--round-to", "1", *CPU]) == 0, capsys.readouterr().err
    assert f"opset {opset} upgraded to opset 9" in caplog.text
    pruned = onnx.load(str(out))
    onnx.checker.check_model(pruned, full_check=True)
    assert [o.version for o in pruned.opset_import if o.domain == ""] == [9]
    assert pruned.graph.initializer[0].dims[0] < 8  # conv1 lost channels


def test_ir_version_3_light_model_prunes_to_a_valid_model(tmp_path, capsys):
    """The light models of the onnx package list their initializers as graph inputs (IR version 3)."""
    light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_squeezenet.onnx"
    if not light.exists():
        pytest.skip("onnx light models not installed")
    out = tmp_path / "sq.onnx"
    assert cli.main([str(light), "-o", str(out), "--no-validate"]) == 0, capsys.readouterr().err
    onnx.checker.check_model(str(out), full_check=True)


@pytest.mark.parametrize("batch,flag", [(2 ** 40, []), ("N", ["--input-shape", "x:1099511627776,16"])])
def test_input_sizes_are_checked_before_random_inputs_are_allocated(batch, flag, tmp_path, capsys):
    path = _write(tmp_path, "big.onnx", mlp(batch))
    _fails([path, *flag, *CPU], capsys, tmp_path, 2, "input 'x'", "random validation inputs are limited")


# -- plans --

def _good_plan(model_path: Path, tmp_path: Path, capsys) -> dict:
    plan = tmp_path / "plan.json"
    assert cli.main([str(model_path), "-o", str(tmp_path / "p.onnx"), "--no-validate", "--round-to", "1",
                     "--plan-out", str(plan)]) == 0
    capsys.readouterr()
    data = json.loads(plan.read_text())
    for p in (plan, tmp_path / "p.onnx"):
        p.unlink()
    return data


def test_bad_plans_are_exit_2(model_path, tmp_path, capsys):
    good = _good_plan(model_path, tmp_path, capsys)
    g0 = good["groups"][0]

    def changed(**fields):
        plan = json.loads(json.dumps(good))
        plan["groups"][0].update(fields)
        return json.dumps(plan).encode()

    cases = {
        "non_utf8": (b'{"version": 1, "groups": [], "meta": {"x": "\xff"}}', "not UTF-8"),
        "deep": (b"[" * 100_000 + b"]" * 100_000, "nests its JSON too deeply"),
        "not_json": (b"groups: 1", "not valid JSON"),
        "list": (b"[]", "expected a JSON object"),
        "groups_wrong_type": (b'{"groups": 5}', "'groups' must be a list"),
        "pruned_out_of_range": (changed(pruned=[g0["size"] + 3]), "'pruned' indices must lie in [0, size="),
        "pruned_strings": (changed(pruned=["a"]), "integer channel indices"),
        "id_infinite": (json.dumps(good).replace(f'"id": {g0["id"]}', '"id": 1e400', 1).encode(),
                        "'id' must be an integer"),
        "meta_list": (json.dumps({**good, "meta": [1]}).encode(), "'meta' must be an object"),
        "version": (json.dumps({**good, "version": 7}).encode(), "plan version 7"),
        "other_tensor": (changed(root={"tensor": "nope", "axis": 0}), "the model has root"),
        "all_channels": (changed(pruned=list(range(g0["size"]))), "removes every channel"),
    }
    for name, (content, words) in cases.items():
        plan = _write(tmp_path, f"{name}.json", content)
        _fails([model_path, "--plan-in", plan, "-o", tmp_path / "out.onnx", *CPU], capsys, tmp_path, 2, words)
    (tmp_path / "dir.json").mkdir()
    _fails([model_path, "--plan-in", tmp_path / "dir.json", "-o", tmp_path / "o.onnx"], capsys, tmp_path, 2,
           "is a directory")


# -- calibration files --

def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npz_member(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(name, data)
    return buf.getvalue()


def test_bad_calibration_files_are_exit_2(tmp_path, capsys):
    model = _write(tmp_path, "dyn.onnx", mlp(batch="N"))
    x = np.random.default_rng(0).standard_normal((24, 16)).astype(np.float32)
    npy = io.BytesIO()
    np.save(npy, x)
    nan = x.copy()
    nan[1, 1] = np.nan
    cases = {
        "npy": (npy.getvalue(), "is a single .npy array"),
        "corrupt_zip": (b"PK\x03\x04" + bytes(200), "cannot read calibration file"),
        "wrong_key": (_npz(input=x), "missing ['x'], unexpected ['input']"),
        "wrong_dtype": (_npz(x=x.astype(np.float64)), "expects dtype float32"),
        "wrong_shape": (_npz(x=x[:, :8]), "expects size 16 along axis 1"),
        "wrong_rank": (_npz(x=x[:, 0]), "has rank 2"),
        "nan": (_npz(x=nan), "NaN or infinite"),
        "header_2e40": (_npz_member("x.npy", hostile_inputs._npy((2 ** 20, 2 ** 20), x.tobytes())),
                        "declares shape [1048576, 1048576]"),
        "objects": (_npz_member("x.npy", hostile_inputs._npy((2,), b"", "|O")), "Python objects"),
    }
    for name, (content, words) in cases.items():
        calib = _write(tmp_path, f"{name}.npz", content)
        _fails([model, "--calib", calib, "-o", tmp_path / "out.onnx", *CPU], capsys, tmp_path, 2, words)


# -- output paths: checked before any work --

def test_output_path_errors_come_before_loading_the_model(tmp_path, capsys):
    """The model is broken too: the error names the output path, so it was found first."""
    broken = _write(tmp_path, "broken.onnx", b"not a model")
    (tmp_path / "adir").mkdir()
    afile = _write(tmp_path, "afile", b"x")
    for flag, path, words in (("-o", tmp_path / "adir", "is a directory"),
                              ("--plan-out", tmp_path / "adir", "is a directory"),
                              ("--report-json", tmp_path / "adir", "is a directory"),
                              ("-o", afile / "x.onnx", "is a file, not a folder"),
                              ("--plan-out", tmp_path / ("p" * 300 + ".json"), "bytes long"),
                              ("-o", "", "is empty"),
                              ("-o", broken, "is the input model"),
                              ("--report-json", broken, "is the input model")):
        _fails([broken, flag, path], capsys, tmp_path, 2, flag, words)
    _fails(["analyze", broken, "--json", tmp_path / "adir"], capsys, tmp_path, 2, "--json", "is a directory")


def test_file_names_that_are_not_utf8_work(tmp_path, capsys):
    folder = os.fsencode(str(tmp_path))
    model = Path(os.fsdecode(folder + b"/\xff\xfe.onnx"))
    model.write_bytes(mlp().SerializeToString())
    out = os.fsdecode(folder + b"/\xfe out.onnx")
    plan = os.fsdecode(folder + b"/\xfa.json")
    assert cli.main([str(model), "-o", out, "--plan-out", plan, *CPU]) == 0, capsys.readouterr().err
    onnx.checker.check_model(onnx.load(out))
    json.loads(Path(plan).read_text())


def test_outputs_must_not_share_a_path(model_path, tmp_path, capsys):
    out = tmp_path / "out.onnx"
    plan = _write(tmp_path, "plan.json", b"{}")
    _fails([model_path, "--plan-in", plan, "-o", out, "--plan-out", plan], capsys, tmp_path, 2,
           "--plan-out", "is the --plan-in plan")
    _fails([model_path, "-o", out, "--plan-out", out], capsys, tmp_path, 2, "is also the path of -o")
    _fails([model_path, "-o", out, "--plan-out", tmp_path / "a.json", "--report-json", tmp_path / "a.json"],
           capsys, tmp_path, 2, "is also the path of --plan-out")


def test_missing_output_folders_are_made(model_path, tmp_path, capsys):
    args = [model_path, "-o", tmp_path / "a" / "o.onnx", "--plan-out", tmp_path / "b" / "p.json",
            "--report-json", tmp_path / "c" / "d" / "r.json", *CPU]
    assert cli.main([str(a) for a in args]) == 0, capsys.readouterr().err
    json.loads((tmp_path / "b" / "p.json").read_text())
    json.loads((tmp_path / "c" / "d" / "r.json").read_text())
    onnx.checker.check_model(str(tmp_path / "a" / "o.onnx"))


def _readonly_folder(tmp_path: Path) -> Path:
    """A folder no new file can be made in (root ignores modes: a read-only tmpfs, or /sys)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    os.chmod(folder, 0o555)
    try:
        (folder / "probe").write_bytes(b"")
    except OSError:
        return folder
    (folder / "probe").unlink()
    for candidate in (Path("/sys"), Path("/proc/sys")):
        try:
            (candidate / "onnxprune-probe").write_bytes(b"")
        except OSError:
            return candidate
        (candidate / "onnxprune-probe").unlink()
    pytest.skip("no read-only folder available")


def test_read_only_folder_is_exit_2_before_work(model_path, tmp_path, capsys):
    folder = _readonly_folder(tmp_path)
    for flag in ("-o", "--plan-out", "--report-json"):
        args = [model_path, flag, folder / "x.out"] + (["-o", tmp_path / "o.onnx"] if flag != "-o" else [])
        _fails(args, capsys, tmp_path, 2, flag, "cannot write in")


@pytest.mark.parametrize("flag", ["-o", "--plan-out", "--report-json"])
def test_full_disk_is_exit_2_and_leaves_nothing(flag, model_path, tmp_path, capsys, monkeypatch):
    """A file size limit makes writes fail as on a full disk: for -o from the start, for the JSON
    files only once the model is written (which is then removed: all or nothing)."""
    out = tmp_path / "o.onnx"
    args = [model_path, "-o", out, *CPU] + ([flag, tmp_path / "x.json"] if flag != "-o" else [])
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    if flag == "-o":
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, old[1]))
    else:
        real_save = onnxprune.ir.save

        def save_then_fill_disk(*a, **k):
            real_save(*a, **k)
            resource.setrlimit(resource.RLIMIT_FSIZE, (10, old[1]))

        monkeypatch.setattr(onnxprune.ir, "save", save_then_fill_disk)
    try:
        _fails(args, capsys, tmp_path, 2, "cannot write", "File too large")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".onnxprune")]


# -- flags --

@pytest.mark.parametrize("flag,value,words", [
    ("--ratio", "nan", "--ratio"), ("--round-to", "0", "--round-to"), ("--max-ratio", "1", "--max-ratio"),
    ("--target-params", "2", "--target-params"), ("--seed", "-1", "--seed"), ("--providers", "tpu", "--providers"),
    ("--input-shape", "nope:1,16", "--input-shape names ['nope']"), ("--input-shape", "x:0", "positive integers"),
    ("--input-shape", "x:1,16,1", "has 3 dims"), ("--input-shape", "x:99999999999999999999", "are refused"),
    ("--input-shape", "x:3,16", "the model fixes it at [2, 16]"),
])
def test_bad_flag_values_are_exit_2(flag, value, words, model_path, tmp_path, capsys):
    _fails([model_path, flag, value, "-o", tmp_path / "o.onnx"], capsys, tmp_path, 2, words)


def test_input_shape_with_nothing_after_the_colon_is_a_scalar(tmp_path, capsys):
    assert parse_input_shape("s:") == ("s", ())
    assert parse_input_shape("a:b:1,2") == ("a:b", (1, 2))
    path = _write(tmp_path, "scalar.onnx", mlp(scalar_input=True))
    out = tmp_path / "o.onnx"
    assert cli.main([str(path), "--input-shape", "s:", "-o", str(out), "--round-to", "1", *CPU]) == 0, \
        capsys.readouterr().err
    pruned = onnx.load(str(out))
    s = next(i for i in pruned.graph.input if i.name == "s")
    assert s.type.tensor_type.HasField("shape") is False or len(s.type.tensor_type.shape.dim) == 0
    _fails([path, "--input-shape", "x:", "-o", tmp_path / "p.onnx"], capsys, tmp_path, 2, "has 0 dims")


def _unknown_size_model(batch) -> onnx.ModelProto:
    """h = MatMul(x, w) + ConstantOfShape(s): the size of the added state is unknown whatever x's shape."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), "w")
    w2 = numpy_helper.from_array(rng.standard_normal((32, 4)).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("ConstantOfShape", ["s"], ["zeros"], name="cos",
                              value=numpy_helper.from_array(np.zeros(1, np.float32))),
             helper.make_node("Add", ["h", "zeros"], ["a"], name="add"),
             helper.make_node("MatMul", ["a", "w2"], ["y"], name="mm2")]
    graph = helper.make_graph(nodes, "state", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 16]),
                                               helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_dynamic_hint_only_when_an_input_is_still_dynamic(tmp_path, capsys):
    path = _write(tmp_path, "state.onnx", _unknown_size_model("N"))
    assert cli.main(["analyze", str(path)]) == 0
    assert "fix it with --input-shape" in capsys.readouterr().out
    assert cli.main(["analyze", str(path), "--input-shape", "x:2,16"]) == 0
    out = capsys.readouterr().out
    assert "is unknown" in out and "--input-shape" not in out, out


# -- a fixed sample of the hostile-input runner --

SAMPLE = ("model/non_utf8_tensor_name", "model/dims_overflow_int64", "model/constant_payload_short",
          "model/external_outside", "model/input_dim_2e62", "calib/header_2e62", "calib/member_txt",
          "flag/--input-shape on static", "flag/--seed='-1'")


def test_sample_of_the_hostile_runner(tmp_path):
    cases = {c.name: c for c in hostile_inputs.build_cases(tmp_path / "h", ("model", "calib", "flag"))}
    try:
        for name in SAMPLE:
            outcome = hostile_inputs.run_case(cases[name], tmp_path / "h")
            assert not outcome.problems and outcome.code == 2, (name, outcome.problems, outcome.err)
    finally:
        hostile_inputs.unmount_all()
