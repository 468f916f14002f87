"""Hostile-input runner: a few hundred broken models, plans, calibration files, paths and flags.

Every case runs the CLI (in process, or as a subprocess where it needs another user or a file
size limit) in a fresh temporary folder. A case fails when its stderr shows `internal error` or a
traceback, when it exits with anything but 0, 1 or 2, when it writes a broken output (an .onnx
that does not load and check, a JSON file that does not parse), or when a failed run leaves a file
behind or changes an existing one.

    python tools/hostile_inputs.py [-k SUBSTRING] [-v]

Prints the counts per exit code and every failing case; exits 1 when any case fails.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import build_example  # noqa: E402

NOBODY = 65534
SECTIONS = ("model", "light", "plan", "calib", "path", "flag")
CPU = ["--providers", "cpu"]


@dataclass
class Case:
    """One CLI run: its arguments, and how it must be run."""

    name: str
    argv: list[str]
    fsize: int | None = None  # RLIMIT_FSIZE in bytes: a full disk
    as_nobody: bool = False  # run as an unprivileged user (read-only folders mean something)
    setup: Callable[[], None] | None = None  # runs just before the case (after the snapshot)


@dataclass
class Outcome:
    case: Case
    code: int
    err: str
    problems: list[str] = field(default_factory=list)


# -- models built in code --

def cnn() -> onnx.ModelProto:
    return build_example.build()


def mlp(batch: int | str = "N", opset: int = 17) -> onnx.ModelProto:
    """x [batch, 16] -> MatMul 32 -> Relu -> MatMul 4."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((32, 4)).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset >= 9 else 3
    if opset < 9:  # IR version 3 lists every initializer as a graph input
        model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in graph.initializer)
    return model


