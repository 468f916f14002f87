"""ONNX Runtime's contrib ops (transformers optimizer output): activations with folded biases, fused
normalisations, Attention / MultiHeadAttention / GroupQueryAttention / RotaryEmbedding. Each is pruned
through and checked by the oracle; the pruned model keeps its contrib ops and runs in ONNX Runtime."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from checks import attr, dims, init
from helpers import node, prune_with_oracle, save, weight
from onnxprune import analyze
from onnxprune.cli import main
from onnxprune.testing import (available_providers, compare, make_plan, oracle_models, random_inputs, run_model,
                               weight_scores)
from test_rules_fused import assert_runs_fused, contrib_ops, ms_model, ms_node

B, S, D, H, F, V = 2, 6, 16, 4, 32, 20
HD = D // H


def _heads_groups(analysis):
    return [g for g in analysis.groups if "attention heads" in g.kinds]


def bert_layer(qkv_sizes: list[int] | None = None, classifier: bool = False) -> onnx.ModelProto:
    """EmbedLayerNormalization -> Attention -> SkipLayerNormalization -> FFN (BiasGelu) -> SkipLayerNormalization."""
    q, k, v = qkv_sizes or (D, D, D)
    inits = {"word": weight(V, D, scale=1.0), "pos": weight(S, D, scale=1.0), "seg": weight(2, D, scale=1.0),
             "eg": 1 + 0.1 * weight(D, scale=1.0), "eb": weight(D, scale=0.1),
             "wqkv": weight(D, q + k + v), "bqkv": weight(q + k + v, scale=0.1), "wo": weight(v, D),
             "bo": weight(D, scale=0.1), "g1": 1 + 0.1 * weight(D, scale=1.0), "b1": weight(D, scale=0.1),
             "w1": weight(D, F), "bf1": weight(F, scale=0.1), "w2": weight(F, D), "bf2": weight(D, scale=0.1),
             "g2": 1 + 0.1 * weight(D, scale=1.0), "b2": weight(D, scale=0.1)}
    sizes = {"qkv_hidden_sizes": [q, k, v]} if qkv_sizes else {}
    nodes = [helper.make_node("EmbedLayerNormalization", ["ids", "segs", "word", "pos", "seg", "eg", "eb"],
                              ["emb", "mask_index"], name="embed", domain="com.microsoft"),
             ms_node("Attention", ["emb", "wqkv", "bqkv"], "att", num_heads=H, **sizes),
             node("MatMul", ["att", "wo"], "o"),
             ms_node("SkipLayerNormalization", ["o", "emb", "g1", "b1", "bo"], "ln1"),
             node("MatMul", ["ln1", "w1"], "f1"), ms_node("BiasGelu", ["f1", "bf1"], "gelu"),
             node("MatMul", ["gelu", "w2"], "f2"),
             ms_node("SkipLayerNormalization", ["f2", "ln1", "g2", "b2", "bf2"], "y")]
    out = "y"
    if classifier:
        inits["wc"] = weight(D, 3)
        nodes.append(node("MatMul", ["y", "wc"], "logits"))
        out = "logits"
    return ms_model(nodes, {"ids": [B, S], "segs": [B, S]}, {out: [B, S, 3 if classifier else D]}, inits,
                    {"ids": TensorProto.INT32, "segs": TensorProto.INT32})


def test_bert_layer_prunes_heads_and_ffn(tmp_path):
    model = bert_layer()
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, min_groups=2)
    g = analysis.graph
    assert g.shape("emb") == g.shape("att") == g.shape("ln1") == (B, S, D) and g.shape("f1") == (B, S, F)
    (heads,) = _heads_groups(analysis)
    assert heads.exact and heads.unit_count == H and heads.size == D
    d = dims(pruned)
    assert d["wqkv"] == [D, 3 * D // 2] and d["bqkv"] == [3 * D // 2] and d["wo"] == [D // 2, D]
    assert d["w1"] == [D, F // 2] and d["bf1"] == [F // 2] and d["w2"] == [F // 2, D]
    assert attr(pruned, "Attention_att", "num_heads") == H // 2
    # the same heads leave q, k and v: the kept columns of each third are the same whole heads
    before, after = init(model, "wqkv"), init(pruned, "wqkv")
    kept = [[int(np.flatnonzero((before[:, t * D:(t + 1) * D] == col[:, None]).all(axis=0))[0])
             for col in after[:, t * D // 2:(t + 1) * D // 2].T] for t in range(3)]
    assert kept[0] == kept[1] == kept[2] and len({c // HD for c in kept[0]}) == H // 2
    assert_runs_fused(model, pruned)


def test_attention_with_qkv_hidden_sizes(tmp_path):
    """Value heads narrower than query / key heads: qkv_hidden_sizes follows every part."""
    model = bert_layer(qkv_sizes=[D, D, D // 2])
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, min_groups=2)
    assert dims(pruned)["wqkv"] == [D, D // 2 + D // 2 + D // 4] and dims(pruned)["wo"] == [D // 4, D]
    assert attr(pruned, "Attention_att", "qkv_hidden_sizes") == [D // 2, D // 2, D // 4]
    assert attr(pruned, "Attention_att", "num_heads") == H // 2
    assert_runs_fused(model, pruned)


def test_hidden_size_is_inexact_through_fused_norms(tmp_path):
    """The residual stream crosses EmbedLayerNormalization and SkipLayerNormalization: inexact, pruned
    only with --inexact; the embedding tables, gammas and biases are cut with it."""
    model = bert_layer(classifier=True)
    path = save(model, tmp_path)
    analysis = analyze(path)
    residual = next(g for g in analysis.groups if any(s.tensor == "word" for s in g.slices))
    assert residual.prunable and not residual.exact
    assert any("EmbedLayerNormalization" in r for r in residual.inexact_reasons)
    assert any("SkipLayerNormalization" in r for r in residual.inexact_reasons)
    out = tmp_path / "out.onnx"
    assert main([path, "--ratio", "0.5", "--inexact", "--round-to", "1", "-o", str(out), "-q"]) == 0
    pruned = onnx.load(str(out))
    d = dims(pruned)
    assert d["word"] == [V, D // 2] and d["g1"] == d["b2"] == d["bo"] == [D // 2] and d["wc"] == [D // 2, 3]
    assert d["wqkv"][0] == D // 2
    assert_runs_fused(model, pruned)


BIASED = ("FastGelu", "BiasGelu", "BiasSplitGelu", "BiasAdd")


def ffn(act: str, simplified: bool = False, stem: bool = False) -> onnx.ModelProto:
    """x -> (Simplified)LayerNorm -> MatMul -> contrib activation -> MatMul -> Skip(Simplified)LayerNorm.

    stem: x is first projected (win) and the output classified (wc), so the residual stream is prunable."""
    wide = 2 * F if act == "BiasSplitGelu" else F
    inits = {"s": 1 + 0.1 * weight(D, scale=1.0), "w1": weight(D, wide), "w2": weight(F, D),
             "g": 1 + 0.1 * weight(D, scale=1.0)}
    if not simplified:
        inits["beta"] = weight(D, scale=0.1)
    if act in BIASED:
        inits["bf1"] = weight(wide, scale=0.1)
    nodes = []
    x = "x"
    if stem:
        inits.update({"win": weight(8, D), "wc": weight(D, 3)})
        nodes.append(node("MatMul", ["x", "win"], "h"))
        x = "h"
    nodes += [node("SimplifiedLayerNormalization", [x, "s"], "n", axis=-1) if simplified
              else node("LayerNormalization", [x, "s"], "n", axis=-1),
              node("MatMul", ["n", "w1"], "f1")]
    if act in ("FastGelu", "BiasGelu", "BiasSplitGelu"):
        nodes.append(ms_node(act, ["f1", "bf1"], "a"))
    elif act == "BiasAdd":
        inits["w1b"] = weight(D, F)
        nodes += [node("MatMul", ["n", "w1b"], "f1b"), ms_node("BiasAdd", ["f1", "bf1", "f1b"], "a")]
    else:
        nodes.append(ms_node(act, ["f1"], "a", **({"alpha": 1.5} if act == "QuickGelu" else {})))
    nodes.append(node("MatMul", ["a", "w2"], "f2"))
    skip_norm = "SkipSimplifiedLayerNormalization" if simplified else "SkipLayerNormalization"
    params = ["g"] if simplified else ["g", "beta"]
    outputs = ["y", "", "", "skip_sum"] if stem else ["y"]  # the stem model reads the sum (output 3) too
    nodes.append(helper.make_node(skip_norm, ["f2", x] + params, outputs, name=f"{skip_norm}_y",
                                  domain="com.microsoft"))
    if stem:
        nodes += [node("Add", ["y", "skip_sum"], "z"), node("MatMul", ["z", "wc"], "logits")]
        return ms_model(nodes, {"x": [B, S, 8]}, {"logits": [B, S, 3]}, inits, check=not simplified)
    return ms_model(nodes, {"x": [B, S, D]}, {"y": [B, S, D]}, inits, check=not simplified)


def prune_unchecked(model: onnx.ModelProto, tmp_path, ratio: float):
    """helpers.prune_with_oracle without onnx.checker, which refuses ORT's default-domain ops."""
    analysis = analyze(save(model, tmp_path))
    scores = weight_scores(analysis, "l1")
    plan = make_plan(analysis, scores, ratio)
    assert plan.groups
    result = analysis.verify(plan)
    assert result.passed, result.detail
    return analysis, plan, analysis.apply(plan).proto


