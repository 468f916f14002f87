"""Gemm and MatMul with a constant weight: output features cut with the next layer's input features."""
import numpy as np
import pytest
from checks import dims, init, kept, removed
from helpers import frozen_reasons, make_model, node, prune_with_oracle, save, weight

from onnxprune import analyze

M, K, N, P = 3, 6, 8, 5


def _gemm_pair(trans_a2: int, trans_b1: int, trans_b2: int, bias_shape: tuple):
    """x [M, K] -> Gemm1 (N features, bias of `bias_shape`) -> Relu -> Gemm2 (P features) -> y.

    With trans_a2 the second Gemm reads the features transposed ([N, M], transA=1).
    """
    inits = {"w1": weight(N, K) if trans_b1 else weight(K, N), "b1": weight(*bias_shape, scale=1.0),
             "w2": weight(P, N) if trans_b2 else weight(N, P), "b2": weight(P)}
    nodes = [node("Gemm", ["x", "w1", "b1"], "h", transB=trans_b1), node("Relu", ["h"], "r")]
    a2 = "r"
    if trans_a2:
        nodes.append(node("Transpose", ["r"], "rt", perm=[1, 0]))
        a2 = "rt"
    nodes.append(node("Gemm", [a2, "w2", "b2"], "y", transA=trans_a2, transB=trans_b2))
    return make_model(nodes, {"x": [M, K]}, {"y": [M, P]}, inits)


@pytest.mark.parametrize("trans_a2", [0, 1])
@pytest.mark.parametrize("trans_b1,trans_b2", [(0, 0), (1, 1), (0, 1), (1, 0)])
def test_gemm_transposes_cut_the_right_weight_axes(tmp_path, trans_a2, trans_b1, trans_b2):
    model = _gemm_pair(trans_a2, trans_b1, trans_b2, (N,))
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    gone = removed(analysis, plan)
    n_axis1, k_axis2 = (0 if trans_b1 else 1), (1 if trans_b2 else 0)
    assert len(gone[("w1", n_axis1)]) == N // 2
    assert gone[("w1", n_axis1)] == gone[("w2", k_axis2)] == gone[("b1", 0)]
    assert dims(pruned)["w1"][n_axis1] == N // 2 and dims(pruned)["w2"][k_axis2] == N // 2
    assert dims(pruned)["w2"][1 - k_axis2] == P  # the output features of the last Gemm stay
    keep = kept(N, gone[("w1", n_axis1)])
    np.testing.assert_array_equal(init(pruned, "w1"), np.take(init(model, "w1"), keep, axis=n_axis1))


@pytest.mark.parametrize("bias_shape,cut", [((N,), True), ((1, N), True), ((M, N), True), ((), False), ((1,), False)])
def test_gemm_bias_is_cut_only_where_it_is_not_broadcast(tmp_path, bias_shape, cut):
    model = _gemm_pair(0, 1, 0, bias_shape)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    expected = list(bias_shape)
    if cut:
        expected[-1] = N // 2
    assert dims(pruned)["b1"] == expected
    if cut:
        keep = kept(N, removed(analysis, plan)[("w1", 0)])
        np.testing.assert_array_equal(init(pruned, "b1"), np.take(init(model, "b1"), keep, axis=-1))


def _conv_flatten_gemm(c: int = 4, hw: int = 3, reshape_target: list | None = None, head: str = "Gemm"):
    """Conv (c filters) -> Relu -> Flatten(axis=1) or Reshape -> [1, c*hw*hw] -> Gemm / MatMul."""
    feats = c * hw * hw
    inits = {"wc": weight(c, 2, 3, 3), "bc": weight(c), "wg": weight(feats, 7), "bg": weight(7)}
    nodes = [node("Conv", ["x", "wc", "bc"], "a", pads=[1, 1, 1, 1]), node("Relu", ["a"], "r")]
    if reshape_target is None:
        nodes.append(node("Flatten", ["r"], "f", axis=1))
    else:
        inits["target"] = np.array(reshape_target, np.int64)
        nodes.append(node("Reshape", ["r", "target"], "f"))
    if head == "Gemm":
        nodes.append(node("Gemm", ["f", "wg", "bg"], "y"))
    else:
        nodes += [node("MatMul", ["f", "wg"], "mm"), node("Add", ["mm", "bg"], "y")]
    return make_model(nodes, {"x": [1, 2, hw, hw]}, {"y": [1, 7]}, inits)