def old_cnn(opset: int) -> onnx.ModelProto:
    """Conv-BatchNorm-Relu-Conv in an old opset (BatchNormalization changed in 7 and 9)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in
             (("w1", (8, 3, 3, 3)), ("b1", (8,)), ("s", (8,)), ("bb", (8,)), ("m", (8,)), ("w2", (4, 8, 1, 1)))]
    inits.append(numpy_helper.from_array(np.abs(rng.standard_normal(8)).astype(np.float32) + 0.5, "v"))
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c1", "s", "bb", "m", "v"], ["n1"], name="bn"),
             helper.make_node("Relu", ["n1"], ["r1"], name="relu"),
             helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2")]
    graph = helper.make_graph(nodes, "old", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 3
    return model


def with_bad_utf8(model: onnx.ModelProto, marker: str) -> bytes:
    """The serialised model with every occurrence of `marker` replaced by invalid UTF-8 of the same length."""
    data = model.SerializeToString()
    m = marker.encode()
    assert m in data, marker
    return data.replace(m, b"\xff\xfe" + m[2:])


def _tensor_edit(edit: Callable[[onnx.TensorProto], None], name: str = "w1") -> onnx.ModelProto:
    model = mlp()
    for t in model.graph.initializer:
        if t.name == name:
            edit(t)
    return model


def _set_dims(t: onnx.TensorProto, dims: list[int]) -> None:
    del t.dims[:]
    t.dims.extend(dims)


def _graph_edit(edit: Callable[[onnx.ModelProto], None], base: Callable[[], onnx.ModelProto] = mlp) -> onnx.ModelProto:
    model = base()
    edit(model)
    return model


def _input_dims(dims: list) -> Callable[[onnx.ModelProto], None]:
    def edit(m: onnx.ModelProto) -> None:
        shape = m.graph.input[0].type.tensor_type.shape
        del shape.dim[:]
        for d in dims:
            if isinstance(d, str):
                shape.dim.add().dim_param = d
            else:
                shape.dim.add().dim_value = d
    return edit


def _opsets(imports: list[tuple[str, int]]) -> Callable[[onnx.ModelProto], None]:
    def edit(m: onnx.ModelProto) -> None:
        del m.opset_import[:]
        m.opset_import.extend(helper.make_opsetid(d, v) for d, v in imports)
    return edit


def _add_node(n: onnx.NodeProto, output: str | None = None) -> Callable[[onnx.ModelProto], None]:
    def edit(m: onnx.ModelProto) -> None:
        m.graph.node.append(n)
        if output:
            m.graph.output.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, None))
    return edit


def _external(m: onnx.ModelProto, location: str, offset: int | None = None, length: int | None = None) -> None:
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    del t.external_data[:]
    for k, v in (("location", location), ("offset", offset), ("length", length)):
        if v is not None:
            entry = t.external_data.add()
            entry.key, entry.value = k, str(v)


def bad_models() -> dict[str, bytes | onnx.ModelProto | None]:
    """Name -> content of a broken (or merely unusual) model file; None: a directory."""
    good = cnn().SerializeToString()
    rng = np.random.default_rng(7)
    out: dict[str, bytes | onnx.ModelProto | None] = {
        "directory": None, "empty": b"", "text": b"this is not an onnx model\n",
        "non_utf8_text": b"\xff\xfe\xfa garbage \x80\x81" * 50, "json": b'{"graph": {"node": []}}',
        "zeros": bytes(4096), "npz_as_model": b"PK\x03\x04" + bytes(100),
        "tensor_proto": numpy_helper.from_array(np.ones(3, np.float32)).SerializeToString(),
        "no_graph": onnx.ModelProto(ir_version=8).SerializeToString()}
    for frac in (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999):
        out[f"truncated_{frac}"] = good[: int(len(good) * frac)]
    for i in range(12):
        data = bytearray(good)
        for pos in rng.integers(0, len(data), size=1 + i % 4):
            data[pos] ^= 1 << int(rng.integers(0, 8))
        out[f"bitflip_{i}"] = bytes(data)
    for i in range(4):
        data = bytearray(good)
        start = int(rng.integers(0, len(data) - 64))
        data[start:start + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        out[f"random_block_{i}"] = bytes(data)
        out[f"random_bytes_{i}"] = rng.integers(0, 256, 500 + 3000 * i, dtype=np.uint8).tobytes()
    # non-UTF-8 text inside the protobuf
    for what, edit in (("node_name", lambda m: setattr(m.graph.node[1], "name", "BADNAME_NODE")),
                       ("doc_string", lambda m: setattr(m.graph, "doc_string", "BADDOC_STRING")),
                       ("producer", lambda m: setattr(m, "producer_name", "BADPRODUCER")),
                       ("graph_name", lambda m: setattr(m.graph, "name", "BADGRAPHNAME"))):
        m = mlp()
        edit(m)
        marker = {"node_name": "BADNAME_NODE", "doc_string": "BADDOC_STRING", "producer": "BADPRODUCER",
                  "graph_name": "BADGRAPHNAME"}[what]
        out[f"non_utf8_{what}"] = with_bad_utf8(m, marker)
    m = mlp()
    for n in m.graph.node:
        n.input[:] = ["BADTENSOR_R" if i == "r" else i for i in n.input]
        n.output[:] = ["BADTENSOR_R" if o == "r" else o for o in n.output]
    out["non_utf8_tensor_name"] = with_bad_utf8(m, "BADTENSOR_R")
    m = mlp()
    m.graph.initializer[0].name = "BADINIT_W1"
    m.graph.node[0].input[1] = "BADINIT_W1"
    out["non_utf8_initializer_name"] = with_bad_utf8(m, "BADINIT_W1")
    m = mlp()
    m.graph.node[1].op_type = "BADO"
    out["non_utf8_op_type"] = with_bad_utf8(m, "BADO")
    m = mlp()
    m.graph.input[0].name = "BADINPUT_X"
    m.graph.node[0].input[0] = "BADINPUT_X"
    out["non_utf8_input_name"] = with_bad_utf8(m, "BADINPUT_X")
    # weights whose payload does not match their dims
    out.update({
        "raw_short": _tensor_edit(lambda t: setattr(t, "raw_data", t.raw_data[:-4])),
        "raw_long": _tensor_edit(lambda t: setattr(t, "raw_data", t.raw_data + bytes(8))),
        "raw_odd_length": _tensor_edit(lambda t: setattr(t, "raw_data", t.raw_data[:-1])),
        "raw_empty": _tensor_edit(lambda t: t.ClearField("raw_data")),
        "dims_bigger": _tensor_edit(lambda t: _set_dims(t, [16, 64])),
        "dims_2e64": _tensor_edit(lambda t: _set_dims(t, [2 ** 32, 2 ** 32])),
        "dims_2e62": _tensor_edit(lambda t: _set_dims(t, [2 ** 62])),
        "dims_overflow_int64": _tensor_edit(lambda t: _set_dims(t, [2 ** 40, 2 ** 40, 16])),
        "dims_negative": _tensor_edit(lambda t: _set_dims(t, [-16, -32])),
        "dims_zero": _tensor_edit(lambda t: _set_dims(t, [0, 32])),
        "float_data_short": _tensor_edit(lambda t: (t.ClearField("raw_data"), t.float_data.extend([1.0] * 10))),
        "float_and_raw": _tensor_edit(lambda t: t.float_data.extend([1.0] * 512)),
        "dtype_undefined": _tensor_edit(lambda t: setattr(t, "data_type", 0)),
        "dtype_999": _tensor_edit(lambda t: setattr(t, "data_type", 999)),
        "dtype_int64_raw": _tensor_edit(lambda t: setattr(t, "data_type", TensorProto.INT64)),
        "dtype_string": _tensor_edit(lambda t: (setattr(t, "data_type", TensorProto.STRING), t.ClearField("raw_data"),
                                                t.string_data.extend([b"a"] * 512))),
        "int64_data_for_float": _tensor_edit(lambda t: (t.ClearField("raw_data"), t.int64_data.extend([1] * 512))),
        "bias_shape_wrong": _tensor_edit(lambda t: (_set_dims(t, [32, 16]),)),
    })
    # a Constant node whose tensor does not match its dims
    const = helper.make_node("Constant", [], ["k"], name="const",
                             value=numpy_helper.from_array(np.ones((4,), np.float32)))
    const.attribute[0].t.raw_data = bytes(8)
    add_k = helper.make_node("Add", ["y", "k"], ["z"], name="addk")
    z_info = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    out["constant_payload_short"] = _graph_edit(lambda m: (m.graph.node.insert(0, const), m.graph.node.append(add_k),
                                                           m.graph.output.append(z_info)))
    # external data
    out.update({
        "external_missing": _graph_edit(lambda m: _external(m, "weights.bin")),
        "external_outside": _graph_edit(lambda m: _external(m, "../../../etc/passwd")),
        "external_absolute": _graph_edit(lambda m: _external(m, "/etc/passwd")),
        "external_self_offset": _graph_edit(lambda m: _external(m, "self.onnx", offset=10 ** 9, length=2048)),
        "external_no_location": _graph_edit(lambda m: _external(m, "")),
    })
    # opsets and versions
    out.update({
        "opset_1": mlp(opset=1), "opset_6": old_cnn(6), "opset_7": old_cnn(7), "opset_8": old_cnn(8),
        "opset_7_mlp": mlp(opset=7), "opset_8_mlp": mlp(opset=8),
        "opset_none": _graph_edit(_opsets([])),
        "opset_only_custom": _graph_edit(_opsets([("com.example", 1)])),
        "opset_99": _graph_edit(_opsets([("", 99)])),
        "opset_twice": _graph_edit(_opsets([("", 17), ("", 13)])),
        "opset_negative": _graph_edit(_opsets([("", -3)])),
        "ir_version_99": _graph_edit(lambda m: setattr(m, "ir_version", 99)),
        "ir_version_0": _graph_edit(lambda m: setattr(m, "ir_version", 0)),
    })
    # graphs onnx.checker refuses
    out.update({
        "undefined_input": _graph_edit(lambda m: m.graph.node[1].input.__setitem__(0, "nowhere")),
        "duplicate_output": _graph_edit(lambda m: m.graph.node[1].output.__setitem__(0, "h")),
        "cycle": _graph_edit(lambda m: m.graph.node[0].input.__setitem__(0, "y")),
        "unknown_op": _graph_edit(lambda m: setattr(m.graph.node[1], "op_type", "FooBar")),
        "unknown_domain": _graph_edit(lambda m: setattr(m.graph.node[1], "domain", "com.nowhere")),
        "bad_attribute": _graph_edit(lambda m: m.graph.node[1].attribute.append(helper.make_attribute("alpha", 1.0))),
        "matmul_shape_mismatch": _tensor_edit(lambda t: (_set_dims(t, [8, 64])), "w1"),
        "output_not_produced": _graph_edit(lambda m: m.graph.output.append(
            helper.make_tensor_value_info("ghost", TensorProto.FLOAT, [1]))),
        "no_outputs": _graph_edit(lambda m: m.graph.ClearField("output")),
        "no_inputs": _graph_edit(lambda m: m.graph.ClearField("input")),
        "input_no_type": _graph_edit(lambda m: m.graph.input[0].ClearField("type")),
        "input_elem_undefined": _graph_edit(lambda m: setattr(m.graph.input[0].type.tensor_type, "elem_type", 0)),
        "input_string": _graph_edit(lambda m: setattr(m.graph.input[0].type.tensor_type, "elem_type",
                                                      TensorProto.STRING)),
        "input_is_also_output": _graph_edit(lambda m: m.graph.output.append(m.graph.input[0])),
        "duplicate_node_names": _graph_edit(lambda m: [setattr(n, "name", "same") for n in m.graph.node]),
        "empty_names": _graph_edit(lambda m: [setattr(n, "name", "") for n in m.graph.node]),
        "if_subgraph": _graph_edit(_add_node(helper.make_node(
            "If", ["cond"], ["z"], name="if", then_branch=helper.make_graph([], "t", [], []),
            else_branch=helper.make_graph([], "e", [], [])), "z")),
    })
    # models onnx accepts and ONNX Runtime cannot run, or runs out of memory on
    huge = helper.make_node("ConstantOfShape", ["shape"], ["big"], name="huge",
                            value=numpy_helper.from_array(np.zeros(1, np.float32)))
    shape = numpy_helper.from_array(np.array([2 ** 20, 2 ** 20, 16], np.int64), "shape")
    out.update({
        "custom_domain_op": _graph_edit(lambda m: (setattr(m.graph.node[1], "domain", "com.example"),
                                                   m.opset_import.append(helper.make_opsetid("com.example", 1)))),
        "constant_of_shape_2e44": _graph_edit(lambda m: (m.graph.initializer.append(shape),
                                                         m.graph.node.insert(0, huge),
                                                         m.graph.output.append(helper.make_tensor_value_info(
                                                             "big", TensorProto.FLOAT, None)))),
        "sparse_initializer": _graph_edit(lambda m: m.graph.sparse_initializer.append(helper.make_sparse_tensor(
            numpy_helper.from_array(np.ones(2, np.float32), "sp"), numpy_helper.from_array(np.array([0, 5], np.int64)),
            [16]))),
        "local_function": _graph_edit(lambda m: m.functions.append(helper.make_function(
            "com.local", "F", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])],
            [helper.make_opsetid("", 17)]))),
    })
    # dims declared by the model's inputs
    out.update({
        "input_dim_2e40": _graph_edit(_input_dims([2 ** 40, 16])),
        "input_dim_2e20": _graph_edit(_input_dims([2 ** 20, 16])),
        "input_dim_2e62": _graph_edit(_input_dims([2 ** 62, 16])),
        "input_dim_zero": _graph_edit(_input_dims([0, 16])),
        "input_dim_negative": _graph_edit(_input_dims([-1, 16])),
        "input_dims_all_dynamic": _graph_edit(_input_dims(["a", "b"])),
        "input_rank_wrong": _graph_edit(_input_dims([1, 16, 1])),
        "input_scalar": _graph_edit(_input_dims([])),
        "input_feature_2e40": _graph_edit(_input_dims([1, 2 ** 40])),
        "cnn_input_2e40": _graph_edit(_input_dims([1, 3, 2 ** 20, 2 ** 20]), cnn),
    })
    return out


# -- plans --

def plan_files(good: dict) -> dict[str, bytes | None]:
    """Name -> content of a broken plan for the tiny CNN (`good`: a valid plan as JSON)."""
    g0 = good["groups"][0]

    def changed(**fields) -> bytes:
        plan = json.loads(json.dumps(good))
        plan["groups"][0].update(fields)
        return json.dumps(plan).encode()

    def top(value) -> bytes:
        plan = json.loads(json.dumps(good))
        plan.update(value)
        return json.dumps(plan).encode()

    size = g0["size"]
    return {
        "directory": None, "empty": b"", "not_json": b"groups: [1, 2]", "truncated": json.dumps(good).encode()[:-20],
        "non_utf8": b'{"version": 1, "groups": [], "meta": {"x": "\xff\xfe"}}',
        "latin1": '{"version": 1, "groups": [], "meta": {"x": "caf\xe9"}}'.encode("latin-1"),
        "utf16": json.dumps(good).encode("utf-16"), "utf8_bom": b"\xef\xbb\xbf" + json.dumps(good).encode(),
        "deep_lists": b"[" * 100_000 + b"]" * 100_000,
        "deep_dicts": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        "deep_in_meta": b'{"version": 1, "groups": [], "meta": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        "huge_whitespace": b" " * 30_000_000 + b"{}",
        "huge_pruned": changed(pruned=list(range(2_000_000))),
        "huge_duplicates": changed(pruned=[0] * 2_000_000),
        "top_list": b"[]", "top_string": b'"plan"', "top_null": b"null", "top_number": b"42",
        "no_groups": b'{"version": 1}', "groups_not_list": top({"groups": 5}), "groups_dict": top({"groups": {"a": 1}}),
        "group_is_list": top({"groups": [[1, 2]]}), "group_is_string": top({"groups": ["x"]}),
        "id_string": changed(id="zero"), "id_float": changed(id=1.5), "id_huge": changed(id=10 ** 30),
        "id_negative": changed(id=-1), "id_unknown": changed(id=9999), "id_null": changed(id=None),
        "id_inf": json.dumps(good).replace(f'"id": {g0["id"]}', '"id": Infinity', 1).encode(),
        "id_nan": json.dumps(good).replace(f'"id": {g0["id"]}', '"id": NaN', 1).encode(),
        "id_1e400": json.dumps(good).replace(f'"id": {g0["id"]}', '"id": 1e400', 1).encode(),
        "root_missing": changed(root=None), "root_string": changed(root="conv1.weight"),
        "root_tensor_unknown": changed(root={"tensor": "nope", "axis": 0}),
        "root_axis_huge": changed(root={"tensor": g0["root"]["tensor"], "axis": 99}),
        "root_axis_negative": changed(root={"tensor": g0["root"]["tensor"], "axis": -7}),
        "size_wrong": changed(size=size + 3), "size_zero": changed(size=0), "size_negative": changed(size=-5),
        "size_string": changed(size="big"),
        "pruned_out_of_range": changed(pruned=[size + 10]), "pruned_negative": changed(pruned=[-1]),
        "pruned_all": changed(pruned=list(range(size))), "pruned_duplicates": changed(pruned=[0, 0, 1, 1]),
        "pruned_not_list": changed(pruned=3), "pruned_strings": changed(pruned=["a"]),
        "pruned_floats": changed(pruned=[0.5, 1.7]), "pruned_huge_int": changed(pruned=[10 ** 40]),
        "pruned_bools": changed(pruned=[True, False]), "pruned_nested": changed(pruned=[[0, 1]]),
        "pruned_empty": changed(pruned=[]), "exact_string": changed(exact="no"),
        "version_99": top({"version": 99}), "version_string": top({"version": "one"}),
        "meta_list": top({"meta": [1, 2]}), "meta_string": top({"meta": "x"}),
        "frozen_not_list": top({"frozen": 7}), "frozen_bad_items": top({"frozen": [1, 2]}),
        "duplicate_group": top({"groups": [g0, g0]}),
        "other_model": json.dumps({"version": 1, "groups": [{"id": 0, "root": {"tensor": "w1", "axis": 1},
                                                             "exact": True, "size": 32, "pruned": [0, 1]}]}).encode(),
    }


# -- calibration files --

def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npz_raw(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _npy(header_shape: tuple, payload: bytes = b"", dtype: str = "<f4") -> bytes:
    """An .npy member whose header declares `header_shape`, followed by `payload`."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": header_shape})
    return buf.getvalue() + payload


