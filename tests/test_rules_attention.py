"""Multi-head attention blocks in both exporters' styles: whole heads pruned, checked by the oracle."""
import numpy as np
import onnx
import pytest
from helpers import make_model, node, param_count, prune_with_oracle, weight

B, S, D, H, HD = 2, 6, 16, 4, 4


def _reshape_target(name: str, tail: list[int], computed: bool, nodes: list, inits: dict) -> str:
    """[B, S] + tail: a constant (dynamo exporter) or Shape->Gather->Unsqueeze->Concat (older exporter)."""
    if not computed:
        inits[name] = np.array([B, S] + tail, np.int64)
        return name
    parts = []
    for i in range(2):
        inits[f"{name}_i{i}"] = np.array(i, np.int64)
        inits[f"{name}_ax{i}"] = np.array([0], np.int64)
        nodes += [node("Shape", ["x"], f"{name}_shape{i}"),
                  node("Gather", [f"{name}_shape{i}", f"{name}_i{i}"], f"{name}_d{i}", axis=0),
                  node("Unsqueeze", [f"{name}_d{i}", f"{name}_ax{i}"], f"{name}_u{i}")]
        parts.append(f"{name}_u{i}")
    inits[f"{name}_tail"] = np.array(tail, np.int64)
    nodes.append(node("Concat", parts + [f"{name}_tail"], name, axis=0))
    return name


def _heads(src: str, name: str, heads: int, computed: bool, nodes: list, inits: dict, perm: list[int]) -> str:
    target = _reshape_target(f"{name}_target", [heads, HD], computed, nodes, inits)
    nodes += [node("Reshape", [src, target], f"{name}_r"), node("Transpose", [f"{name}_r"], f"{name}_t", perm=perm)]
    return f"{name}_t"