CPU_ACTS = ["Gelu", "QuickGelu", "FastGelu", "BiasGelu"]


@pytest.mark.parametrize("act", CPU_ACTS)
@pytest.mark.parametrize("simplified", [False, True], ids=["layernorm", "rmsnorm"])
def test_ffn_through_contrib_activation(tmp_path, act, simplified):
    model = ffn(act, simplified)
    analysis, plan, pruned = (prune_unchecked if simplified else prune_with_oracle)(model, tmp_path, ratio=0.5)
    assert analysis.graph.shape("a") == (B, S, F) and analysis.graph.shape("y") == (B, S, D)
    d = dims(pruned)
    assert d["w1"] == [D, F // 2] and d["w2"] == [F // 2, D] and d.get("bf1", [F // 2]) == [F // 2]
    assert_runs_fused(model, pruned)


@pytest.mark.parametrize("act", ["BiasAdd", "BiasSplitGelu"])
def test_cuda_only_activations_cut_the_right_slices(tmp_path, act):
    """ONNX Runtime has these on CUDA only: the slices are checked, then the oracle's zeroed and pruned
    models are compared with the op written out in CPU ops (and the real oracle runs where CUDA is)."""
    model = ffn(act)
    path = save(model, tmp_path)
    analysis = analyze(path)
    assert analysis.graph.shape("a") == (B, S, F)
    group = next(g for g in analysis.groups if g.root == ("f1", 2))
    assert group.exact and group.frozen_reason is None
    cut = {(s.tensor, s.axis): sorted(zip(s.positions.tolist(), s.roots.tolist())) for s in group.slices}
    if act == "BiasSplitGelu":  # output channel c reads inputs c and F + c: one unit
        assert group.unit_count == F
        assert {p for p, _ in cut[("w2", 0)]} == set(range(F))
        assert {p for p, _ in cut[("bf1", 0)]} == set(range(2 * F))
        assert {p % F for p, r in cut[("bf1", 0)] if r == 5} == {5}
    else:  # the skip's projection and the bias go with the channels
        assert ("w1b", 1) in cut and ("bf1", 0) in cut and ("w2", 0) in cut
    if "cuda" in available_providers():
        prune_with_oracle(model, tmp_path, ratio=0.5)
    # on the CPU: the oracle's two models with the op written out in ops ONNX Runtime has there
    scores = weight_scores(analysis, "l1")
    plan = make_plan(analysis, scores, 0.5)
    zeroed, pruned = oracle_models(analysis, plan)
    assert contrib_ops(pruned.proto) == contrib_ops(model)
    feeds = random_inputs(model, {})
    reference, candidate = (run_model(_written_out(m.proto), feeds).outputs for m in (zeroed, pruned))
    assert compare(reference, candidate).relative < 1e-5


def _written_out(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with BiasAdd / BiasSplitGelu as standard ops (and com.microsoft Gelu), sized by the bias."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    sizes = {t.name: list(t.dims) for t in out.graph.initializer}
    nodes = []
    for n in out.graph.node:
        x, bias, y = n.input[0], n.input[1] if len(n.input) > 1 else "", n.output[0]
        if n.op_type == "BiasAdd":
            nodes += [node("Add", [x, bias], f"{y}_b"), node("Add", [f"{y}_b", n.input[2]], y)]
        elif n.op_type == "BiasSplitGelu":
            half = sizes[bias][0] // 2
            for name, value in ((f"{y}_0", 0), (f"{y}_h", half), (f"{y}_2h", 2 * half), (f"{y}_ax", -1)):
                out.graph.initializer.append(numpy_helper.from_array(np.array([value], np.int64), name))
            nodes += [node("Add", [x, bias], f"{y}_s"),
                      node("Slice", [f"{y}_s", f"{y}_0", f"{y}_h", f"{y}_ax"], f"{y}_left"),
                      node("Slice", [f"{y}_s", f"{y}_h", f"{y}_2h", f"{y}_ax"], f"{y}_right"),
                      ms_node("Gelu", [f"{y}_right"], f"{y}_g"), node("Mul", [f"{y}_left", f"{y}_g"], y)]
        else:
            nodes.append(n)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out



@pytest.mark.parametrize("simplified", [False, True], ids=["layernorm", "rmsnorm"])
def test_residual_stream_through_skip_norms_is_inexact(tmp_path, simplified):
    """The hidden axis crosses (Simplified)LayerNormalization and Skip(Simplified)LayerNormalization:
    inexact; with --inexact the norms' parameters and every projection's hidden side are cut."""
    model = ffn("FastGelu", simplified, stem=True)
    path = save(model, tmp_path)
    analysis = analyze(path)
    residual = next(g for g in analysis.groups if g.root == ("h", 2))
    assert residual.prunable and not residual.exact
    skip = "SkipSimplifiedLayerNormalization" if simplified else "SkipLayerNormalization"
    assert any(skip in r for r in residual.inexact_reasons)
    out = tmp_path / "out.onnx"
    assert main([path, "--ratio", "0.5", "--inexact", "--round-to", "1", "-o", str(out), "-q"]) == 0
    pruned = onnx.load(str(out))
    d = dims(pruned)
    assert d["win"] == [8, D // 2] and d["s"] == d["g"] == [D // 2] and d["w1"][0] == D // 2
    assert d["w2"][1] == D // 2 and d["wc"] == [D // 2, 3]
    assert d.get("beta", [D // 2]) == [D // 2] and ("beta" in d) != simplified
    assert_runs_fused(model, pruned)


def attention_block(op: str, rope: bool = False, kv: int = H, hd: int = HD) -> onnx.ModelProto:
    """Q/K/V projections -> [RotaryEmbedding on q, k] -> MultiHeadAttention / GroupQueryAttention -> out proj.
    Model width is H * hd (ORT's GroupQueryAttention wants head sizes in multiples of 8)."""
    d, kv_dim = H * hd, kv * hd
    inits = {"wq": weight(D, d), "wk": weight(D, kv_dim), "wv": weight(D, kv_dim), "wo": weight(d, D)}
    nodes = [node("MatMul", ["x", f"w{p}"], p) for p in "qkv"]
    q, k = "q", "k"
    if rope:
        inits.update({"pos_ids": np.tile(np.arange(S, dtype=np.int64), (B, 1)),
                      "cos": weight(S, hd // 2, scale=1.0), "sin": weight(S, hd // 2, scale=1.0)})
        for p, heads in (("q", H), ("k", kv)):
            nodes.append(ms_node("RotaryEmbedding", [p, "pos_ids", "cos", "sin"], f"{p}_rot", num_heads=heads))
        q, k = "q_rot", "k_rot"
    if op == "MultiHeadAttention":
        inits.update({"bqkv": weight(3 * d, scale=0.1), "abias": weight(1, H, S, S, scale=0.1)})
        nodes.append(ms_node(op, [q, k, "v", "bqkv", "", "abias"], "att", num_heads=H))
    else:
        inits.update({"seqlens": np.full(B, S - 1, np.int32), "total": np.array(S, np.int32)})
        nodes.append(helper.make_node(op, [q, k, "v", "", "", "seqlens", "total"], ["att", "pk", "pv"],
                                      name="gqa", domain="com.microsoft", num_heads=H, kv_num_heads=kv))
    nodes.append(node("MatMul", ["att", "wo"], "y"))
    return ms_model(nodes, {"x": [B, S, D]}, {"y": [B, S, D]}, inits)


@pytest.mark.parametrize("rope", [False, True], ids=["plain", "rotary"])
def test_multi_head_attention_prunes_whole_heads(tmp_path, rope):
    model = attention_block("MultiHeadAttention", rope)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    assert analysis.graph.shape("att") == (B, S, D)
    (heads,) = _heads_groups(analysis)
    assert heads.exact and heads.unit_count == H
    d = dims(pruned)
    assert d["wq"] == d["wk"] == d["wv"] == [D, D // 2] and d["wo"] == [D // 2, D]
    assert d["bqkv"] == [3 * D // 2] and d["abias"] == [1, H // 2, S, S]
    assert attr(pruned, "MultiHeadAttention_att", "num_heads") == H // 2
    if rope:
        assert attr(pruned, "RotaryEmbedding_q_rot", "num_heads") == H // 2 and d["cos"] == [S, HD // 2]
    assert_runs_fused(model, pruned)


@pytest.mark.parametrize("rope", [False, True], ids=["plain", "rotary"])
def test_group_query_attention_prunes_kv_heads_with_their_query_heads(tmp_path, rope):
    hd = 8
    model = attention_block("GroupQueryAttention", rope, kv=2, hd=hd)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    assert analysis.graph.shape("att") == (B, S, H * hd) and analysis.graph.shape("pk") == (B, 2, S, hd)
    (heads,) = _heads_groups(analysis)
    assert heads.exact and heads.unit_count == 2  # one unit per KV head, with its two query heads
    d = dims(pruned)
    assert d["wq"] == [D, H * hd // 2] and d["wk"] == d["wv"] == [D, hd] and d["wo"] == [H * hd // 2, D]
    assert attr(pruned, "gqa", "num_heads") == H // 2 and attr(pruned, "gqa", "kv_num_heads") == 1
    if rope:
        assert attr(pruned, "RotaryEmbedding_k_rot", "num_heads") == 1
    assert_runs_fused(model, pruned)


def test_kv_cache_state_freezes_the_heads(tmp_path):
    """past / present key-value tensors carry the head count across calls: not followed."""
    model = attention_block("MultiHeadAttention")
    mha = next(n for n in model.graph.node if n.op_type == "MultiHeadAttention")
    mha.output.extend(["present_k", "present_v"])
    analysis = analyze(save(model, tmp_path))
    reasons = [g.frozen_reason for g in analysis.groups if g.frozen_reason]
    assert any("key-value state" in r for r in reasons) and not _heads_groups(analysis)


def _gqa_with_cache(hd: int = 8, kv: int = 2, past: int = 3) -> onnx.ModelProto:
    """GroupQueryAttention as ONNX Runtime's model builder writes a decoder layer: past key / value graph
    inputs [1, kv, P, hd], present key / value graph outputs (batch 1: ORT's kernel wants it for a prompt
    with past context)."""
    d, kv_dim = H * hd, kv * hd
    inits = {"wq": weight(D, d), "wk": weight(D, kv_dim), "wv": weight(D, kv_dim), "wo": weight(d, D),
             "seqlens": np.full(1, past + S - 1, np.int32), "total": np.array(past + S, np.int32)}
    nodes = [node("MatMul", ["x", f"w{p}"], p) for p in "qkv"]
    nodes.append(helper.make_node("GroupQueryAttention", ["q", "k", "v", "past_key_values.0.key",
                                                          "past_key_values.0.value", "seqlens", "total"],
                                  ["att", "present.0.key", "present.0.value"], name="gqa", domain="com.microsoft",
                                  num_heads=H, kv_num_heads=kv))
    nodes.append(node("MatMul", ["att", "wo"], "y"))
    cache, present = [1, kv, past, hd], [1, kv, past + S, hd]
    return ms_model(nodes, {"x": [1, S, D], "past_key_values.0.key": cache, "past_key_values.0.value": cache},
                    {"y": [1, S, D], "present.0.key": present, "present.0.value": present}, inits)


def test_group_query_attention_with_a_kv_cache_prunes_heads_with_prune_cache(tmp_path):
    """The KV cache follows GroupQueryAttention's heads axis to the graph's inputs and outputs: the heads
    prune with --prune-cache (new cache shapes), and are left whole without it."""
    from onnxprune import PruneConfig
    path = save(_gqa_with_cache(), tmp_path)
    analysis = analyze(path)
    (heads,) = _heads_groups(analysis)
    assert heads.exact and heads.unit_count == 2 and not heads.frozen_reason
    assert set(heads.interface) == {"past_key_values.0.key", "past_key_values.0.value", "present.0.key",
                                    "present.0.value"}
    assert not analysis.plan(PruneConfig(ratio=0.5, round_to=1)).groups
    plan = analysis.plan(PruneConfig(ratio=0.5, round_to=1, prune_cache=True))
    assert plan.groups and analysis.verify(plan).passed
    pruned = analysis.apply(plan).proto
    d = dims(pruned)
    assert d["wk"] == d["wv"] == [D, 8] and attr(pruned, "gqa", "kv_num_heads") == 1
    cache = next(i for i in pruned.graph.input if i.name == "past_key_values.0.key")
    assert [x.dim_value for x in cache.type.tensor_type.shape.dim] == [1, 1, 3, 8]


def test_kv_cache_heads_alone_say_why_nothing_is_pruned(tmp_path, capsys):
    from onnxprune import cli
    path = save(_gqa_with_cache(), tmp_path)
    assert cli.main([path, "-o", str(tmp_path / "out.onnx"), "--ratio", "0.5", "--round-to", "1"]) == 0
    out = capsys.readouterr().out
    assert "nothing pruned: the 1 prunable groups all reach the KV-cache inputs and outputs; --prune-cache" in out