def calib_files() -> dict[str, bytes | None]:
    """Name -> content of a broken calibration file for the MLP (input 'x' [N, 16] float32)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 16)).astype(np.float32)
    npy = io.BytesIO()
    np.save(npy, x)
    good = _npz({"x": x})
    nan = x.copy()
    nan[3, 2] = np.nan
    inf = x.copy()
    inf[0, 0] = np.inf
    return {
        "directory": None, "empty": b"", "text": b"x,1,2,3\n", "npy": npy.getvalue(),
        "corrupt_zip": b"PK\x03\x04" + rng.integers(0, 256, 300, dtype=np.uint8).tobytes(),
        "truncated": good[: len(good) // 2], "truncated_end": good[:-10],
        "pickle": b"\x80\x04\x95" + bytes(40),
        "wrong_key": _npz({"input": x}), "extra_key": _npz({"x": x, "y": x}), "no_arrays": _npz({}),
        "float64": _npz({"x": x.astype(np.float64)}), "int32": _npz({"x": x.astype(np.int32)}),
        "bool": _npz({"x": x > 0}), "complex": _npz({"x": x.astype(np.complex64)}),
        "big_endian": _npz({"x": x.astype(">f4")}),
        "object": _npz_raw({"x.npy": _npy((2,), b"", "|O")}),
        "structured": _npz({"x": np.zeros(40, dtype=[("a", "<f4"), ("b", "<f4")])}),
        "strings": _npz({"x": np.array(["a"] * 40)}),
        "rank_1": _npz({"x": x[:, 0]}), "rank_3": _npz({"x": x[:, :, None]}), "scalar": _npz({"x": np.float32(1)}),
        "axis1_wrong": _npz({"x": x[:, :8]}), "zero_samples": _npz({"x": x[:0]}),
        "zero_features": _npz({"x": np.zeros((40, 0), np.float32)}),
        "one_sample": _npz({"x": x[:1]}), "nan": _npz({"x": nan}), "inf": _npz({"x": inf}),
        "fortran": _npz({"x": np.asfortranarray(x)}),
        "header_2e40": _npz_raw({"x.npy": _npy((2 ** 20, 2 ** 20), x.tobytes())}),
        "header_2e62": _npz_raw({"x.npy": _npy((2 ** 31, 2 ** 31), x.tobytes())}),
        "header_more_than_payload": _npz_raw({"x.npy": _npy((400, 16), x.tobytes())}),
        "header_bad": _npz_raw({"x.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': 'zz'}\n" + x.tobytes()}),
        "member_not_npy": _npz_raw({"x.npy": b"hello world"}),
        "member_txt": _npz_raw({"x.txt": b"hello"}),
        "zip_bomb_name": _npz_raw({"../../x.npy": npy.getvalue()}),
    }


# -- running --

def _snapshot(root: Path) -> dict[str, tuple[int, str]]:
    files = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            try:
                st = os.stat(p)
                files[p] = (st.st_size, st.st_mtime_ns)
            except OSError:
                pass
    return files


def _run_in_process(case: Case) -> tuple[int, str]:
    from onnxprune import cli

    logging.root.handlers.clear()
    err, out = io.StringIO(), io.StringIO()
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        if case.fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (case.fsize, old[1]))
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = cli.main(case.argv)
            except SystemExit as exc:  # argparse --help / --version
                code = exc.code if isinstance(exc.code, int) else 2
            except BaseException as exc:  # noqa: BLE001 - report anything that escapes main
                import traceback
                traceback.print_exc()
                code = -1
                if isinstance(exc, KeyboardInterrupt):
                    raise
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        logging.root.handlers.clear()
    return code, err.getvalue()


def _run_subprocess(case: Case) -> tuple[int, str]:
    def limits() -> None:
        if case.fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (case.fsize, case.fsize))
        if case.as_nobody and os.geteuid() == 0:
            os.setgid(NOBODY)
            os.setuid(NOBODY)

    proc = subprocess.run([sys.executable, "-m", "onnxprune", *case.argv], capture_output=True, text=True,
                          preexec_fn=limits, cwd=str(ROOT), timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "HOME": "/tmp"})
    return proc.returncode, proc.stderr


def _check_output(path: str) -> str | None:
    """Why the file at `path`, written by a successful run, is broken (None: it is fine)."""
    try:
        if path.endswith(".onnx"):
            onnx.checker.check_model(onnx.load(path))
        elif path.endswith(".json"):
            with open(path) as f:
                json.load(f)
    except Exception as exc:  # noqa: BLE001
        return f"broken output {path}: {type(exc).__name__}: {str(exc)[:200]}"
    return None


def run_case(case: Case, root: Path) -> Outcome:
    """Run one case; report what is wrong with its outcome."""
    before = _snapshot(root)
    if case.setup:
        case.setup()
    mid = _snapshot(root)
    code, err = (_run_subprocess if case.as_nobody else _run_in_process)(case)
    after = _snapshot(root)
    out = Outcome(case, code, err)
    if "internal error" in err or "Traceback" in err:
        out.problems.append("internal error / traceback")
    if code not in (0, 1, 2):
        out.problems.append(f"exit code {code}")
    if code != 0 and err.strip() and len([ln for ln in err.strip().splitlines() if "error" in ln]) > 1:
        out.problems.append("more than one error line")
    if code != 0 and not err.strip():
        out.problems.append("failed without a message")
    new = sorted(set(after) - set(mid))
    changed = sorted(p for p in mid if p in after and after[p] != mid[p])
    gone = sorted(set(mid) - set(after))
    if code == 0:
        out.problems += [p for p in (_check_output(f) for f in new + changed) if p]
    else:
        out.problems += [f"failed run left {p}" for p in new] + [f"failed run changed {p}" for p in changed]
    out.problems += [f"removed {p}" for p in gone]
    del before
    return out


# -- the cases --

def build_cases(root: Path, sections: tuple[str, ...] = SECTIONS) -> list[Case]:
    """Write the hostile files of `sections` under `root` and return the cases that use them."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    src = root / "in"
    src.mkdir()
    cnn_path, mlp_path = src / "cnn.onnx", src / "mlp.onnx"
    onnx.save(cnn(), str(cnn_path))
    onnx.save(mlp(), str(mlp_path))
    out_dir = root / "out"
    out_dir.mkdir()
    counter = iter(range(10 ** 6))

    def out(suffix: str = ".onnx") -> str:
        return str(out_dir / f"o{next(counter)}{suffix}")

    cases: list[Case] = []
    add = cases.append
    if "model" in sections:
        _model_cases(add, root, out)
    if "light" in sections:
        _light_cases(add, out)
    good_plan = root / "plans" / "good.json"
    if "plan" in sections:
        _plan_cases(add, root, cnn_path, out)
    if "calib" in sections:
        _calib_cases(add, root, cnn_path, mlp_path, out)
    if "path" in sections:
        _path_cases(add, root, cnn_path, mlp_path, good_plan, out)
    if "flag" in sections:
        _flag_cases(add, cnn_path, mlp_path, out)
    return cases