def _repeat_kv(src: str, name: str, kv: int, nodes: list, inits: dict, key: bool) -> str:
    """GQA: [B, kv, S, HD] -> Unsqueeze -> Expand [B, kv, H/kv, S, HD] -> Reshape [B, H, S, HD]."""
    inits.update({f"{name}_ax": np.array([2], np.int64), f"{name}_shape": np.array([B, kv, H // kv, S, HD], np.int64),
                  f"{name}_flat": np.array([B, H, S, HD], np.int64)})
    nodes += [node("Unsqueeze", [src, f"{name}_ax"], f"{name}_u"),
              node("Expand", [f"{name}_u", f"{name}_shape"], f"{name}_e"),
              node("Reshape", [f"{name}_e", f"{name}_flat"], f"{name}_rep")]
    if key:
        nodes.append(node("Transpose", [f"{name}_rep"], f"{name}_kt", perm=[0, 1, 3, 2]))
        return f"{name}_kt"
    return f"{name}_rep"


def _rope(src: str, name: str, nodes: list, inits: dict) -> str:
    """Rotary embedding on [B, heads, S, HD]: x * cos + rotate_half(x) * sin, halves taken by Slice."""
    half = HD // 2
    inits.update({f"{name}_cos": weight(1, 1, S, HD, scale=1.0), f"{name}_sin": weight(1, 1, S, HD, scale=1.0),
                  f"{name}_s0": np.array([0], np.int64), f"{name}_s1": np.array([half], np.int64),
                  f"{name}_s2": np.array([HD], np.int64), f"{name}_ax": np.array([3], np.int64)})
    nodes += [node("Slice", [src, f"{name}_s0", f"{name}_s1", f"{name}_ax"], f"{name}_x1"),
              node("Slice", [src, f"{name}_s1", f"{name}_s2", f"{name}_ax"], f"{name}_x2"),
              node("Neg", [f"{name}_x2"], f"{name}_nx2"),
              node("Concat", [f"{name}_nx2", f"{name}_x1"], f"{name}_rot", axis=3),
              node("Mul", [src, f"{name}_cos"], f"{name}_c"), node("Mul", [f"{name}_rot", f"{name}_sin"], f"{name}_s"),
              node("Add", [f"{name}_c", f"{name}_s"], f"{name}_out")]
    return f"{name}_out"


def _gathered_qkv(nodes: list, inits: dict) -> None:
    """torch MultiheadAttention: one projection -> Reshape [B, S, 3, D] -> Transpose -> Gather q, k, v."""
    inits.update({"wqkv": weight(D, 3 * D), "bqkv": weight(3 * D), "qkv_target": np.array([B, S, 3, D], np.int64)})
    nodes += [node("MatMul", ["x", "wqkv"], "qkv_mm"), node("Add", ["qkv_mm", "bqkv"], "qkv"),
              node("Reshape", ["qkv", "qkv_target"], "qkv_r"),
              node("Transpose", ["qkv_r"], "qkv_t", perm=[2, 0, 1, 3])]
    for i, p in enumerate("qkv"):
        inits[f"pick_{p}"] = np.array(i, np.int64)
        nodes.append(node("Gather", ["qkv_t", f"pick_{p}"], p, axis=0))


def _expanded_mask(nodes: list, inits: dict) -> str:
    """BERT's legacy export: mask [B,1,1,S] expanded to a target computed from small constants only
    (ConstantOfShape, Mul, Equal, Where): its shape is unknown until the arithmetic is folded."""
    inits.update({"m_len": np.array([4], np.int64), "m_neg": np.array(-1, np.int64),
                  "m_want": np.array([B, 1, S, S], np.int64)})
    nodes += [node("ConstantOfShape", ["m_len"], "m_ones", value=onnx.helper.make_tensor("v", 7, [1], [1])),
              node("Mul", ["m_ones", "m_neg"], "m_negs"), node("Equal", ["m_want", "m_negs"], "m_is_neg"),
              node("Where", ["m_is_neg", "m_ones", "m_want"], "m_shape"),
              node("Expand", ["mask", "m_shape"], "mask_x")]
    return "mask_x"


def attention_block(computed: bool = False, kv: int = H, fused: bool | str = False, rope: bool = False,
                    expand_mask: bool = False) -> onnx.ModelProto:
    """x -> Q/K/V projections -> heads -> softmax(Q K^T / sqrt(d) + mask) V -> merge -> out proj + x.

    fused: True splits one QKV projection equally, "gather" takes it apart like torch's MHA.
    rope: rotary embedding on q and k heads (before the kv repeat, as in Llama).
    """
    inits = {"wo": weight(D, D), "bo": weight(D), "scale": np.array(np.sqrt(HD), np.float32)}
    nodes: list = []
    kv_dim = kv * HD
    mask = _expanded_mask(nodes, inits) if expand_mask else "mask"
    if fused == "gather":
        _gathered_qkv(nodes, inits)
    elif fused:
        inits.update({"wqkv": weight(D, 3 * D), "bqkv": weight(3 * D)})
        nodes += [node("MatMul", ["x", "wqkv"], "qkv_mm"), node("Add", ["qkv_mm", "bqkv"], "qkv"),
                  node("Split", ["qkv"], ["q", "k", "v"], axis=2, num_outputs=3)]
    else:
        for p, n in (("q", D), ("k", kv_dim), ("v", kv_dim)):
            inits.update({f"w{p}": weight(D, n), f"b{p}": weight(n)})
            nodes += [node("MatMul", ["x", f"w{p}"], f"{p}_mm"), node("Add", [f"{p}_mm", f"b{p}"], p)]
    q = _heads("q", "qh", H, computed, nodes, inits, [0, 2, 1, 3])
    if rope:
        q = _rope(q, "qrope", nodes, inits)
        k = _rope(_heads("k", "kh", kv, computed, nodes, inits, [0, 2, 1, 3]), "krope", nodes, inits)
        k = _repeat_kv(k, "krep", kv, nodes, inits, True) if kv != H else _transposed(k, nodes)
        v = _heads("v", "vh", kv, computed, nodes, inits, [0, 2, 1, 3])
        v = _repeat_kv(v, "vrep", kv, nodes, inits, False) if kv != H else v
    elif kv == H:
        k = _heads("k", "kh", kv, computed, nodes, inits, [0, 2, 3, 1])
        v = _heads("v", "vh", kv, computed, nodes, inits, [0, 2, 1, 3])
    else:
        k = _repeat_kv(_heads("k", "kh", kv, computed, nodes, inits, [0, 2, 1, 3]), "krep", kv, nodes, inits, True)
        v = _repeat_kv(_heads("v", "vh", kv, computed, nodes, inits, [0, 2, 1, 3]), "vrep", kv, nodes, inits, False)
    merge = _reshape_target("merge_target", [D], computed, nodes, inits)
    nodes += [node("MatMul", [q, k], "scores"), node("Div", ["scores", "scale"], "scaled"),
              node("Add", ["scaled", mask], "masked"), node("Softmax", ["masked"], "probs", axis=-1),
              node("MatMul", ["probs", v], "ctx"), node("Transpose", ["ctx"], "ctx_t", perm=[0, 2, 1, 3]),
              node("Reshape", ["ctx_t", merge], "ctx_m"), node("MatMul", ["ctx_m", "wo"], "o_mm"),
              node("Add", ["o_mm", "bo"], "o"), node("Add", ["o", "x"], "y")]
    # computed targets come from a dynamic batch: with static inputs they would be folded to constants
    batch = "batch" if computed else B
    return make_model(nodes, {"x": [batch, S, D], "mask": [batch, 1, 1, S]}, {"y": None}, inits,
                      opset=18 if fused is True else 17)


def _transposed(k: str, nodes: list) -> str:
    nodes.append(node("Transpose", [k], f"{k}_t", perm=[0, 1, 3, 2]))
    return f"{k}_t"


FIXED = {"x": (B, S, D), "mask": (B, 1, 1, S)}


def _heads_group(analysis):
    return [g for g in analysis.groups if "attention heads" in g.kinds]


def _const(model: onnx.ModelProto, name: str) -> list[int]:
    return onnx.numpy_helper.to_array({t.name: t for t in model.graph.initializer}[name]).tolist()


@pytest.mark.parametrize("computed", [False, True], ids=["const_targets", "shape_gather_concat"])
def test_whole_heads_are_pruned(tmp_path, computed):
    model = attention_block(computed=computed)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, min_groups=1,
                                               input_shapes=FIXED if computed else None)
    (group,) = _heads_group(analysis)
    assert group.exact and group.unit_count == H and group.size == D
    pg = next(p for p in plan.groups if p.id == group.id)
    assert len(pg.pruned) == (H // 2) * HD  # two whole heads of HD channels
    dims = {t.name: list(t.dims) for t in pruned.graph.initializer}
    assert dims["wq"] == dims["wk"] == dims["wv"] == [D, D // 2] and dims["wo"] == [D // 2, D]
    suffix = "_tail" if computed else ""
    assert _const(pruned, "qh_target" + suffix)[-2:] == [H // 2, HD]
    assert _const(pruned, "merge_target" + suffix)[-1] == D // 2
    assert param_count(pruned) < param_count(model)


def test_pruned_heads_are_the_same_in_q_k_v(tmp_path):
    """Removing head h must remove the same head's columns from Wq, Wk and Wv."""
    model = attention_block()
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.25, min_groups=1)
    before = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    after = {t.name: onnx.numpy_helper.to_array(t) for t in pruned.graph.initializer}
    (group,) = _heads_group(analysis)
    removed = next(p for p in plan.groups if p.id == group.id).pruned
    kept = [c for c in range(D) if c not in removed]
    for w in ("wq", "wk", "wv"):
        np.testing.assert_array_equal(after[w], before[w][:, kept])
    np.testing.assert_array_equal(after["wo"], before["wo"][kept])


def test_grouped_query_attention_couples_q_heads_to_their_kv_head(tmp_path):
    model = attention_block(kv=2)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, min_groups=1)
    (group,) = _heads_group(analysis)
    assert group.unit_count == 2  # one unit per kv head, carrying its two q heads
    dims = {t.name: list(t.dims) for t in pruned.graph.initializer}
    assert dims["wk"] == dims["wv"] == [D, HD] and dims["wq"] == [D, D // 2]
    assert _const(pruned, "krep_shape")[1] == 1 and _const(pruned, "krep_flat")[1] == H // 2


def test_fused_qkv_equal_split(tmp_path):
    """One projection split into three equal parts (opset 18 num_outputs): head h leaves all three."""
    model = attention_block(fused=True)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, min_groups=1)
    (group,) = _heads_group(analysis)
    assert group.unit_count == H
    assert {t.name: list(t.dims) for t in pruned.graph.initializer}["wqkv"] == [D, 3 * D // 2]


def test_contracted_axis_is_inexact(tmp_path):
    """A space reaching the contracted axis of Q K^T (inside heads) changes the scores."""
    from helpers import save
    from onnxprune import analyze

    inits = {"wq": weight(D, D), "wk": weight(D, D)}
    nodes = [node("MatMul", ["x", "wq"], "q"), node("MatMul", ["x", "wk"], "k"),
             node("Transpose", ["k"], "kt", perm=[0, 2, 1]), node("MatMul", ["q", "kt"], "y")]
    analysis = analyze(save(make_model(nodes, {"x": [B, S, D]}, {"y": None}, inits), tmp_path))
    group = next(g for g in analysis.groups if g.root == ("q", 2))
    assert group.prunable and not group.exact
    assert "contracted axis" in group.inexact_reasons[0]


def test_rope_on_head_dim_with_gqa_prunes_whole_kv_heads(tmp_path):
    """Llama: RoPE (Slice halves of head_dim, Neg, Concat, cos/sin Mul) on q and k, kv heads repeated.
    Removing a kv head removes its q heads; head_dim is never cut, so RoPE's tables stay whole."""
    model = attention_block(kv=2, rope=True)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, min_groups=1)
    (group,) = _heads_group(analysis)
    assert group.exact and group.unit_count == 2
    dims = {t.name: list(t.dims) for t in pruned.graph.initializer}
    assert dims["wk"] == dims["wv"] == [D, HD] and dims["wq"] == [D, D // 2] and dims["wo"] == [D // 2, D]
    assert dims["qrope_cos"] == dims["krope_sin"] == [1, 1, S, HD]
    assert _const(pruned, "qrope_s1") == [HD // 2] and _const(pruned, "krope_s2") == [HD]


def test_gathered_qkv_parts_stay_equal(tmp_path):
    """Reshape [.., 3, D] + Gather per part: the parts axis is not pruned, head h leaves q, k and v."""
    model = attention_block(fused="gather")
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, min_groups=1)
    (group,) = _heads_group(analysis)
    assert group.exact and group.unit_count == H
    assert {t.name: list(t.dims) for t in pruned.graph.initializer}["wqkv"] == [D, 3 * D // 2]
    assert _const(pruned, "qkv_target") == [B, S, 3, D // 2]


def _with_fake_quant(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """Each named activation read through a QuantizeLinear -> DequantizeLinear pair (per tensor), as
    quantize_static writes a QDQ model."""
    g = model.graph
    for t in tensors:
        for n in g.node:
            n.input[:] = [f"{t}_dq" if i == t else i for i in n.input]
        g.initializer.extend([onnx.numpy_helper.from_array(np.array(0.05, np.float32), f"{t}_s"),
                              onnx.numpy_helper.from_array(np.array(0, np.int8), f"{t}_z")])
        at = next(i for i, n in enumerate(g.node) if t in n.output) + 1
        g.node.insert(at, node("QuantizeLinear", [t, f"{t}_s", f"{t}_z"], f"{t}_q"))
        g.node.insert(at + 1, node("DequantizeLinear", [f"{t}_q", f"{t}_s", f"{t}_z"], f"{t}_dq"))
    return model


def test_gathered_qkv_parts_through_fake_quantization(tmp_path):
    """A QDQ model puts a Q/DQ pair after the Reshape and after the Transpose: the parts axis still only
    picks parts (Swin-T's QDQ variants froze every attention group on the Gather before)."""
    model = _with_fake_quant(attention_block(fused="gather"), ["qkv_r", "qkv_t"])
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, min_groups=1)
    (group,) = _heads_group(analysis)
    assert group.exact and group.unit_count == H
    assert {t.name: list(t.dims) for t in pruned.graph.initializer}["wqkv"] == [D, 3 * D // 2]


def test_mask_expanded_by_constant_arithmetic_is_folded(tmp_path):
    """The Expand target is computed from small constants only: folded, the mask's shape is known
    and the heads are pruned (before, the heads froze on the mask's unknown size)."""
    model = attention_block(expand_mask=True)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, min_groups=1)
    (group,) = _heads_group(analysis)
    assert group.exact and analysis.graph.shape("mask_x") == (B, 1, S, S)


# -- dynamo's nn.TransformerEncoder: sequence-first heads, Reshape targets computed once from Shape(x) --

LAYERS = 2


def _dim(name: str, axis: int, nodes: list) -> str:
    """Shape(x)[axis:axis+1], the way dynamo reads a size: one element, 1-D."""
    nodes.append(node("Shape", ["x"], name, start=axis, end=axis + 1))
    return name


def _shared_targets(nodes: list, inits: dict, mul_heads: bool) -> tuple[str, str]:
    """The heads and merge Reshape targets, built ONCE from Shape(x) and read by every layer:
    dynamo's sequence-first [S, B*H, HD] with B*H = Mul(B, H) and merge [S, B, D] when `mul_heads`,
    else batch-first [B, S, H, HD] with H a constant and merge [B, S, D]."""
    b, s = _dim("sz_b", 0, nodes), _dim("sz_s", 1, nodes)
    inits.update({"c_hd": np.array([HD], np.int64), "c_d": np.array([D], np.int64),
                  "c_h": np.array([H], np.int64), "c_h0": np.array(H, np.int64), "c_flat": np.array([-1], np.int64)})
    if mul_heads:
        nodes += [node("Squeeze", [b], "sz_b0"), node("Mul", ["sz_b0", "c_h0"], "sz_bh0"),
                  node("Reshape", ["sz_bh0", "c_flat"], "sz_bh"),
                  node("Concat", [s, "sz_bh", "c_hd"], "heads_target", axis=0),
                  node("Concat", [s, b, "c_d"], "merge_target_shared", axis=0)]
    else:
        nodes += [node("Concat", [b, s, "c_h", "c_hd"], "heads_target", axis=0),
                  node("Concat", [b, s, "c_d"], "merge_target_shared", axis=0)]
    return "heads_target", "merge_target_shared"


def encoder_layers(mul_heads: bool, batch: int | str = "batch") -> onnx.ModelProto:
    """LAYERS attention blocks on x [B, S, D] whose Reshapes all read one computed target.

    mul_heads: dynamo's nn.MultiheadAttention inside a batch_first nn.TransformerEncoder (Transpose
    to [S, B, D], heads [S, B*H, HD] -> [B*H, S, HD]); else batch-first heads [B, S, H, HD]."""
    nodes: list = []
    inits: dict = {}
    heads, merge = _shared_targets(nodes, inits, mul_heads)
    # per layout: (move in, move a head tensor, k's move, ctx back to the merge layout)
    moves = ([1, 0, 2], [1, 0, 2], [1, 2, 0], [1, 0, 2]) if mul_heads else (None, [0, 2, 1, 3], [0, 2, 3, 1],
                                                                            [0, 2, 1, 3])
    into, head, key, back = moves
    h = "x"
    for layer in range(LAYERS):
        p = f"l{layer}_"
        src = h
        if into:
            nodes.append(node("Transpose", [h], p + "t", perm=into))
            src = p + "t"
        parts = {}
        for part in "qkv":
            inits.update({f"{p}w{part}": weight(D, D), f"{p}b{part}": weight(D)})
            nodes += [node("MatMul", [src, f"{p}w{part}"], f"{p}{part}_mm"),
                      node("Add", [f"{p}{part}_mm", f"{p}b{part}"], f"{p}{part}"),
                      node("Reshape", [f"{p}{part}", heads], f"{p}{part}_r"),
                      node("Transpose", [f"{p}{part}_r"], f"{p}{part}_h", perm=key if part == "k" else head)]
            parts[part] = f"{p}{part}_h"
        inits[p + "wo"] = weight(D, D)
        nodes += [node("MatMul", [parts["q"], parts["k"]], p + "scores"),
                  node("Softmax", [p + "scores"], p + "probs", axis=-1),
                  node("MatMul", [p + "probs", parts["v"]], p + "ctx"),
                  node("Transpose", [p + "ctx"], p + "ctx_t", perm=back),
                  node("Reshape", [p + "ctx_t", merge], p + "ctx_m"),
                  node("MatMul", [p + "ctx_m", p + "wo"], p + "o")]
        out = p + "o"
        if into:
            nodes.append(node("Transpose", [out], p + "o_b", perm=into))
            out = p + "o_b"
        nodes.append(node("Add", [out, h], p + "y"))
        h = p + "y"
    nodes.append(node("Identity", [h], "y"))
    return make_model(nodes, {"x": [batch, S, D]}, {"y": None}, inits, opset=18)


ONE = {"x": (1, S, D)}


def test_heads_count_computed_by_mul_of_the_batch_freezes(tmp_path):
    """dynamo's [S, B*H, HD] target: B*H = Mul(Shape(x)[0], H) at run time. It does not follow a
    pruned head count by itself (the batch size is not in the group), so the heads freeze
    (before, the group was pruned and the pruned model failed in its Reshape)."""
    from onnxprune import analyze
    from onnxprune.testing import make_plan, random_inputs, run_model
    from helpers import save

    analysis = analyze(save(encoder_layers(mul_heads=True), tmp_path), ONE)
    heads = [g for g in analysis.groups if g.root[0].endswith("q_mm") or "attention heads" in g.kinds]
    assert heads and all(g.frozen_reason for g in heads), [g.frozen_reason for g in heads]
    assert any("x the size of 'x' axis 0, which does not follow the channels" in g.frozen_reason for g in heads), \
        [g.frozen_reason for g in heads]
    scores = {g.id: np.arange(g.unit_count, dtype=float) for g in analysis.prunable}
    plan = make_plan(analysis, scores, 0.5)
    assert analysis.verify(plan, input_shapes=ONE).passed
    pruned = apply_plan_for(analysis, plan)
    run_model(pruned, random_inputs(pruned, ONE))  # the pruned model runs


def apply_plan_for(analysis, plan):
    return analysis.apply(plan).proto


def test_heads_target_shared_by_two_layers_is_not_rewritten_for_one(tmp_path):
    """dynamo computes [B, H, S, HD] once and every layer's q/k/v Reshape reads it. Rewriting H for
    layer 0 would resize layer 1's heads too (before, pruning layer 0 alone left layer 1 broken):
    the heads of each layer freeze with the reason, the rest is pruned and runs."""
    from onnxprune import analyze
    from onnxprune.testing import make_plan
    from helpers import save

    analysis = analyze(save(encoder_layers(mul_heads=False), tmp_path), ONE)
    heads = [g for g in analysis.groups if g.root[0] in ("l0_q_mm", "l1_q_mm")]
    assert len(heads) == LAYERS
    for g in heads:
        assert g.frozen_reason and "outside this group" in g.frozen_reason, g.frozen_reason
        assert "heads_target" in g.frozen_reason or "c_h" in g.frozen_reason
    scores = {g.id: np.arange(g.unit_count, dtype=float) for g in analysis.prunable}
    plan = make_plan(analysis, scores, 0.5)
    one_layer = type(plan)(tuple(pg for pg in plan.groups if pg.root[0].startswith("l0_")), plan.frozen, plan.meta)
    assert analysis.verify(one_layer, input_shapes=ONE).passed


@pytest.mark.parametrize("mul_heads", [True, False], ids=["seq_first_mul", "batch_first_const"])
def test_static_shared_heads_target_is_rewritten_per_layer(tmp_path, mul_heads):
    """With static inputs the shared target folds to a constant; every Reshape gets its own copy,
    so each layer's heads are one group of their own and pruning layer 0 alone rewrites layer 0's
    targets only (before, one folded constant served both layers: layer 1 was left broken)."""
    from onnxprune import analyze
    from onnxprune.testing import make_plan, random_inputs, run_model
    from helpers import save

    analysis = analyze(save(encoder_layers(mul_heads, batch=1), tmp_path))
    heads = _heads_group(analysis)
    assert len(heads) == LAYERS and all(g.exact for g in heads), [g.frozen_reason for g in analysis.groups]
    for layer, g in enumerate(heads):  # per layer: no space of the other layer's attention
        assert {sp.tensor[:3] for sp in g.spaces if sp.tensor.startswith("l")} == {f"l{layer}_"}
    scores = {g.id: np.arange(g.unit_count, dtype=float) for g in analysis.prunable}
    plan = make_plan(analysis, scores, 0.5)
    layer0 = type(plan)(tuple(pg for pg in plan.groups if pg.id == heads[0].id), plan.frozen, plan.meta)
    assert len(layer0.groups) == 1
    result = analysis.verify(layer0)
    assert result.passed, result.detail
    pruned = apply_plan_for(analysis, layer0)
    onnx.checker.check_model(pruned, full_check=True)
    out = run_model(pruned, random_inputs(pruned, {})).outputs[0]
    assert out.shape == (1, S, D)
    dims = {t.name: list(t.dims) for t in pruned.graph.initializer}
    assert dims["l0_wq"] == [D, D // 2] and dims["l1_wq"] == [D, D]
