"""ONNX Runtime's fused ops (FusedConv, FusedGemm, FusedMatMul): pruned through, checked by the oracle,
still fused and runnable afterwards; ORT_ENABLE_EXTENDED files prune like the plain model."""
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from checks import dims
from helpers import make_model, node, param_count, prune_with_oracle, save, weight
from onnxprune import analyze
from onnxprune.cli import main
from onnxprune.errors import BadInputError
from onnxprune.testing import random_inputs, run_model

MS = "com.microsoft"


def ms_node(op: str, inputs: list[str], output: str, **attrs) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], name=f"{op}_{output}", domain=MS, **attrs)


def ms_model(nodes: list, inputs: dict, outputs: dict, inits: dict, input_types: dict | None = None,
             check: bool = True) -> onnx.ModelProto:
    """A model importing com.microsoft; outputs need their shapes (ONNX inference does not know the ops).
    check=False for ORT's ops in the default domain (SimplifiedLayerNormalization), which onnx.checker refuses."""
    types = input_types or {}
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(n, types.get(n, TensorProto.FLOAT), s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    model.ir_version = 8
    if check:
        onnx.checker.check_model(model)
    return model


def contrib_ops(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node if n.domain not in ("", "ai.onnx"))


def assert_runs_fused(model: onnx.ModelProto, pruned: onnx.ModelProto) -> None:
    """The pruned model keeps every contrib op and runs in ONNX Runtime, optimizations on and off."""
    assert contrib_ops(pruned) == contrib_ops(model) and contrib_ops(model)
    feeds = random_inputs(model, {})
    for optimize in (False, True):
        outputs = run_model(pruned, feeds, optimize=optimize).outputs
        assert all(np.isfinite(o).all() for o in outputs)


def test_fused_conv_with_summand_and_depthwise(tmp_path):
    """FusedConv -> FusedConv(Z = the first's output, residual) -> depthwise FusedConv(Clip) -> Conv:
    the summand shares the filters' channels, so one group spans all four."""
    inits = {"w1": weight(8, 3, 3, 3), "b1": weight(8), "w2": weight(8, 8, 3, 3), "b2": weight(8),
             "w3": weight(8, 1, 3, 3), "b3": weight(8), "w4": weight(4, 8, 1, 1)}
    nodes = [ms_node("FusedConv", ["x", "w1", "b1"], "c1", activation="Relu", pads=[1, 1, 1, 1]),
             ms_node("FusedConv", ["c1", "w2", "b2", "c1"], "c2", activation="Relu", pads=[1, 1, 1, 1]),
             ms_node("FusedConv", ["c2", "w3", "b3"], "c3", activation="Clip", activation_params=[0.0, 6.0],
                     group=8, pads=[1, 1, 1, 1]),
             node("Conv", ["c3", "w4"], "y")]
    model = ms_model(nodes, {"x": [1, 3, 8, 8]}, {"y": [1, 4, 8, 8]}, inits)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    assert analysis.graph.shape("c1") == analysis.graph.shape("c3") == (1, 8, 8, 8)  # inferred by the rules
    assert len(plan.groups) == 1
    d = dims(pruned)
    assert d["w1"] == [4, 3, 3, 3] and d["w2"] == [4, 4, 3, 3] and d["w3"] == [4, 1, 3, 3] and d["w4"] == [4, 4, 1, 1]
    group = {a.name: a.i for n in pruned.graph.node if n.output[0] == "c3" for a in n.attribute}["group"]
    assert group == 4
    assert_runs_fused(model, pruned)


def test_fused_gemm_with_activation(tmp_path):
    inits = {"w1": weight(32, 16), "b1": weight(32), "w2": weight(32, 4), "b2": weight(4)}
    nodes = [ms_node("FusedGemm", ["x", "w1", "b1"], "h", transB=1, activation="LeakyRelu", activation_alpha=0.1),
             node("Gemm", ["h", "w2", "b2"], "y")]
    model = ms_model(nodes, {"x": [2, 16]}, {"y": [2, 4]}, inits)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    assert analysis.graph.shape("h") == (2, 32)
    d = dims(pruned)
    assert d["w1"] == [16, 16] and d["b1"] == [16] and d["w2"] == [16, 4]
    assert_runs_fused(model, pruned)


def test_fused_matmul_transposed_weight(tmp_path):
    """FusedMatMul(h, W [N, K], transB=1, alpha): K is W's axis 1 (consumer), N its axis 0 (a root)."""
    inits = {"w1": weight(16, 32), "w2t": weight(24, 32), "w3": weight(24, 8)}
    nodes = [node("MatMul", ["x", "w1"], "h"),
             ms_node("FusedMatMul", ["h", "w2t"], "z", transB=1, alpha=0.5),
             node("Relu", ["z"], "r"), node("MatMul", ["r", "w3"], "y")]
    model = ms_model(nodes, {"x": [2, 5, 16]}, {"y": [2, 5, 8]}, inits)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, min_groups=2)
    assert analysis.graph.shape("z") == (2, 5, 24)
    d = dims(pruned)
    assert d["w1"] == [16, 16] and d["w2t"] == [12, 16] and d["w3"] == [12, 8]
    assert_runs_fused(model, pruned)