def _model_cases(add, root: Path, out) -> None:
    # models
    mdir = root / "models"
    mdir.mkdir()
    for name, content in bad_models().items():
        path = mdir / f"{name}.onnx"
        if content is None:
            path.mkdir()
        else:
            path.write_bytes(content if isinstance(content, bytes) else content.SerializeToString())
        shape = ["--input-shape", "x:2,16"] if name.startswith(("raw_", "dims_", "float", "dtype", "int64", "bias",
                                                                 "non_utf8", "external", "constant", "custom",
                                                                 "sparse", "local")) else []
        add(Case(f"model/{name}", [str(path), "-o", out(), *CPU, *shape]))
        if name in ("opset_7", "opset_8", "opset_none", "dims_2e64", "raw_short", "input_dim_2e40",
                    "non_utf8_node_name"):
            add(Case(f"model/{name}/analyze", ["analyze", str(path)]))
            add(Case(f"model/{name}/verify", ["verify", str(path)]))
    add(Case("model/missing", [str(mdir / "nope.onnx"), "-o", out()]))
    odd = os.fsdecode(os.fsencode(str(mdir)) + b"/\xff\xfe model.onnx")  # a file name that is not UTF-8
    Path(odd).write_bytes(mlp(2).SerializeToString())
    add(Case("model/non_utf8_file_name", [odd, "-o", os.fsdecode(os.fsencode(out()) + b"\xfe.onnx"), *CPU,
                                          "--plan-out", os.fsdecode(os.fsencode(out(".json")) + b"\xfa.json"),
                                          "--report-json", os.fsdecode(os.fsencode(out(".json")) + b"\xfb.json")]))
    add(Case("model/non_utf8_file_name/default_output", [odd, *CPU]))
    add(Case("model/empty_name", ["", "-o", out()]))
    add(Case("model/dev_null", ["/dev/null", "-o", out()]))
    add(Case("model/dev_zero_as_model", ["/proc/self/status", "-o", out()]))
    (mdir / "weights.bin").write_bytes(bytes(100))
    m = mlp()
    _external(m, "weights.bin", offset=0, length=100)
    onnx.save(m, str(mdir / "external_short.onnx"))
    add(Case("model/external_short", [str(mdir / "external_short.onnx"), "-o", out(), *CPU]))
    m = mlp()
    _external(m, "weights.bin", offset=50, length=2048)
    onnx.save(m, str(mdir / "external_past_end.onnx"))
    add(Case("model/external_past_end", [str(mdir / "external_past_end.onnx"), "-o", out(), *CPU]))
    (mdir / "wdir").mkdir()
    m = mlp()
    _external(m, "wdir")
    onnx.save(m, str(mdir / "external_dir.onnx"))
    add(Case("model/external_is_directory", [str(mdir / "external_dir.onnx"), "-o", out(), *CPU]))
    # the light models, upgraded or not


