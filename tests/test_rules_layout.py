"""Layout ops: Transpose / (Un)Squeeze renumber the channel axis; Flatten / Reshape merge, split or shuffle it."""
import numpy as np
import pytest
from checks import dims, init, removed
from helpers import make_model, node, prune_with_oracle, save, weight

from onnxprune import analyze
from onnxprune.rule_harness import visit

C, HW = 8, 4


def _conv(nodes: list, inits: dict, c: int = C, name: str = "w1", out: str = "a", src: str = "x") -> None:
    inits[name] = weight(c, 3, 3, 3)
    nodes.append(node("Conv", [src, name], out, pads=[1, 1, 1, 1]))


def test_flatten_axis2_keeps_channels_as_rows(tmp_path):
    """[1, C, H, W] -> Flatten(axis=2) -> [C, H*W] -> Gemm(transA=1): the channels are Gemm's K axis."""
    nodes, inits = [], {"wg": weight(C, 5)}
    _conv(nodes, inits)
    nodes += [node("Relu", ["a"], "r"), node("Flatten", ["r"], "f", axis=2),
              node("Gemm", ["f", "wg"], "y", transA=1)]
    model = make_model(nodes, {"x": [1, 3, HW, HW]}, {"y": [HW * HW, 5]}, inits)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    gone = removed(analysis, plan)
    assert gone[("w1", 0)] == gone[("wg", 0)] and dims(pruned)["wg"] == [C // 2, 5]


def test_flatten_axis2_of_a_sequence_feeds_gemm(tmp_path):
    """[B, S, D] -> Flatten(axis=2) -> [B*S, D] -> Gemm: hidden units stay on the last axis."""
    inits = {"w1": weight(6, C), "wg": weight(5, C)}
    nodes = [node("MatMul", ["x", "w1"], "h"), node("Flatten", ["h"], "f", axis=2),
             node("Gemm", ["f", "wg"], "y", transB=1)]
    model = make_model(nodes, {"x": [2, 3, 6]}, {"y": [6, 5]}, inits)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    assert removed(analysis, plan)[("w1", 1)] == removed(analysis, plan)[("wg", 1)]
    assert dims(pruned) == {"w1": [6, C // 2], "wg": [5, C // 2]}


def test_transpose_around_a_pointwise_mlp(tmp_path):
    """ConvNeXt block: a = conv(x); a + T^-1(MatMul(Gelu(MatMul(T(a))))) -> conv. Two groups: C and 4C."""
    nodes, inits = [], {"wm1": weight(C, 4 * C), "bm1": weight(4 * C), "wm2": weight(4 * C, C), "bm2": weight(C),
                        "w3": weight(5, C, 1, 1)}
    _conv(nodes, inits)
    nodes += [node("Transpose", ["a"], "nhwc", perm=[0, 2, 3, 1]), node("MatMul", ["nhwc", "wm1"], "h1"),
              node("Add", ["h1", "bm1"], "h2"), node("Gelu", ["h2"], "h3"), node("MatMul", ["h3", "wm2"], "h4"),
              node("Add", ["h4", "bm2"], "h5"), node("Transpose", ["h5"], "nchw", perm=[0, 3, 1, 2]),
              node("Add", ["a", "nchw"], "s"), node("Conv", ["s", "w3"], "y")]
    model = make_model(nodes, {"x": [1, 3, HW, HW]}, {"y": [1, 5, HW, HW]}, inits, opset=20)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, min_groups=2)
    gone = removed(analysis, plan)
    assert gone[("w1", 0)] == gone[("wm1", 0)] == gone[("wm2", 1)] == gone[("bm2", 0)] == gone[("w3", 1)]
    assert gone[("wm1", 1)] == gone[("bm1", 0)] == gone[("wm2", 0)]
    assert dims(pruned)["wm1"] == [C // 2, 2 * C] and dims(pruned)["wm2"] == [2 * C, C // 2]


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_and_unsqueeze(tmp_path, opset):
    """conv -> GAP -> Squeeze [2, 3] -> Gemm -> Unsqueeze [2, 3] -> 1x1 conv: both spaces pruned."""
    nodes, inits = [], {"wg": weight(6, C), "bg": weight(6), "w3": weight(5, 6, 1, 1)}
    _conv(nodes, inits)
    if opset < 13:
        sq = node("Squeeze", ["p"], "sq", axes=[2, 3])
        unsq = node("Unsqueeze", ["g"], "u", axes=[2, 3])
    else:
        inits.update({"sq_axes": np.array([2, 3], np.int64), "unsq_axes": np.array([-2, -1], np.int64)})
        sq = node("Squeeze", ["p", "sq_axes"], "sq")
        unsq = node("Unsqueeze", ["g", "unsq_axes"], "u")
    nodes += [node("GlobalAveragePool", ["a"], "p"), sq, node("Gemm", ["sq", "wg", "bg"], "g", transB=1), unsq,
              node("Conv", ["u", "w3"], "y")]
    model = make_model(nodes, {"x": [1, 3, HW, HW]}, {"y": [1, 5, 1, 1]}, inits, opset=opset)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, min_groups=2)
    gone = removed(analysis, plan)
    assert gone[("w1", 0)] == gone[("wg", 1)] and gone[("wg", 0)] == gone[("bg", 0)] == gone[("w3", 1)]
    assert dims(pruned)["wg"] == [3, C // 2] and dims(pruned)["w3"] == [5, 3, 1, 1]


@pytest.mark.parametrize("target,new_target", [
    ([0, 0, -1], [0, 0, -1]), ([1, C, -1], [1, C // 2, -1]), ([1, -1, HW * HW], [1, -1, HW * HW]),
    ([1, C, HW * HW], [1, C // 2, HW * HW])])
def test_reshape_with_copy_and_infer_elements(tmp_path, target, new_target):
    """[1, C, H, W] -> Reshape -> [1, C, H*W] -> Transpose -> MatMul: only an explicit C is rewritten."""
    nodes, inits = [], {"target": np.array(target, np.int64), "wm": weight(C, 5)}
    _conv(nodes, inits)
    nodes += [node("Reshape", ["a", "target"], "seq"), node("Transpose", ["seq"], "t", perm=[0, 2, 1]),
              node("MatMul", ["t", "wm"], "y")]
    model = make_model(nodes, {"x": [1, 3, HW, HW]}, {"y": [1, HW * HW, 5]}, inits)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    assert removed(analysis, plan)[("w1", 0)] == removed(analysis, plan)[("wm", 0)]
    assert init(pruned, "target").tolist() == new_target


def _channel_shuffle(explicit_sizes: bool, groups: int = 2, half: int = C // 2):
    """Two conv branches -> Concat -> Reshape [1, g, C/g, H, W] -> Transpose -> Reshape [1, C, H, W] -> Split."""
    c = groups * half
    nodes, inits = [], {"t5": np.array([1, groups, half, HW, HW], np.int64), "t4": np.array([1, c, HW, HW], np.int64),
                        "wa": weight(5, half, 1, 1), "wb": weight(5, half, 1, 1)}
    _conv(nodes, inits, c=half, name="w1", out="a")
    _conv(nodes, inits, c=half, name="w2", out="b")
    nodes += [node("Concat", ["a", "b"], "cat", axis=1), node("Reshape", ["cat", "t5"], "r5"),
              node("Transpose", ["r5"], "tr", perm=[0, 2, 1, 3, 4]), node("Reshape", ["tr", "t4"], "shuf")]
    if explicit_sizes:  # torch.split / chunk export their sizes
        inits["sizes"] = np.array([c // 2, c // 2], np.int64)
        nodes.append(node("Split", ["shuf", "sizes"], ["p", "q"], axis=1))
    else:
        nodes.append(node("Split", ["shuf"], ["p", "q"], axis=1, num_outputs=2))
    nodes += [node("Relu", ["p"], "pr"), node("Conv", ["pr", "wa"], "ya"), node("Conv", ["q", "wb"], "yb"),
              node("Add", ["ya", "yb"], "y")]
    return make_model(nodes, {"x": [1, 3, HW, HW]}, {"y": [1, 5, HW, HW]}, inits, opset=18)


@pytest.mark.parametrize("explicit_sizes,units", [(True, C // 2), (False, C // 4)])
def test_channel_shuffle_couples_the_two_branches(tmp_path, explicit_sizes, units):
    """Branch channel k of both branches is one unit. Equal parts without sizes must stay equal, which
    also couples position p of the first half with position p of the second (k with k + C/4)."""
    model = _channel_shuffle(explicit_sizes)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    (group,) = analysis.prunable
    assert group.unit_count == units
    assert {"w1", "w2", "wa", "wb"} <= {s.tensor for s in group.slices}
    gone = removed(analysis, plan)
    assert gone[("w1", 0)] == gone[("w2", 0)] and len(gone[("w1", 0)]) == C // 4
    # shuffled position of branch channel k in group g is 2k + g: the halves lose those positions
    shuffled = sorted(2 * k + g for k in gone[("w1", 0)] for g in range(2))
    assert gone[("wa", 1)] + [C // 2 + i for i in gone[("wb", 1)]] == shuffled
    assert init(pruned, "t5").tolist() == [1, 2, C // 4, HW, HW]
    assert init(pruned, "t4").tolist() == [1, C // 2, HW, HW]


def test_reshape_mixing_the_channel_axis_freezes():
    v = visit("Reshape", [(1, C, HW, HW), np.array([1, 4, 2 * HW * HW], np.int64)], at=("in0", 1))
    assert v.frozen == "axis 1 of shape [1, 8, 4, 4] is mixed into [1, 4, 32]" and not v.moves


@pytest.mark.parametrize("source", ["own_input", "other_tensor"])
def test_reshape_target_copying_a_size_follows_only_when_that_size_is_pruned(tmp_path, source):
    """Reshape [1, C, H, W] -> [1, C, H*W] with the target Shape(t) of a tensor t at run time (dynamic
    batch: nothing is folded). Shape of the conv output itself follows the pruned C; Shape of an
    unrelated input of the same size does not: that group freezes (before, it was pruned and the
    pruned model failed in the Reshape)."""
    nodes, inits = [], {"wm": weight(C, 5), "t3": np.array([3], np.int64), "hw": np.array([HW * HW], np.int64)}
    _conv(nodes, inits)
    shaped = "a" if source == "own_input" else "z"
    nodes += [node("Shape", [shaped], "sh", start=0, end=2),
              node("Concat", ["sh", "hw"], "target", axis=0),
              node("Reshape", ["a", "target"], "seq"), node("Transpose", ["seq"], "t", perm=[0, 2, 1]),
              node("MatMul", ["t", "wm"], "y")]
    inputs = {"x": ["n", 3, HW, HW], "z": ["n", C, HW, HW]}
    model = make_model(nodes, inputs, {"y": ["n", HW * HW, 5]}, inits)
    shapes = {"x": (1, 3, HW, HW), "z": (1, C, HW, HW)}
    if source == "own_input":
        prune_with_oracle(model, tmp_path, ratio=0.5, input_shapes=shapes)
        return
    analysis = analyze(save(model, tmp_path), shapes)
    group = next(g for g in analysis.groups if g.root == ("a", 1))
    assert group.frozen_reason and "copies the size of 'z' axis 1" in group.frozen_reason


def test_validation_says_the_pruned_model_is_broken(tmp_path):
    """A pruned model that passes onnx.checker but fails in ONNX Runtime (a stale computed Reshape
    target): the error says that the pruned model is broken, not the original, and why."""
    from onnx import numpy_helper

    from onnxprune.errors import CheckFailedError
    from onnxprune.testing import random_inputs, validate_pruned

    nodes = [node("MatMul", ["x", "w"], "h"), node("Shape", ["h"], "sh", start=0, end=1),
             node("Concat", ["sh", "t"], "target", axis=0), node("Reshape", ["h", "target"], "y")]
    model = make_model(nodes, {"x": [2, 4]}, {"y": ["n", "m"]}, {"w": weight(4, 3), "t": np.array([3], np.int64)})
    original = save(model, tmp_path)
    broken = type(model)()
    broken.CopyFrom(model)
    broken.graph.initializer[0].CopyFrom(numpy_helper.from_array(weight(4, 2), "w"))  # the target still says 3
    with pytest.raises(CheckFailedError, match=r"pruned model is broken .*Reshape"):
        validate_pruned(original, broken, random_inputs(model, {}), ["cpu"], repeats=0)