def test_fused_matmul_transposed_input(tmp_path):
    """transA=1: A's last two axes swap, so A's axis -2 is the contracted one."""
    inits = {"w1": weight(16, 32), "w2": weight(32, 8)}
    nodes = [node("MatMul", ["x", "w1"], "h"), node("Transpose", ["h"], "ht", perm=[0, 2, 1]),
             ms_node("FusedMatMul", ["ht", "w2"], "y", transA=1)]
    model = ms_model(nodes, {"x": [2, 5, 16]}, {"y": [2, 5, 8]}, inits)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    d = dims(pruned)
    assert d["w1"] == [16, 16] and d["w2"] == [16, 8]
    assert_runs_fused(model, pruned)


def small_cnn() -> onnx.ModelProto:
    """Conv-BN-Relu stem, a residual block, pooled into Gemm-Relu-Gemm: what ORT fuses at EXTENDED."""
    c = 16
    inits = {"w0": weight(c, 3, 3, 3), "w1": weight(c, c, 3, 3), "w2": weight(c, c, 3, 3),
             "g1": weight(32, c), "gb1": weight(32), "g2": weight(10, 32), "gb2": weight(10)}
    for k in range(3):
        inits.update({f"s{k}": (1 + 0.1 * weight(c, scale=1.0)), f"o{k}": weight(c, scale=0.1),
                      f"m{k}": weight(c, scale=0.1), f"v{k}": np.abs(weight(c, scale=1.0)) + 0.5})
    nodes = []
    src = "x"
    for k, w in enumerate(("w0", "w1", "w2")):
        nodes += [node("Conv", [src, w], f"conv{k}", pads=[1, 1, 1, 1]),
                  node("BatchNormalization", [f"conv{k}", f"s{k}", f"o{k}", f"m{k}", f"v{k}"], f"bn{k}")]
        if k < 2:
            nodes.append(node("Relu", [f"bn{k}"], f"relu{k}"))
            src = f"relu{k}"
    nodes += [node("Add", ["bn2", "relu0"], "res"), node("Relu", ["res"], "block"),
              node("GlobalAveragePool", ["block"], "pool"), node("Flatten", ["pool"], "flat"),
              node("Gemm", ["flat", "g1", "gb1"], "fc1", transB=1), node("Relu", ["fc1"], "fc1r"),
              node("Gemm", ["fc1r", "g2", "gb2"], "y", transB=1)]
    return make_model(nodes, {"x": [1, 3, 16, 16]}, {"y": [1, 10]}, inits)