def _plan_cases(add, root: Path, cnn_path: Path, out) -> None:
    # plans
    pdir = root / "plans"
    pdir.mkdir()
    good_plan = pdir / "good.json"
    from onnxprune import cli as _cli
    logging.root.handlers.clear()
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        _cli.main([str(cnn_path), "-o", str(root / "good.onnx"), "--no-validate", "--plan-out", str(good_plan)])
    logging.root.handlers.clear()
    good = json.loads(good_plan.read_text())
    for name, content in plan_files(good).items():
        path = pdir / f"{name}.json"
        if content is None:
            path.mkdir()
        else:
            path.write_bytes(content)
        add(Case(f"plan/{name}", [str(cnn_path), "--plan-in", str(path), "-o", out(), *CPU]))
        if name in ("deep_lists", "non_utf8", "top_list", "pruned_all"):
            add(Case(f"plan/{name}/verify", ["verify", str(cnn_path), "--plan-in", str(path)]))
    add(Case("plan/missing", [str(cnn_path), "--plan-in", str(pdir / "nope.json"), "-o", out()]))
    add(Case("plan/is_model", [str(cnn_path), "--plan-in", str(cnn_path), "-o", out()]))
    add(Case("plan/with_ratio", [str(cnn_path), "--plan-in", str(good_plan), "--ratio", "0.5", "-o", out()]))
    add(Case("plan/good", [str(cnn_path), "--plan-in", str(good_plan), "-o", out(), *CPU]))