def _feature_blocks(channels: list[int], block: int) -> list[int]:
    return sorted(ch * block + i for ch in channels for i in range(block))


def test_gemm_after_flatten_cuts_one_hw_block_per_channel(tmp_path):
    model = _conv_flatten_gemm()
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    gone = removed(analysis, plan)
    channels = gone[("wc", 0)]
    assert len(channels) == 2
    assert gone[("wg", 0)] == _feature_blocks(channels, 9)
    assert dims(pruned)["wg"] == [18, 7]
    np.testing.assert_array_equal(init(pruned, "wg"), init(model, "wg")[kept(36, gone[("wg", 0)])])


@pytest.mark.parametrize("target,new_target", [([1, 36], [1, 18]), ([1, -1], [1, -1]), ([0, -1], [0, -1])])
def test_reshape_merge_feeding_matmul_rewrites_the_target(tmp_path, target, new_target):
    model = _conv_flatten_gemm(reshape_target=target, head="MatMul")
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    gone = removed(analysis, plan)
    assert gone[("wg", 0)] == _feature_blocks(gone[("wc", 0)], 9)
    assert init(pruned, "target").tolist() == new_target


def _mlp(widths: list[int], seq: int = 5, bias: bool = True):
    """x [2, seq, widths[0]] -> (MatMul -> Add -> Relu) per hidden width -> MatMul -> y."""
    inits, nodes, src = {}, [], "x"
    for i, (k, n) in enumerate(zip(widths[:-1], widths[1:])):
        inits[f"w{i}"] = weight(k, n)
        nodes.append(node("MatMul", [src, f"w{i}"], f"mm{i}"))
        src = f"mm{i}"
        if i < len(widths) - 2:
            if bias:
                inits[f"b{i}"] = weight(n)
                nodes.append(node("Add", [src, f"b{i}"], f"h{i}"))
                src = f"h{i}"
            nodes.append(node("Relu", [src], f"r{i}"))
            src = f"r{i}"
    nodes.append(node("Identity", [src], "y"))
    return make_model(nodes, {"x": [2, seq, widths[0]]}, {"y": [2, seq, widths[-1]]}, inits)


def test_matmul_2d_weight_on_3d_input(tmp_path):
    model = _mlp([8, 16, 4])
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    (group,) = analysis.prunable
    assert group.root == ("mm0", 2)
    assert {(s.tensor, s.axis, s.role) for s in group.slices} == {("w0", 1, "out"), ("b0", 0, "out"), ("w1", 0, "in")}
    assert dims(pruned) == {"w0": [8, 8], "b0": [8], "w1": [8, 4]}


def test_matmul_chain_prunes_every_intermediate_feature_space(tmp_path):
    model = _mlp([8, 16, 12, 10, 4], bias=False)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, min_groups=3)
    assert dims(pruned) == {"w0": [8, 8], "w1": [8, 6], "w2": [6, 5], "w3": [5, 4]}
    gone = removed(analysis, plan)
    for i in range(3):  # producer columns and consumer rows are the same channels
        assert gone[(f"w{i}", 1)] == gone[(f"w{i + 1}", 0)]


def test_gemm_with_a_computed_weight_freezes(tmp_path):
    """The features reaching a Gemm whose B is computed cannot be cut from B: frozen, with the reason."""
    inits = {"w1": weight(K, N), "wb": weight(N, P)}
    nodes = [node("Gemm", ["x", "w1"], "h"), node("Relu", ["wb_in"], "b"), node("Gemm", ["h", "b"], "y")]
    model = make_model(nodes, {"x": [M, K], "wb_in": [N, P]}, {"y": None}, inits)
    analysis = analyze(save(model, tmp_path))
    assert not analysis.prunable
    assert any("weight 'b' is computed at run time" in r for r in frozen_reasons(analysis))


def test_oracle_fails_when_gemm_forgets_its_input_features(tmp_path, monkeypatch):
    from onnxprune.rules import linear

    original = linear.GemmRule.propagate

    def forgetful(self, node, graph, port, axis, pairs, fx):
        if port.is_input and node.output(0) == "y":
            return  # pretend the second Gemm does not read the features
        original(self, node, graph, port, axis, pairs, fx)

    monkeypatch.setattr(linear.GemmRule, "propagate", forgetful)
    with pytest.raises(AssertionError):
        prune_with_oracle(_gemm_pair(0, 0, 0, (N,)), tmp_path, ratio=0.5)