def ort_saved(model: onnx.ModelProto, tmp_path, level) -> onnx.ModelProto:
    """The model as ONNX Runtime's optimizer saves it at `level`."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(save(model, tmp_path, "plain.onnx"), opts, providers=["CPUExecutionProvider"])
    return onnx.load(str(tmp_path / "optimized.onnx"))


def test_ort_extended_file_prunes_like_the_plain_model(tmp_path):
    plain = small_cnn()
    fused = ort_saved(plain, tmp_path, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    assert {"FusedConv", "FusedGemm"} <= set(contrib_ops(fused))
    (tmp_path / "p").mkdir()
    (tmp_path / "f").mkdir()
    _, _, plain_pruned = prune_with_oracle(plain, tmp_path / "p", ratio=0.3)
    analysis, plan, fused_pruned = prune_with_oracle(fused, tmp_path / "f", ratio=0.3)
    plain_removed = param_count(plain) - param_count(plain_pruned)
    fused_removed = param_count(fused) - param_count(fused_pruned)
    assert fused_removed >= 0.95 * plain_removed > 0
    assert not [g for g in analysis.groups if g.frozen_reason and "graph output" not in g.frozen_reason]
    assert_runs_fused(fused, fused_pruned)


def test_nchwc_layout_is_refused_with_a_reason(tmp_path):
    blocked = ort_saved(small_cnn(), tmp_path, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    if not any(n.domain == "com.microsoft.nchwc" for n in blocked.graph.node):
        pytest.skip("this CPU gets no NCHWc layout from ONNX Runtime")
    path = save(blocked, tmp_path, "blocked.onnx")
    with pytest.raises(BadInputError, match="NCHWc layout .* ORT_ENABLE_EXTENDED"):
        analyze(path)
    assert main([path, "-o", str(tmp_path / "out.onnx")]) == 2


@pytest.mark.parametrize("kv", [4, 2], ids=["mha", "gqa"])
def test_ort_extended_attention_scores_in_fused_matmul(tmp_path, kv):
    """ORT_ENABLE_EXTENDED folds the 1/sqrt(d) scale (and, after the GQA repeat, K's transpose) into
    FusedMatMul(q, k, alpha, transB): whole heads are still pruned through it, as in the decomposed graph."""
    from test_rules_attention import attention_block

    fused = ort_saved(attention_block(kv=kv), tmp_path, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    matmul = {a.name: helper.get_attribute_value(a)
              for a in next(n for n in fused.graph.node if n.op_type == "FusedMatMul").attribute}
    assert matmul["alpha"] == pytest.approx(0.5) and matmul.get("transB", 0) == (kv != 4)
    analysis, plan, pruned = prune_with_oracle(fused, tmp_path, ratio=0.5)
    (heads,) = [g for g in analysis.groups if "attention heads" in g.kinds]
    assert heads.exact and heads.unit_count == kv
    assert_runs_fused(fused, pruned)


def test_ort_extended_fused_qkv_split_and_squeezed(tmp_path):
    """torch's MHA takes q, k, v out of one projection by Gather; ORT_ENABLE_EXTENDED turns those into
    Split(size-1 parts) + Squeeze: the parts axis still only picks parts, so whole heads are pruned."""
    from test_rules_attention import D, H, attention_block

    fused = ort_saved(attention_block(fused="gather"), tmp_path, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    ops = Counter(n.op_type for n in fused.graph.node)
    assert ops["Split"] == 1 and ops["Squeeze"] == 3 and not ops["Gather"]
    analysis, plan, pruned = prune_with_oracle(fused, tmp_path, ratio=0.5)
    (heads,) = [g for g in analysis.groups if "attention heads" in g.kinds]
    assert heads.exact and heads.unit_count == H
    qkv = [d for name, d in dims(pruned).items() if d[-1] == 3 * D // 2 or d[0] == 3 * D // 2]
    assert qkv, dims(pruned)
    assert_runs_fused(fused, pruned)


@pytest.mark.parametrize("op", ["FusedConv", "FusedGemm"])
def test_bias_compensation_into_a_fused_consumer_is_exact(tmp_path, op):
    """Constant channels (zero weights, positive bias, Relu) removed: their contribution folds into the
    fused consumer's bias, which it adds before its activation, so the output is unchanged."""
    from test_compensate import _data, _error, _prune

    if op == "FusedConv":
        w1, b1 = weight(6, 3, 3, 3), np.abs(weight(6)) + 0.5
        w1[[1, 4]] = 0
        nodes = [ms_node(op, ["x", "w1", "b1"], "c", activation="Relu", pads=[1, 1, 1, 1]),
                 ms_node(op, ["c", "w2"], "y", activation="Relu")]  # no padding: constant inputs stay constant
        inits, shape = {"w1": w1, "b1": b1, "w2": weight(5, 6, 3, 3)}, (3, 9, 9)
        model = ms_model(nodes, {"x": ["N", *shape]}, {"y": ["N", 5, 7, 7]}, inits)
    else:
        w1, b1 = weight(6, 8), np.abs(weight(6)) + 0.5
        w1[[1, 4]] = 0
        nodes = [ms_node(op, ["x", "w1", "b1"], "c", transB=1, activation="Relu"),
                 ms_node(op, ["c", "w2"], "y", transB=1, activation="Relu")]
        inits, shape = {"w1": w1, "b1": b1, "w2": weight(5, 6)}, (8,)
        model = ms_model(nodes, {"x": ["N", *shape]}, {"y": ["N", 5]}, inits)
    path = save(model, tmp_path)
    data, x = _data(shape, 32), np.random.default_rng(3).standard_normal((4, *shape)).astype(np.float32)
    assert _error(model, _prune(path, "c", [1, 4], data, "none"), x) > 1e-2
    fixed = _prune(path, "c", [1, 4], data, "bias")
    assert _error(model, fixed, x) < 1e-5 and contrib_ops(fixed) == contrib_ops(model)


def test_value_info_gives_shapes_of_ops_without_a_shape_function(tmp_path):
    """An op neither ONNX nor a rule knows: the shape the model itself declares is used, and inference
    continues behind it (the Conv after it gets its shape, so its channels are followed)."""
    inits = {"w1": weight(8, 3, 1, 1), "w2": weight(4, 8, 1, 1)}
    nodes = [node("Conv", ["x", "w1"], "c1"), ms_node("SomeFutureOp", ["c1"], "u"), node("Conv", ["u", "w2"], "c2"),
             node("Relu", ["c2"], "y")]
    model = ms_model(nodes, {"x": [1, 3, 4, 4]}, {"y": [1, 4, 4, 4]}, inits)
    bare = analyze(save(model, tmp_path, "bare.onnx")).graph
    assert bare.shape("u") is None and bare.shape("c2") is None
    model.graph.value_info.append(helper.make_tensor_value_info("u", TensorProto.FLOAT, [1, 8, 4, 4]))
    analysis = analyze(save(model, tmp_path))
    assert analysis.graph.shape("u") == (1, 8, 4, 4) and analysis.graph.shape("c2") == (1, 4, 4, 4)
    frozen = [g.frozen_reason for g in analysis.groups if g.root == ("c1", 1)]
    assert frozen and "SomeFutureOp" in frozen[0] and "no pruning rule" in frozen[0]


def test_fused_matmul_batch_transposes_in_attention(tmp_path):
    """torchvision's attention layout [S, B, heads, hd]: ORT folds the transposes to [B, heads, S, hd]
    into FusedMatMul(transBatchA / transBatchB), whose views put axis 0 behind the batch axes."""
    s, b, h, hd = 5, 2, 4, 4
    d = h * hd
    inits = {f"w{p}": weight(d, d) for p in "qkvo"}
    inits["heads"] = np.array([s, b, h, hd], np.int64)
    inits["merged"] = np.array([s, b, d], np.int64)
    nodes = []
    for p in "qkv":
        nodes += [node("MatMul", ["x", f"w{p}"], p), node("Reshape", [p, "heads"], f"{p}h")]
    nodes += [ms_node("FusedMatMul", ["qh", "kh"], "scores", transBatchA=1, transBatchB=1, transB=1, alpha=0.5),
              node("Softmax", ["scores"], "probs", axis=-1),
              ms_node("FusedMatMul", ["probs", "vh"], "ctx", transBatchB=1),
              node("Transpose", ["ctx"], "ctx_t", perm=[2, 0, 1, 3]), node("Reshape", ["ctx_t", "merged"], "ctx_m"),
              node("MatMul", ["ctx_m", "wo"], "y")]
    model = ms_model(nodes, {"x": [s, b, d]}, {"y": [s, b, d]}, inits)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    assert analysis.graph.shape("scores") == (b, h, s, s) and analysis.graph.shape("ctx") == (b, h, s, hd)
    (heads,) = [g for g in analysis.groups if "attention heads" in g.kinds]
    assert heads.exact and heads.unit_count == h
    assert dims(pruned)["wq"] == dims(pruned)["wv"] == [d, d // 2] and dims(pruned)["wo"] == [d // 2, d]
    assert_runs_fused(model, pruned)