def _calib_cases(add, root: Path, cnn_path: Path, mlp_path: Path, out) -> None:
    # calibration files
    cdir = root / "calib"
    cdir.mkdir()
    for name, content in calib_files().items():
        path = cdir / f"{name}.npz"
        if content is None:
            path.mkdir()
        else:
            path.write_bytes(content)
        add(Case(f"calib/{name}", [str(mlp_path), "--calib", str(path), "-o", out(), *CPU, "--round-to", "1"]))
        if name in ("npy", "header_2e40", "wrong_key", "nan"):
            add(Case(f"calib/{name}/verify", ["verify", str(mlp_path), "--calib", str(path), "--importance", "act"]))
    add(Case("calib/missing", [str(mlp_path), "--calib", str(cdir / "nope.npz"), "-o", out()]))
    add(Case("calib/cnn_wrong_model", [str(cnn_path), "--calib", str(cdir / "float64.npz"), "-o", out(), *CPU]))
    add(Case("calib/model_as_calib", [str(mlp_path), "--calib", str(mlp_path), "-o", out()]))


def _light_cases(add, out) -> None:
    light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    for i, path in enumerate(sorted(light.glob("*.onnx"))):
        add(Case(f"light/{path.stem}", [str(path), "-o", out(), *(CPU if i == 0 else ["--no-validate"])]))


