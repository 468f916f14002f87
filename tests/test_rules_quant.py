"""Quantized models (QDQ static int8, dynamic int8), made by ONNX Runtime's own quantization tools:
prune through them, pass the dead-channel oracle, run in ONNX Runtime, keep the format."""
from __future__ import annotations

import collections
import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from onnxprune import PruneConfig, analyze, prune
from onnxprune.ir import Graph

from checks import init, removed
from helpers import frozen_reasons, make_model, node, prune_with_oracle, save, weight

quantization = pytest.importorskip("onnxruntime.quantization")


class _Reader(quantization.CalibrationDataReader):
    def __init__(self, name: str, shape: list[int], samples: int = 2):
        rng = np.random.default_rng(0)
        self.data = iter([{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(samples)])

    def get_next(self):
        return next(self.data, None)


def _cnn() -> onnx.ModelProto:
    """Conv-Relu-Conv-Relu (residual Add)-Conv-GAP-Flatten-Gemm."""
    nodes = [node("Conv", ["x", "w1", "b1"], "c1", pads=[1, 1, 1, 1]), node("Relu", ["c1"], "r1"),
             node("Conv", ["r1", "w2", "b2"], "c2", pads=[1, 1, 1, 1]), node("Relu", ["c2"], "r2"),
             node("Conv", ["r2", "w3", "b3"], "c3", pads=[1, 1, 1, 1]), node("Add", ["c3", "r2"], "s"),
             node("GlobalAveragePool", ["s"], "p"), node("Flatten", ["p"], "f"),
             node("Gemm", ["f", "wf", "bf"], "y", transB=1)]
    inits = {"w1": weight(8, 3, 3, 3), "b1": weight(8), "w2": weight(16, 8, 3, 3), "b2": weight(16),
             "w3": weight(16, 16, 3, 3), "b3": weight(16), "wf": weight(10, 16), "bf": weight(10)}
    return make_model(nodes, {"x": [1, 3, 12, 12]}, {"y": [1, 10]}, inits, opset=17)


def _quantize_static(tmp_path, model: onnx.ModelProto, per_channel: bool, **kw) -> onnx.ModelProto:
    src = save(model, tmp_path, "float.onnx")
    out = str(tmp_path / "qdq.onnx")
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    quantization.quantize_static(src, out, _Reader(model.graph.input[0].name, shape),
                                 quant_format=quantization.QuantFormat.QDQ, per_channel=per_channel, **kw)
    return onnx.load(out)


def _op_counts(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(n.op_type for n in model.graph.node)


def _dtypes(model: onnx.ModelProto) -> dict[str, int]:
    return {t.name: t.data_type for t in model.graph.initializer}


def _same_dtypes(pruned: onnx.ModelProto, original: onnx.ModelProto) -> bool:
    """Every initializer of the original keeps its element type (the loader may add clones of shared ones)."""
    after = _dtypes(pruned)
    return all(after.get(name) == t for name, t in _dtypes(original).items())


@pytest.mark.parametrize("per_channel", [False, True])
def test_qdq_static_cnn_prunes_and_stays_qdq(tmp_path, per_channel):
    q = _quantize_static(tmp_path, _cnn(), per_channel)
    analysis, plan, pruned = prune_with_oracle(q, tmp_path, ratio=0.5, min_groups=2)
    assert _op_counts(pruned) == _op_counts(q)  # every Q / DQ node is still there
    assert _same_dtypes(pruned, q)  # int8 weights stay int8, int32 biases int32
    assert any(t == TensorProto.INT8 for t in _dtypes(pruned).values())
    gone = removed(analysis, plan)
    conv2 = [n for n in q.graph.node if n.op_type == "Conv"][1]
    dq = next(n for n in q.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == conv2.input[1])
    w2 = dq.input[0]
    rows = gone[(w2, 0)]
    assert init(pruned, w2).shape[0] == 16 - len(rows) and init(pruned, w2).dtype == np.int8
    scale = init(pruned, dq.input[1])
    if per_channel:  # the per-axis scale and zero point lose the same rows as the weight
        kept = np.setdiff1d(np.arange(16), rows)
        assert scale.shape == (len(kept),)
        np.testing.assert_array_equal(scale, init(q, dq.input[1])[kept])
        assert init(pruned, dq.input[2]).shape == (len(kept),)
    else:  # a per-tensor scale serves every channel and stays
        assert scale.shape == init(q, dq.input[1]).shape
    assert not frozen_reasons(analysis) or all("graph output" in r for r in frozen_reasons(analysis))


def test_qdq_prune_cli_path_runs_and_counts_int8_parameters(tmp_path):
    q = _quantize_static(tmp_path, _cnn(), per_channel=True)
    path = save(q, tmp_path, "q.onnx")
    report = prune(path, str(tmp_path / "q.pruned.onnx"), PruneConfig(ratio=0.5, round_to=1, latency_repeats=0))
    assert report.groups_pruned >= 2
    # float params alone would be the scales and float nothing else; int8 weights count
    int8 = sum(int(np.prod(t.dims)) for t in q.graph.initializer if t.data_type == TensorProto.INT8)
    assert report.before.params >= int8 > 0
    assert report.after.params < 0.6 * report.before.params
    out = onnx.load(str(tmp_path / "q.pruned.onnx"))
    assert _op_counts(out)["DequantizeLinear"] == _op_counts(q)["DequantizeLinear"]


def test_uint8_weights_with_zero_point(tmp_path):
    """Asymmetric uint8 weights (zero point != 0): the int8 initializer is cut and stays uint8."""
    q = _quantize_static(tmp_path, _cnn(), per_channel=True, weight_type=quantization.QuantType.QUInt8,
                         activation_type=quantization.QuantType.QUInt8)
    _, _, pruned = prune_with_oracle(q, tmp_path, ratio=0.5, min_groups=2)
    assert _same_dtypes(pruned, q)


def test_per_axis_activation_quantization_cuts_its_parameters(tmp_path):
    """A QuantizeLinear / DequantizeLinear pair of an activation with one scale per channel."""
    s = np.linspace(0.01, 0.02, 8).astype(np.float32)
    nodes = [node("Conv", ["x", "w1"], "c1"), node("QuantizeLinear", ["c1", "s", "z"], "q", axis=1),
             node("DequantizeLinear", ["q", "s", "z"], "d", axis=1), node("Conv", ["d", "w2"], "y")]
    model = make_model(nodes, {"x": [1, 3, 6, 6]}, {"y": None},
                       {"w1": weight(8, 3, 1, 1), "w2": weight(4, 8, 1, 1), "s": s, "z": np.zeros(8, np.uint8)})
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    gone = removed(analysis, plan)[("w1", 0)]
    np.testing.assert_array_equal(init(pruned, "s"), np.delete(s, gone))
    assert init(pruned, "z").dtype == np.uint8 and init(pruned, "z").shape == (8 - len(gone),)


def test_blocked_quantization_along_the_pruned_axis_is_refused(tmp_path):
    w = np.random.default_rng(0).integers(-8, 8, (8, 4), dtype=np.int8)
    nodes = [node("MatMul", ["x", "w0"], "h"), node("Relu", ["h"], "r"),
             node("DequantizeLinear", ["wq", "ws"], "w", axis=0, block_size=4), node("MatMul", ["r", "w"], "y")]
    model = make_model(nodes, {"x": [2, 8]}, {"y": None},
                       {"w0": weight(8, 8), "wq": w, "ws": np.full((2, 4), 0.1, np.float32)}, opset=21)
    model.ir_version = 10
    analysis = analyze(save(model, tmp_path))
    assert any("blocked quantization" in r for r in frozen_reasons(analysis)), frozen_reasons(analysis)


def _mlp() -> onnx.ModelProto:
    nodes = [node("MatMul", ["x", "w1"], "h"), node("Add", ["h", "b1"], "hb"), node("Relu", ["hb"], "r"),
             node("MatMul", ["r", "w2"], "y")]
    return make_model(nodes, {"x": [4, 16]}, {"y": [4, 8]},
                      {"w1": weight(16, 32), "b1": weight(32), "w2": weight(32, 8)})


def _quantize_dynamic(tmp_path, model: onnx.ModelProto, **kw) -> onnx.ModelProto:
    src = save(model, tmp_path, "float.onnx")
    out = str(tmp_path / "dyn.onnx")
    quantization.quantize_dynamic(src, out, **kw)
    return onnx.load(out)


@pytest.mark.parametrize("build, op", [(_mlp, "MatMulInteger"), (_cnn, "ConvInteger")])
def test_dynamic_int8_prunes_by_default_and_keeps_integer_ops(tmp_path, build, op):
    q = _quantize_dynamic(tmp_path, build())
    assert _op_counts(q)[op] >= 2
    path = save(q, tmp_path, "dyn.onnx")
    analysis = analyze(path)
    groups = analysis.prunable
    # exact once the removed channels are silent where the run-time range is taken
    assert groups and all(g.exact and g.shared_range_reasons for g in groups)
    plan = analysis.plan(PruneConfig(ratio=0.5, round_to=1))
    assert plan.groups and analysis.verify(plan).passed
    out = str(tmp_path / "dyn.pruned.onnx")
    report = prune(path, out, PruneConfig(ratio=0.5, round_to=1, latency_repeats=0))
    assert report.groups_pruned >= 1 and report.after.params < report.before.params
    assert any("dynamic (run-time) quantization" in n for n in report.notes), report.notes
    pruned = onnx.load(out)
    assert _op_counts(pruned) == _op_counts(q)
    assert _same_dtypes(pruned, q)
    assert report.validation  # ran in ONNX Runtime


def test_oracle_fails_dynamic_int8_when_the_removed_channels_stay_live(tmp_path):
    """The silencing is what makes the check pass: with consumers zeroed alone, the removed channels
    still move the run-time range, and the oracle sees it (it can fail)."""
    q = _quantize_dynamic(tmp_path, _cnn())
    analysis = analyze(save(q, tmp_path, "dyn.onnx"))
    plan = analysis.plan(PruneConfig(ratio=0.5, round_to=1))
    live = dataclasses.replace(analysis, groups=[dataclasses.replace(g, shared_range_reasons=())
                                                 for g in analysis.groups])
    result = live.verify(plan)
    assert not result.passed and result.comparison.relative > 1e-3, result.detail


def test_param_count_counts_integer_weights_not_shapes():
    nodes = [node("DequantizeLinear", ["wq", "s", "z"], "w"), node("MatMul", ["x", "w"], "m"),
             node("Reshape", ["m", "shape"], "y")]
    model = make_model(nodes, {"x": [2, 4]}, {"y": None},
                       {"wq": np.ones((4, 6), np.int8), "s": np.float32(0.1), "z": np.int8(0),
                        "shape": np.array([12], np.int64)})
    graph = Graph(model, {})
    assert graph.param_count() == 24 + 1 + 1
    assert numpy_helper.to_array(model.graph.initializer[0]).dtype == np.int8


# -- com.microsoft contrib ops ------------------------------------------------
# ONNX shape inference does not know ONNX Runtime's contrib ops; the project's contrib shape hook
# gives their output shapes. Here they come from one ONNX Runtime run of the model instead.

def _ort_shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    import onnxruntime as ort
    from onnxprune.testing import random_inputs
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for n in m.graph.node:
        for o in n.output:
            if o and o not in have:
                m.graph.output.append(onnx.ValueInfoProto(name=o))
                have.add(o)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(None, random_inputs(model, {}, 0))
    return {o.name: tuple(v.shape) for o, v in zip(sess.get_outputs(), outs)}


@pytest.fixture
def contrib_shapes(monkeypatch):
    """Call with a model: shapes ONNX inference leaves unknown are taken from an ORT run of it."""
    import sys

    import onnxprune.ir as ir_pkg
    ir_load = sys.modules["onnxprune.ir.load"]  # the package exports a function of the same name
    original = ir_load.infer_shapes
    known: dict[str, tuple] = {}

    def infer(proto, input_shapes):
        shapes = original(proto, input_shapes)
        for name, shape in known.items():
            if name not in shapes or None in shapes[name]:
                shapes[name] = shape
        return shapes

    monkeypatch.setattr(ir_load, "infer_shapes", infer)
    monkeypatch.setattr(ir_pkg, "infer_shapes", infer)
    return lambda model: known.update(_ort_shapes(model))


def _ms_model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    value_info = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(nodes, "contrib",
                                   [value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
                                   [value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
                                   [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17),
                                                         onnx.helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    return model


def _ms(op: str, inputs: list[str], output: str, **attrs) -> onnx.NodeProto:
    return onnx.helper.make_node(op, inputs, [output], name=f"{op}_{output}", domain="com.microsoft", **attrs)


def _q8(*shape: int) -> np.ndarray:
    return np.random.default_rng(3).integers(-127, 128, shape).astype(np.int8)


def _prune_contrib(tmp_path, model: onnx.ModelProto, contrib_shapes):
    """Prune with the defaults (dynamic quantization prunes exactly) and pass the oracle."""
    contrib_shapes(model)
    path = save(model, tmp_path, "contrib.onnx")
    out = str(tmp_path / "contrib.pruned.onnx")
    config = PruneConfig(ratio=0.5, round_to=1, latency_repeats=0)
    report = prune(path, out, config)
    assert report.groups_pruned >= 1 and report.validation, report.frozen_reasons
    analysis = analyze(path)
    result = analysis.verify(analysis.plan(config))
    assert result.passed and result.groups_checked >= 1, result.detail
    return report, onnx.load(out)


def test_dynamic_quantize_matmul(tmp_path, contrib_shapes):
    """DynamicQuantizeMatMul with per-column scale, zero point and bias; then one per tensor."""
    s1 = np.linspace(0.01, 0.02, 32).astype(np.float32)
    nodes = [_ms("DynamicQuantizeMatMul", ["x", "b1", "s1", "z1", "bias1"], "h"), node("Relu", ["h"], "r"),
             _ms("DynamicQuantizeMatMul", ["r", "b2", "s2", "z2"], "y")]
    model = _ms_model(nodes, {"x": [4, 16]}, {"y": [4, 8]},
                      {"b1": _q8(16, 32), "s1": s1, "z1": np.zeros(32, np.int8), "bias1": weight(32),
                       "b2": _q8(32, 8), "s2": np.array([0.01], np.float32), "z2": np.zeros(1, np.int8)})
    report, pruned = _prune_contrib(tmp_path, model, contrib_shapes)
    assert init(pruned, "b1").shape == (16, 16) and init(pruned, "b1").dtype == np.int8
    assert init(pruned, "s1").shape == (16,) and init(pruned, "z1").shape == (16,)
    assert init(pruned, "bias1").shape == (16,)
    assert init(pruned, "b2").shape == (16, 8) and init(pruned, "s2").shape == (1,)
    assert _op_counts(pruned)["DynamicQuantizeMatMul"] == 2


def test_matmul_integer_to_float(tmp_path, contrib_shapes):
    nodes = [node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             _ms("MatMulIntegerToFloat", ["xq", "b1", "xs", "s1", "xz", "z1", "bias1"], "h"), node("Relu", ["h"], "r"),
             node("DynamicQuantizeLinear", ["r"], ["rq", "rs", "rz"]),
             _ms("MatMulIntegerToFloat", ["rq", "b2", "rs", "s2", "rz", "z2"], "y")]
    model = _ms_model(nodes, {"x": [4, 16]}, {"y": [4, 8]},
                      {"b1": _q8(16, 24).view(np.uint8), "s1": np.full(24, 0.01, np.float32),
                       "z1": np.full(24, 128, np.uint8), "bias1": weight(24),
                       "b2": _q8(24, 8).view(np.uint8), "s2": np.float32(0.01), "z2": np.uint8(128)})
    report, pruned = _prune_contrib(tmp_path, model, contrib_shapes)
    assert init(pruned, "b1").shape == (16, 12) and init(pruned, "b1").dtype == np.uint8
    assert init(pruned, "z1").shape == (12,) and init(pruned, "b2").shape == (12, 8)


def test_dynamic_quantize_lstm(tmp_path, contrib_shapes):
    """quantize_dynamic turns an LSTM into com.microsoft.DynamicQuantizeLSTM (W [dirs, I, 4H] int8)."""
    hid = 8
    nodes = [node("LSTM", ["x", "W", "R", "B"], ["Y", "Yh"], hidden_size=hid),
             node("Squeeze", ["Yh", "ax0"], "h"), node("MatMul", ["h", "fc"], "y")]
    model = make_model(nodes, {"x": [5, 2, 6]}, {"y": [2, 3]},
                       {"W": weight(1, 4 * hid, 6), "R": weight(1, 4 * hid, hid), "B": weight(1, 8 * hid),
                        "ax0": np.array([0], np.int64), "fc": weight(hid, 3)})
    q = _quantize_dynamic(tmp_path, model, op_types_to_quantize=["LSTM"])
    assert _op_counts(q)["DynamicQuantizeLSTM"] == 1
    lstm = next(n for n in q.graph.node if n.op_type == "DynamicQuantizeLSTM")
    report, pruned = _prune_contrib(tmp_path, q, contrib_shapes)
    assert init(pruned, lstm.input[1]).shape == (1, 6, 4 * hid // 2) and init(pruned, lstm.input[1]).dtype == np.int8
    assert init(pruned, lstm.input[2]).shape == (1, hid // 2, 4 * hid // 2)
    assert init(pruned, lstm.input[3]).shape == (1, 8 * hid // 2)


def _nbits(name: str, w: np.ndarray, block: int, zero_points: bool) -> tuple[dict, list[str]]:
    """Pack a float [K, N] weight as MatMulNBits int4: B [N, blocks, block/2], scales [N, blocks],
    zero points packed two to a byte [N, ceil(blocks/2)] (or the default 8)."""
    k, n = w.shape
    blocks = -(-k // block)
    padded = np.zeros((blocks * block, n), np.float32)
    padded[:k] = w
    per_block = padded.T.reshape(n, blocks, block)
    scales = (np.abs(per_block).max(axis=2) / 7 + 1e-6).astype(np.float32)
    zp = np.random.default_rng(5).integers(6, 11, (n, blocks)).astype(np.uint8) if zero_points \
        else np.full((n, blocks), 8, np.uint8)
    q = np.clip(np.round(per_block / scales[:, :, None]) + zp[:, :, None], 0, 15).astype(np.uint8)
    packed = (q[:, :, 0::2] | (q[:, :, 1::2] << 4)).astype(np.uint8)
    inits = {f"{name}_q": packed, f"{name}_s": scales}
    inputs = [f"{name}_q", f"{name}_s"]
    if zero_points:
        zp_pad = np.zeros((n, 2 * (-(-blocks // 2))), np.uint8)
        zp_pad[:, :blocks] = zp
        inits[f"{name}_z"] = (zp_pad[:, 0::2] | (zp_pad[:, 1::2] << 4)).astype(np.uint8)
        inputs.append(f"{name}_z")
    return inits, inputs


@pytest.mark.parametrize("zero_points", [False, True])
def test_matmul_nbits_cuts_rows_and_whole_input_blocks(tmp_path, contrib_shapes, zero_points):
    block = 16
    i1, in1 = _nbits("fc1", weight(32, 48), block, zero_points)
    i2, in2 = _nbits("fc2", weight(48, 8), block, zero_points)
    nodes = [_ms("MatMulNBits", ["x", *in1], "h", K=32, N=48, bits=4, block_size=block), node("Relu", ["h"], "r"),
             _ms("MatMulNBits", ["r", *in2], "y", K=48, N=8, bits=4, block_size=block)]
    model = _ms_model(nodes, {"x": [2, 3, 32]}, {"y": [2, 3, 8]}, {**i1, **i2})
    contrib_shapes(model)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    (group,) = [g for g in analysis.groups if g.root == ("h", 2)]
    # units are whole blocks of fc2's input (pairs of blocks when two share a zero-point byte)
    assert group.unit_count == (2 if zero_points else 3)
    kept = init(pruned, "fc1_q").shape[0]
    assert kept % block == 0 and kept < 48
    assert init(pruned, "fc1_q").dtype == np.uint8 and init(pruned, "fc1_s").shape == (kept, 2)
    assert init(pruned, "fc2_q").shape == (8, kept // block, block // 2)
    assert init(pruned, "fc2_s").shape == (8, kept // block)
    if zero_points:
        assert init(pruned, "fc1_z").shape == (kept, 1) and init(pruned, "fc2_z").shape == (8, -(-kept // block // 2))
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in pruned.graph.node
             if n.op_type == "MatMulNBits"]
    assert (attrs[0]["N"], attrs[1]["K"]) == (kept, kept)
    assert _op_counts(pruned)["MatMulNBits"] == 2


def test_matmul_nbits_from_the_quantizer(tmp_path, contrib_shapes):
    nbits = pytest.importorskip("onnxruntime.quantization.matmul_nbits_quantizer")  # needs onnx_ir
    nodes = [node("MatMul", ["x", "w1"], "h"), node("Relu", ["h"], "r"), node("MatMul", ["r", "w2"], "y")]
    model = make_model(nodes, {"x": [4, 64]}, {"y": [4, 16]}, {"w1": weight(64, 96), "w2": weight(96, 16)})
    quantizer = nbits.MatMulNBitsQuantizer(model, block_size=32, is_symmetric=True)
    quantizer.process()
    q = quantizer.model.model
    contrib_shapes(q)
    _, _, pruned = prune_with_oracle(q, tmp_path, ratio=0.5)
    assert _op_counts(pruned)["MatMulNBits"] == 2
    assert init(pruned, "w1_Q4").shape in ((64, 2, 16), (32, 2, 16))


@pytest.mark.parametrize("per_channel", [False, True])
def test_qoperator_cnn(tmp_path, contrib_shapes, per_channel):
    """QOperator format: QLinearConv, com.microsoft QLinearAdd / QLinearGlobalAveragePool / QGemm."""
    src = save(_cnn(), tmp_path, "float.onnx")
    out = str(tmp_path / "qop.onnx")
    quantization.quantize_static(src, out, _Reader("x", [1, 3, 12, 12]),
                                 quant_format=quantization.QuantFormat.QOperator, per_channel=per_channel)
    q = onnx.load(out)
    ops = _op_counts(q)
    assert ops["QLinearConv"] == 3 and ops["QGemm"] == 1 and ops["QLinearAdd"] == 1
    contrib_shapes(q)
    analysis, plan, pruned = prune_with_oracle(q, tmp_path, ratio=0.5, min_groups=2)
    assert _op_counts(pruned) == ops and _same_dtypes(pruned, q)
    conv2 = [n for n in q.graph.node if n.op_type == "QLinearConv"][1]
    rows = removed(analysis, plan)[(conv2.input[3], 0)]
    kept = 16 - len(rows)
    assert init(pruned, conv2.input[3]).shape[0] == kept and init(pruned, conv2.input[8]).shape == (kept,)
    assert init(pruned, conv2.input[4]).shape == ((kept,) if per_channel else ())


def test_importance_scores_dequantized_weights():
    """Per-channel int8 rows all span the int8 range; their importance is that of the float rows."""
    from onnxprune.importance import float_values
    wq = np.full((3, 4), 100, np.int8)
    scale = np.array([0.1, 0.01, 1.0], np.float32)
    nodes = [node("DequantizeLinear", ["wq", "s", "z"], "w", axis=0), node("Gemm", ["x", "w"], "y", transB=1)]
    model = make_model(nodes, {"x": [2, 4]}, {"y": None}, {"wq": wq, "s": scale, "z": np.full(3, 50, np.int8)})
    values = float_values(Graph(model, {}), "wq")
    np.testing.assert_allclose(values, (100 - 50) * scale[:, None] * np.ones((3, 4)))


# -- contrib ops through their rules' own shape functions (no ORT stand-in) ----
# A plain `onnxprune MODEL -o OUT` on ONNX Runtime's quantized models: the output shapes of the
# contrib ops come from the rules' infer_shape, else their groups freeze on unknown sizes.

def _all_params(path: str) -> int:
    model = onnx.load(path)
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer
               if t.data_type not in (TensorProto.INT64, TensorProto.BOOL))


def _cli_prunes(tmp_path, path: str, *flags: str) -> onnx.ModelProto:
    """Prune with the CLI as a user does, check it removed parameters, and pass the oracle; no
    group may freeze on a shape left unknown."""
    from onnxprune import cli
    unknown = [r for r in frozen_reasons(analyze(path)) if "unknown" in r]
    assert not unknown, unknown
    out = str(tmp_path / "cli.pruned.onnx")
    args = ["--ratio", "0.5", "--round-to", "1", *flags]
    assert cli.main([path, "-o", out, *args]) == 0
    assert _all_params(out) < _all_params(path)
    assert cli.main(["verify", path, *args]) == 0
    return onnx.load(out)


def _qoperator(tmp_path, model: onnx.ModelProto, shape: list[int]) -> str:
    src = save(model, tmp_path, "float.onnx")
    out = str(tmp_path / "qop.onnx")
    quantization.quantize_static(src, out, _Reader("x", shape), quant_format=quantization.QuantFormat.QOperator,
                                 per_channel=True)
    return out


def _cnn_activations() -> onnx.ModelProto:
    """Conv-LeakyRelu-Softmax (over the width)-Conv-Sigmoid, times the conv (Mul), AveragePool,
    Conv-GAP-Flatten-Gemm."""
    nodes = [node("Conv", ["x", "w1", "b1"], "c1", pads=[1, 1, 1, 1]), node("LeakyRelu", ["c1"], "r1", alpha=0.1),
             node("Softmax", ["r1"], "sm", axis=-1), node("Conv", ["sm", "w2", "b2"], "c2", pads=[1, 1, 1, 1]),
             node("Sigmoid", ["c2"], "g"),
             node("Mul", ["c2", "g"], "m"), node("AveragePool", ["m"], "a", kernel_shape=[2, 2], strides=[2, 2]),
             node("Conv", ["a", "w3", "b3"], "c3", pads=[1, 1, 1, 1]), node("GlobalAveragePool", ["c3"], "p"),
             node("Flatten", ["p"], "f"), node("Gemm", ["f", "wf", "bf"], "y", transB=1)]
    inits = {"w1": weight(8, 3, 3, 3), "b1": weight(8), "w2": weight(16, 8, 3, 3), "b2": weight(16),
             "w3": weight(16, 16, 3, 3), "b3": weight(16), "wf": weight(10, 16), "bf": weight(10)}
    return make_model(nodes, {"x": [1, 3, 12, 12]}, {"y": [1, 10]}, inits, opset=17)


def _cnn_concat() -> onnx.ModelProto:
    """Two Conv-Relu branches of 8 and 16 channels joined by Concat (QLinearConcat once quantized),
    then Conv-GAP-Flatten-Gemm: every branch's channels reach the joint Conv at their offsets."""
    nodes = [node("Conv", ["x", "w1", "b1"], "c1", pads=[1, 1, 1, 1]), node("Relu", ["c1"], "r1"),
             node("Conv", ["x", "w2", "b2"], "c2", pads=[1, 1, 1, 1]), node("Relu", ["c2"], "r2"),
             node("Concat", ["r1", "r2"], "cat", axis=1), node("Conv", ["cat", "w3", "b3"], "c3", pads=[1, 1, 1, 1]),
             node("GlobalAveragePool", ["c3"], "p"), node("Flatten", ["p"], "f"),
             node("Gemm", ["f", "wf", "bf"], "y", transB=1)]
    inits = {"w1": weight(8, 3, 3, 3), "b1": weight(8), "w2": weight(16, 3, 3, 3), "b2": weight(16),
             "w3": weight(16, 24, 3, 3), "b3": weight(16), "wf": weight(10, 16), "bf": weight(10)}
    return make_model(nodes, {"x": [1, 3, 12, 12]}, {"y": [1, 10]}, inits, opset=17)


@pytest.mark.parametrize("build, ops", [
    (_cnn, ("QGemm", "QLinearAdd", "QLinearGlobalAveragePool")),
    (_cnn_concat, ("QLinearConcat",)),
    (_cnn_activations, ("QLinearLeakyRelu", "QLinearSoftmax", "QLinearSigmoid", "QLinearMul", "QLinearAveragePool"))])
def test_qoperator_prunes_without_ort_shapes(tmp_path, build, ops):
    path = _qoperator(tmp_path, build(), [1, 3, 12, 12])
    counts = _op_counts(onnx.load(path))
    assert all(counts[op] >= 1 for op in ops), counts
    pruned = _cli_prunes(tmp_path, path)
    assert _op_counts(pruned) == counts


def test_dynamic_quantize_lstm_prunes_without_ort_shapes(tmp_path):
    hid = 8
    nodes = [node("LSTM", ["x", "W", "R", "B"], ["Y", "Yh"], hidden_size=hid), node("Squeeze", ["Yh", "ax0"], "h"),
             node("MatMul", ["h", "fc"], "y")]
    model = make_model(nodes, {"x": [5, 2, 6]}, {"y": [2, 3]},
                       {"W": weight(1, 4 * hid, 6), "R": weight(1, 4 * hid, hid), "B": weight(1, 8 * hid),
                        "ax0": np.array([0], np.int64), "fc": weight(hid, 3)})
    q = _quantize_dynamic(tmp_path, model, op_types_to_quantize=["LSTM"])
    assert _op_counts(q)["DynamicQuantizeLSTM"] == 1
    pruned = _cli_prunes(tmp_path, save(q, tmp_path, "dyn_lstm.onnx"))
    lstm = next(n for n in pruned.graph.node if n.op_type == "DynamicQuantizeLSTM")
    assert init(pruned, lstm.input[2]).shape == (1, hid // 2, 4 * hid // 2)


def test_dynamic_quantize_matmul_and_integer_to_float_prune_without_ort_shapes(tmp_path):
    nodes = [_ms("DynamicQuantizeMatMul", ["x", "b1", "s1", "z1", "bias1"], "h"), node("Relu", ["h"], "r"),
             node("DynamicQuantizeLinear", ["r"], ["rq", "rs", "rz"]),
             _ms("MatMulIntegerToFloat", ["rq", "b2", "rs", "s2", "rz", "z2", "bias2"], "h2"),
             node("Relu", ["h2"], "r2"),
             _ms("DynamicQuantizeMatMul", ["r2", "b3", "s3", "z3"], "y")]
    model = _ms_model(nodes, {"x": [4, 16]}, {"y": [4, 8]},
                      {"b1": _q8(16, 32), "s1": np.full(32, 0.01, np.float32), "z1": np.zeros(32, np.int8),
                       "bias1": weight(32), "b2": _q8(32, 24).view(np.uint8), "s2": np.full(24, 0.01, np.float32),
                       "z2": np.full(24, 128, np.uint8), "bias2": weight(24),
                       "b3": _q8(24, 8), "s3": np.array([0.01], np.float32), "z3": np.zeros(1, np.int8)})
    pruned = _cli_prunes(tmp_path, save(model, tmp_path, "dqmm.onnx"))
    assert init(pruned, "b1").shape == (16, 16) and init(pruned, "b2").shape == (16, 12)
    assert init(pruned, "b3").shape == (12, 8)


def test_matmul_nbits_quantizer_prunes_without_ort_shapes(tmp_path):
    nbits = pytest.importorskip("onnxruntime.quantization.matmul_nbits_quantizer")  # needs onnx_ir
    nodes = [node("MatMul", ["x", "w1"], "h"), node("Relu", ["h"], "r"), node("MatMul", ["r", "w2"], "y")]
    model = make_model(nodes, {"x": [2, 3, 64]}, {"y": [2, 3, 16]}, {"w1": weight(64, 96), "w2": weight(96, 16)})
    quantizer = nbits.MatMulNBitsQuantizer(model, block_size=32, is_symmetric=True)
    quantizer.process()
    pruned = _cli_prunes(tmp_path, save(quantizer.model.model, tmp_path, "nbits.onnx"))
    assert _op_counts(pruned)["MatMulNBits"] == 2


_S = None  # a scale or zero point: its shape does not matter


@pytest.mark.parametrize("op, domain, shapes, attrs, expected", [
    ("QGemm", "com.microsoft", [(16, 4), _S, _S, (10, 16)], {"transA": 1, "transB": 1}, [(4, 10)]),
    ("QLinearAdd", "com.microsoft", [(2, 1, 5), _S, _S, (3, 1)], {}, [(2, 3, 5)]),
    ("QLinearMul", "com.microsoft", [(4, 1), _S, _S, (1, 6)], {}, [(4, 6)]),
    ("QLinearAveragePool", "com.microsoft", [(1, 8, 8, 16)],
     {"kernel_shape": [2, 2], "strides": [2, 2], "channels_last": 1}, [(1, 4, 4, 16)]),
    ("QLinearAveragePool", "com.microsoft", [(1, 16, 9, 9)], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
     [(1, 16, 9, 9)]),
    ("QLinearGlobalAveragePool", "com.microsoft", [(1, 16, 7, 7)], {}, [(1, 16, 1, 1)]),
    ("QLinearLeakyRelu", "com.microsoft", [(2, 3)], {"alpha": 0.1}, [(2, 3)]),
    ("QLinearSoftmax", "com.microsoft", [(2, 4, 8)], {"axis": -1, "opset": 13}, [(2, 4, 8)]),
    ("QLinearConv", "", [(1, 3, 12, 12), _S, _S, (8, 3, 3, 3)], {"pads": [1, 1, 1, 1], "strides": [2, 2]},
     [(1, 8, 6, 6)]),
    ("DynamicQuantizeMatMul", "com.microsoft", [(2, 3, 16), (16, 8)], {}, [(2, 3, 8)]),
    ("MatMulIntegerToFloat", "com.microsoft", [(5, 16), (16, 8)], {}, [(5, 8)]),
    ("DynamicQuantizeLSTM", "com.microsoft", [(5, 2, 6), (2, 6, 32)], {"hidden_size": 8, "direction": "bidirectional"},
     [(5, 2, 2, 8), (2, 2, 8), (2, 2, 8)]),
    ("MatMulNBits", "com.microsoft", [(2, 3, 32)], {"K": 32, "N": 48, "bits": 4, "block_size": 16}, [(2, 3, 48)]),
])
def test_quantized_contrib_shape_functions(op, domain, shapes, attrs, expected):
    from onnxprune.ir import Node
    from onnxprune.rules.base import node_shapes
    n = Node(f"{op}_0", op, domain, [f"i{k}" for k in range(len(shapes))], [f"o{k}" for k in range(len(expected))],
             attrs)
    assert [tuple(s) for s in node_shapes(n, shapes)] == expected


def test_qlinear_softmax_over_the_channels_freezes_them(tmp_path):
    nodes = [node("Conv", ["x", "w1", "b1"], "c1", pads=[1, 1, 1, 1]), node("Softmax", ["c1"], "sm", axis=1),
             node("Conv", ["sm", "w2", "b2"], "y", pads=[1, 1, 1, 1])]
    model = make_model(nodes, {"x": [1, 3, 8, 8]}, {"y": [1, 4, 8, 8]},
                       {"w1": weight(8, 3, 3, 3), "b1": weight(8), "w2": weight(4, 8, 3, 3), "b2": weight(4)}, opset=17)
    path = _qoperator(tmp_path, model, [1, 3, 8, 8])
    assert _op_counts(onnx.load(path))["QLinearSoftmax"] == 1
    reasons = frozen_reasons(analyze(path))
    assert any("QLinearSoftmax normalises over the channel axis 1" in r for r in reasons), reasons


def test_qlinear_concat_prunes_both_branches(tmp_path, contrib_shapes):
    """Both branches into a QLinearConcat lose rows, and the joint QLinearConv loses the matching
    input channels at each branch's offset (the oracle checks the offsets)."""
    q = onnx.load(_qoperator(tmp_path, _cnn_concat(), [1, 3, 12, 12]))
    assert _op_counts(q)["QLinearConcat"] == 1
    contrib_shapes(q)
    analysis, plan, pruned = prune_with_oracle(q, tmp_path, ratio=0.5, min_groups=3)
    convs = [n for n in q.graph.node if n.op_type == "QLinearConv"]
    assert [init(pruned, c.input[3]).shape[0] for c in convs[:2]] == [4, 8]
    assert init(pruned, convs[2].input[3]).shape[1] == 12
    assert _op_counts(pruned) == _op_counts(q) and _same_dtypes(pruned, q)


def test_qlinear_concat_with_per_axis_parameters_freezes(tmp_path):
    """A per-channel scale on a QLinearConcat input is not the per-tensor requantization the rule follows."""
    from onnxprune.rule_harness import Input, visit
    x = Input((1, 4, 2, 2), np.int8)
    scale, zero = np.array(0.1, np.float32), np.array(0, np.int8)
    found = visit("QLinearConcat", [scale, zero, x, np.full(4, 0.1, np.float32), np.zeros(4, np.int8), x, scale, zero],
                  {"axis": 1}, domain="com.microsoft", at=("out0", 1))
    assert found.frozen and "is not per tensor" in found.frozen
    ok = visit("QLinearConcat", [scale, zero, x, scale, zero, x, scale, zero], {"axis": 1}, domain="com.microsoft",
               at=("out0", 1))
    assert ok.frozen is None and set(ok.moves) == {("in2", 1), ("in5", 1)}


def test_int4_weights_count_as_parameters_not_bytes(tmp_path):
    """MatMulNBits packs two int4 weights to a byte: the parameter count counts weights, so a
    quantized model has (about) the float model's parameters and loses the same share when pruned."""
    nbits = pytest.importorskip("onnxruntime.quantization.matmul_nbits_quantizer")  # needs onnx_ir
    from onnxprune.testing import model_stats
    nodes = [node("MatMul", ["x", "w1"], "h"), node("Relu", ["h"], "r"), node("MatMul", ["r", "w2"], "y")]
    model = make_model(nodes, {"x": [2, 3, 64]}, {"y": [2, 3, 16]}, {"w1": weight(64, 96), "w2": weight(96, 16)})
    quantizer = nbits.MatMulNBitsQuantizer(model, block_size=32, is_symmetric=True)
    quantizer.process()
    path = save(quantizer.model.model, tmp_path, "nbits.onnx")
    stats = model_stats(analyze(path))
    weights = 64 * 96 + 96 * 16
    scales = 96 * 2 + 16 * 3  # one per output feature and block of 32
    assert stats.params == weights + scales


def test_oracle_is_exact_where_ort_saturates_int8_products(tmp_path):
    """MatMulInteger of dynamically quantized activations (uint8) by full-range int8 weights: on x86 CPUs
    without VNNI, ONNX Runtime sums the u8 x s8 products pairwise in saturating 16 bits, so the model's
    outputs there depend on which channels sit side by side, and pruning changes that. The oracle stores
    such weights as uint8 (value and zero point + 128), for which the products are exact everywhere: it
    must pass with no difference at all, on any CPU."""
    gen = np.random.default_rng(3)
    nodes = [node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             node("MatMulInteger", ["xq", "w1", "xz", "z1"], "h"), node("Cast", ["h"], "hf", to=TensorProto.FLOAT),
             node("Relu", ["hf"], "r"), node("DynamicQuantizeLinear", ["r"], ["rq", "rs", "rz"]),
             node("MatMulInteger", ["rq", "w2", "rz", "z2"], "yi"), node("Cast", ["yi"], "y", to=TensorProto.FLOAT)]
    inits = {"w1": gen.integers(-127, 128, (64, 32)).astype(np.int8), "z1": np.zeros(32, np.int8),
             "w2": gen.integers(-127, 128, (32, 8)).astype(np.int8), "z2": np.zeros(8, np.int8)}
    model = make_model(nodes, {"x": [8, 64]}, {"y": [8, 8]}, inits)
    analysis = analyze(save(model, tmp_path))
    result = analysis.verify(analysis.plan(PruneConfig(ratio=0.5, round_to=1)))
    assert result.passed and result.groups_checked == 1, result.detail
    assert result.comparison.max_abs == 0.0, result.detail
