"""Elementwise ops: channels pass through unary ops; constant per-channel operands are cut with them."""
import numpy as np
import pytest
from checks import dims, init, kept, removed
from helpers import frozen_reasons, make_model, node, prune_with_oracle, save, weight
from onnx import TensorProto

from onnxprune import analyze

C = 8


def _sandwich(middle: list, inits: dict, src: str = "a", out: str = "m", opset: int = 17, extra_inputs=None):
    """x -> Conv (C filters) -> `middle` (reads `src`, ends in `out`) -> Conv -> y."""
    inits = {"w1": weight(C, 3, 3, 3), "b1": weight(C), "w2": weight(4, C, 1, 1), **inits}
    nodes = [node("Conv", ["x", "w1", "b1"], "a", pads=[1, 1, 1, 1]), *middle, node("Conv", [out, "w2"], "y")]
    inputs = {"x": [1, 3, 5, 5], **(extra_inputs or {})}
    return make_model(nodes, inputs, {"y": [1, 4, 5, 5]}, inits, opset=opset)


def _check_conv_pair(model, pruned, analysis, plan):
    gone = removed(analysis, plan)
    assert len(gone[("w1", 0)]) == C // 2 and gone[("w1", 0)] == gone[("w2", 1)]
    assert dims(pruned)["w1"] == [C // 2, 3, 3, 3] and dims(pruned)["w2"] == [4, C // 2, 1, 1]
    return gone


def test_unary_chain_passes_channels_through(tmp_path):
    inits = {"lo": np.array(-0.5, np.float32), "hi": np.array(2.0, np.float32)}
    chain = [("Relu", {}), ("LeakyRelu", {"alpha": 0.1}), ("Sigmoid", {}), ("HardSigmoid", {}), ("HardSwish", {}),
             ("Tanh", {}), ("Erf", {}), ("Gelu", {"approximate": "tanh"}), ("Elu", {}), ("Selu", {}),
             ("Softplus", {}), ("Dropout", {}), ("Identity", {})]
    nodes, src = [], "a"
    for i, (op, attrs) in enumerate(chain):
        nodes.append(node(op, [src], f"u{i}", **attrs))
        src = f"u{i}"
    nodes += [node("Clip", [src, "lo", "hi"], "clip"),
              node("Cast", ["clip"], "dbl", to=TensorProto.DOUBLE), node("Cast", ["dbl"], "m", to=TensorProto.FLOAT)]
    model = _sandwich(nodes, inits, opset=20)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    (group,) = analysis.prunable
    assert {s.tensor for s in group.slices} == {"w1", "b1", "w2"}  # Clip's scalar bounds are not cut
    _check_conv_pair(model, pruned, analysis, plan)
    assert dims(pruned)["lo"] == [] and dims(pruned)["hi"] == []


def test_prelu_per_channel_slope_is_cut(tmp_path):
    inits = {"slope": weight(C, 1, 1, scale=1.0)}
    model = _sandwich([node("PRelu", ["a", "slope"], "m")], inits)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    gone = _check_conv_pair(model, pruned, analysis, plan)
    assert gone[("slope", 0)] == gone[("w1", 0)]
    np.testing.assert_array_equal(init(pruned, "slope"), init(model, "slope")[kept(C, gone[("w1", 0)])])


def _operand(op: str, shape: tuple) -> np.ndarray:
    """A constant operand that keeps the op well defined (positive divisors and exponents)."""
    value = np.random.default_rng(7).uniform(0.5, 1.5, size=shape).astype(np.float32)
    # NumPy 1.x: float32 scalar - 1.0 is float64
    return value if op in ("Div", "Pow") else (value - 1.0).astype(np.float32)


BINARY = ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean"]


# data as divisor / exponent is not well defined on random activations: Div and Pow take the constant second
ORDERS = [(op, False) for op in BINARY] + [(op, True) for op in BINARY if op not in ("Div", "Pow")]


@pytest.mark.parametrize("op,const_first", ORDERS)
@pytest.mark.parametrize("shape", [(1, C, 1, 1), (C, 1, 1)])
def test_binary_op_cuts_a_per_channel_constant(tmp_path, op, shape, const_first):
    inits = {"k": _operand(op, shape)}
    operands = ["k", "r"] if const_first else ["r", "k"]
    model = _sandwich([node("Relu", ["a"], "r"), node(op, operands, "m")], inits)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    gone = _check_conv_pair(model, pruned, analysis, plan)
    axis = len(shape) - 3
    assert gone[("k", axis)] == gone[("w1", 0)]
    np.testing.assert_array_equal(init(pruned, "k"), np.take(init(model, "k"), kept(C, gone[("w1", 0)]), axis=axis))


@pytest.mark.parametrize("op", BINARY)
@pytest.mark.parametrize("shape", [(), (1,), (1, 1, 1, 1), (5,)])
def test_binary_op_leaves_a_broadcast_constant_alone(tmp_path, op, shape):
    """A scalar, or a constant broadcast along the channel axis (a per-column [W] one), serves every channel."""
    inits = {"k": _operand(op, shape)}
    model = _sandwich([node("Relu", ["a"], "r"), node(op, ["r", "k"], "m")], inits)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    _check_conv_pair(model, pruned, analysis, plan)
    np.testing.assert_array_equal(init(pruned, "k"), init(model, "k"))


def test_sum_and_mean_of_three_operands(tmp_path):
    inits = {"k1": weight(C, 1, 1), "k2": weight(1, C, 1, 1)}
    model = _sandwich([node("Relu", ["a"], "r"), node("Sum", ["r", "k1", "a"], "s"),
                       node("Mean", ["s", "k2", "r"], "m")], inits)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    _check_conv_pair(model, pruned, analysis, plan)
    assert dims(pruned)["k1"] == [C // 2, 1, 1] and dims(pruned)["k2"] == [1, C // 2, 1, 1]


def test_where_with_a_per_channel_constant_condition(tmp_path):
    cond = np.array([True, False] * (C // 2)).reshape(C, 1, 1)
    inits = {"cond": cond, "other": weight(1, C, 1, 1)}
    model = _sandwich([node("Where", ["cond", "a", "other"], "m")], inits)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    gone = _check_conv_pair(model, pruned, analysis, plan)
    keep = kept(C, gone[("w1", 0)])
    np.testing.assert_array_equal(init(pruned, "cond"), cond[keep])
    assert dims(pruned)["other"] == [1, C // 2, 1, 1]


def test_residual_add_couples_two_convs_into_one_group(tmp_path):
    """a = conv1(x); b = conv2(relu(a)); y = conv3(a + b): conv1's and conv2's filters are one space."""
    inits = {"w1": weight(C, 3, 3, 3), "w2": weight(C, C, 3, 3), "b2": weight(C), "w3": weight(4, C, 1, 1)}
    nodes = [node("Conv", ["x", "w1"], "a", pads=[1, 1, 1, 1]), node("Relu", ["a"], "r"),
             node("Conv", ["r", "w2", "b2"], "b", pads=[1, 1, 1, 1]), node("Add", ["a", "b"], "s"),
             node("Conv", ["s", "w3"], "y")]
    model = make_model(nodes, {"x": [1, 3, 5, 5]}, {"y": [1, 4, 5, 5]}, inits)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    (group,) = analysis.prunable
    assert {(s.tensor, s.axis, s.role) for s in group.slices} == {
        ("w1", 0, "out"), ("w2", 0, "out"), ("b2", 0, "out"), ("w2", 1, "in"), ("w3", 1, "in")}
    gone = removed(analysis, plan)
    assert gone[("w1", 0)] == gone[("w2", 0)] == gone[("w2", 1)] == gone[("w3", 1)]
    assert dims(pruned)["w2"] == [C // 2, C // 2, 3, 3]


def test_per_channel_graph_input_operand_freezes(tmp_path):
    model = _sandwich([node("Mul", ["a", "gate"], "m")], {}, extra_inputs={"gate": [1, C, 1, 1]})
    analysis = analyze(save(model, tmp_path))
    assert not analysis.prunable
    assert any("reaches graph input 'gate'" in r for r in frozen_reasons(analysis))


def test_oracle_fails_when_a_per_channel_constant_is_missed(tmp_path, monkeypatch):
    from onnxprune.rules import base

    monkeypatch.setattr(base, "broadcast_to_input", lambda *args: None)
    model = _sandwich([node("Add", ["a", "k"], "m")], {"k": weight(1, C, 1, 1)})
    with pytest.raises(AssertionError):
        prune_with_oracle(model, tmp_path, ratio=0.5)