def _path_cases(add, root: Path, cnn_path: Path, mlp_path: Path, plan: Path, out) -> None:
    long_name = "x" * 300 + ".onnx"
    ro = root / "readonly"
    make_readonly(ro)
    fifo = root / "a_fifo"  # not a regular file (a device such as /dev/full would be at risk from a bug)
    os.mkfifo(fifo)
    afile = root / "a_file.txt"
    afile.write_text("not a folder")
    odir = root / "an_output_dir"
    odir.mkdir()
    m = str(cnn_path)
    base = [m, *CPU]
    targets = {
        "directory": str(odir), "missing_folder": str(root / "nope" / "deeper" / "x.onnx"),
        "parent_is_file": str(afile / "x.onnx"), "long_name": str(root / long_name),
        "long_path": str(root / "/".join(["d" * 200] * 30) / "x.onnx"), "empty": "",
        "readonly": str(ro / "x.onnx"), "fifo": str(fifo), "proc": "/proc/x.onnx", "sys": "/sys/x.onnx",
        "trailing_slash": str(root / "newdir") + "/", "dot": ".", "root": "/",
    }
    for name, target in targets.items():
        nobody = False
        add(Case(f"path/-o/{name}", [*base, "-o", target], as_nobody=nobody))
        add(Case(f"path/--plan-out/{name}", [*base, "-o", out(), "--plan-out", target.replace(".onnx", ".json")],
                 as_nobody=nobody))
        add(Case(f"path/--report-json/{name}", [*base, "-o", out(), "--report-json", target.replace(".onnx", ".json")],
                 as_nobody=nobody))
        add(Case(f"path/analyze--json/{name}", ["analyze", m, "--json", target.replace(".onnx", ".json")],
                 as_nobody=nobody))
    add(Case("path/-o/same_as_input", [*base, "-o", m]))
    add(Case("path/-o/same_as_input_dotted", [*base, "-o", str(cnn_path.parent / "." / cnn_path.name)]))
    link = root / "link.onnx"
    os.symlink(cnn_path, link)
    add(Case("path/-o/symlink_to_input", [*base, "-o", str(link)]))
    add(Case("path/--plan-out/same_as_input", [*base, "-o", out(), "--plan-out", m]))
    add(Case("path/--report-json/same_as_input", [*base, "-o", out(), "--report-json", m]))
    same = out()
    add(Case("path/--plan-out/same_as_-o", [*base, "-o", same, "--plan-out", same]))
    same = out()
    add(Case("path/--report-json/same_as_-o", [*base, "-o", same, "--report-json", same]))
    same = out(".json")
    add(Case("path/--report-json/same_as_--plan-out", [*base, "-o", out(), "--plan-out", same, "--report-json", same]))
    add(Case("path/--plan-out/same_as_--plan-in", [m, "--plan-in", str(plan), "-o", out(), "--plan-out", str(plan)]))
    add(Case("path/analyze--json/same_as_input", ["analyze", m, "--json", m]))
    make_readonly(root / "readonly_in", cnn_path)
    add(Case("path/-o/readonly_default_beside_input", [str(root / "readonly_in" / "cnn.onnx"), *CPU]))
    for limit, label in ((1000, "1k"), (100_000, "100k")):
        add(Case(f"path/full_disk/-o/{label}", [*base, "-o", out()], fsize=limit))
        add(Case(f"path/full_disk/--plan-out/{label}", [*base, "-o", out(), "--plan-out", out(".json")], fsize=limit))
        add(Case(f"path/full_disk/--report-json/{label}", [*base, "-o", out(), "--report-json", out(".json")],
                 fsize=limit))
        add(Case(f"path/full_disk/analyze/{label}", ["analyze", m, "--json", out(".json")], fsize=limit))
    del mlp_path


MOUNTS: list[Path] = []


def make_readonly(folder: Path, copy: Path | None = None) -> None:
    """A read-only folder (holding a copy of `copy`): a read-only tmpfs when this runs as root (root
    ignores file modes), else a folder with mode 0555."""
    folder.mkdir()
    if os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
                                            capture_output=True).returncode == 0:
        MOUNTS.append(folder)
        if copy:
            (folder / copy.name).write_bytes(copy.read_bytes())
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        return
    if copy:
        (folder / copy.name).write_bytes(copy.read_bytes())
    os.chmod(folder, 0o555)


def unmount_all() -> None:
    while MOUNTS:
        subprocess.run(["umount", str(MOUNTS.pop())], capture_output=True)


def _flag_cases(add, cnn_path: Path, mlp_path: Path, out) -> None:
    m, d = str(cnn_path), str(mlp_path)
    flags = {
        "--ratio": ["nan", "inf", "-inf", "1e999", "-0", "", "0x10", "1", "0.99999", " 0.3"],
        "--round-to": ["0", "-1", "1e9", "abc", "99999999999999999999", "1.5"],
        "--max-ratio": ["0", "1", "nan", "-1", "inf"],
        "--target-params": ["0", "2", "nan", "-1", "1e-9"],
        "--target-macs": ["0", "inf", "x", "1e-300"],
        "--calib-samples": ["0", "1", "-5", "abc", "99999999999999999999"],
        "--seed": ["-1", str(2 ** 70), "abc", "1.5"],
        "--providers": ["", "tpu", "cpu,,", ",", "CPU", "cuda"],
        "--importance": ["foo", "act", ""],
        "--group-reduction": ["bar"],
        "--compensate": ["x", "lsq", "bias"],
        "--ratio-for": ["x", "x=", "=0.5", "*=2", "*=nan", "Conv=0.5=1", "[=0.3"],
        "--ignore": ["", "[", "*", "**/[!"],
    }
    for flag, values in flags.items():
        for v in values:
            add(Case(f"flag/{flag}={v!r}", [m, flag, v, "-o", out(), *(CPU if flag != "--providers" else [])]))
    shapes = ["x", ":1", "x:", "x:a", "x:-1", "x:0", "x:1,,2", "x:1e3", "x:99999999999999999999", "nope:1,16",
              "x:1,16,1", "x:2,16", "x: 2,16", "x:2,16,", "x:1099511627776,16", "x:4,16"]
    for s in shapes:
        add(Case(f"flag/--input-shape={s!r}", [d, "--input-shape", s, "-o", out(), *CPU]))
    add(Case("flag/--input-shape twice", [d, "--input-shape", "x:2,16", "--input-shape", "x:3,16", "-o", out(), *CPU]))
    add(Case("flag/--input-shape on static", [m, "--input-shape", "image:2,3,64,64", "-o", out(), *CPU]))
    add(Case("flag/--input-shape huge on static", [m, "--input-shape", "image:1,3,1048576,1048576", "-o", out(), *CPU]))
    add(Case("flag/--input-shape scalar on rank 2", [d, "--input-shape", "x:", "-o", out()]))
    for argv in (["--bogus"], [], [m, m], [m, "--ratio"], ["verify"], ["analyze"], ["verify", m, "-o", out()],
                 ["analyze", m, "--ratio", "0.5"], [m, "--ratio", "0.5", "--target-params", "0.5"],
                 [m, "--target-params", "0.5", "--target-macs", "0.5"], [m, "--version"], [m, "-h"],
                 [m, "--no-validate", "--providers", "tpu", "-o", out()], [m, "-q", "-v", "-o", out(), *CPU],
                 [d, "-o", out(), *CPU], ["verify", d], ["analyze", d],
                 [d, "--input-shape", "x:2,16", "-o", out(), *CPU],
                 [m, "--importance", "act", "-o", out()], [m, "--compensate", "lsq", "-o", out()]):
        add(Case(f"flag/argv={' '.join(a.split('/')[-1] for a in argv)!r}", list(argv)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-k", default="", help="run only cases whose name contains this")
    p.add_argument("-v", "--verbose", action="store_true", help="print every case with its exit code and message")
    p.add_argument("--memory-gb", type=float, default=8.0, help="address-space limit of the runner (default 8 GB)")
    args = p.parse_args(argv)
    if args.memory_gb:
        limit = int(args.memory_gb * 2 ** 30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    with tempfile.TemporaryDirectory(prefix="onnxprune-hostile-") as tmp:
        root = Path(tmp)
        try:
            cases = [c for c in build_cases(root) if args.k in c.name]
            outcomes = []
            for case in cases:
                o = run_case(case, root)
                outcomes.append(o)
                if args.verbose or o.problems:
                    last = o.err.strip().splitlines()[-1] if o.err.strip() else ""
                    print(f"{'FAIL' if o.problems else 'ok  '} {o.code:3d} {case.name}: {last[:300]}", flush=True)
                    for prob in o.problems:
                        print(f"       - {prob}", flush=True)
        finally:
            unmount_all()
        for dirpath, dirs, _ in os.walk(root):  # let the temporary folder go
            for dname in dirs:
                os.chmod(os.path.join(dirpath, dname), 0o755)
    counts: dict[int, int] = {}
    for o in outcomes:
        counts[o.code] = counts.get(o.code, 0) + 1
    bad = [o for o in outcomes if o.problems]
    internal = sum("internal error / traceback" in o.problems for o in outcomes)
    for section in SECTIONS:
        codes: dict[int, int] = {}
        for o in outcomes:
            if o.case.name.split("/")[0] == section:
                codes[o.code] = codes.get(o.code, 0) + 1
        if codes:
            print(f"  {section:6s} {sum(codes.values()):4d} cases; exit codes: "
                  + ", ".join(f"{k}: {v}" for k, v in sorted(codes.items())))
    print(f"{len(outcomes)} cases; exit codes: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    print(f"{len(bad)} failing cases ({internal} with an internal error or traceback)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
