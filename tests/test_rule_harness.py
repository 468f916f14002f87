"""The rule harness: one node in, the rule's channel map out; and pruning through it with the oracle."""
import numpy as np
import pytest

from onnxprune import indexmap
from onnxprune.errors import BadInputError, CheckFailedError
from onnxprune.rule_harness import Input, Visit, channel_map, pairs, prune_through, roots, visit


def ones(*shape, dtype=np.float32):
    return np.ones(shape, dtype)


def test_the_module_example_runs():
    import onnxprune.rule_harness as harness
    example = [line[4:] for line in harness.__doc__.splitlines() if line.startswith("    ")]
    assert example and "assert" in example[-1]
    exec("\n".join(example), {})


def test_pairs_of_an_int_is_the_identity():
    assert pairs(3) == pairs(range(3)) == ((0, 0), (1, 1), (2, 2))
    assert pairs([5, 7], roots=[1, 0]) == ((5, 1), (7, 0))


def test_conv_filters_are_a_root_and_cut_weight_and_bias():
    inputs = [(1, 3, 5, 5), ones(4, 3, 3, 3), ones(4)]
    assert roots("Conv", inputs, {"pads": [1, 1, 1, 1]}) == (("out0", 1),)
    v = visit("Conv", inputs, {"pads": [1, 1, 1, 1]}, at=("out0", 1))
    assert v == Visit(moves={}, cuts={("in1", 0): ("out", pairs(4)), ("in2", 0): ("out", pairs(4))})


def test_conv_input_channels_are_consumed_by_the_weight():
    v = visit("Conv", [(1, 3, 5, 5), ones(4, 3, 1, 1)], at=("in0", 1))
    assert v.cuts == {("in1", 1): ("in", pairs(3))} and not v.moves and v.frozen is None


def test_depthwise_conv_moves_output_channels_to_its_input():
    v = visit("Conv", [(1, 4, 5, 5), ones(4, 1, 3, 3)], {"group": 4, "pads": [1, 1, 1, 1]}, at=("out0", 1))
    assert v.moves == {("in0", 1): pairs(4)}
    assert v.cuts == {("in1", 0): ("out", pairs(4))}
    assert v.edits == ((("attr", 0, "group", -1), ("in0", 1), 1, 1, None),)  # group follows the input size


def test_concat_offsets_the_second_input():
    v = visit("Concat", [(1, 2, 5), (1, 3, 5)], {"axis": 1}, at=("out0", 1))
    assert v.moves == {("in0", 1): pairs(2), ("in1", 1): pairs(range(3), roots=range(2, 5))}


def test_a_wrong_expected_map_is_caught():
    """The harness assertion can fail: the same map without the offset is not equal."""
    v = visit("Concat", [(1, 2, 5), (1, 3, 5)], {"axis": 1}, at=("out0", 1))
    wrong = {("in0", 1): pairs(2), ("in1", 1): pairs(3)}
    assert v.moves != wrong
    with pytest.raises(AssertionError):
        assert v.moves == wrong


def test_transpose_maps_every_output_axis_to_its_input_axis():
    m = channel_map("Transpose", [(1, 4, 3, 2)], {"perm": [0, 2, 3, 1]})
    assert {k: v.moves for k, v in m.items()} == {
        ("out0", 0): {("in0", 0): pairs(1)}, ("out0", 1): {("in0", 2): pairs(3)},
        ("out0", 2): {("in0", 3): pairs(2)}, ("out0", 3): {("in0", 1): pairs(4)}}


def test_reshape_flatten_turns_a_channel_into_a_block_and_the_block_couples():
    v = visit("Reshape", [(1, 4, 3, 3), np.array([1, 36], np.int64)], at=("in0", 1))
    assert v.moves == {("out0", 1): pairs(range(36), roots=np.repeat(range(4), 9))}
    back = visit("Reshape", [(1, 4, 3, 3), np.array([1, 36], np.int64)], at=("out0", 1))
    assert back.couplings == tuple(tuple(range(9 * c, 9 * c + 9)) for c in range(4))


def test_lstm_hidden_units_cut_every_gate_block():
    h, inputs = 2, [(5, 1, 3), ones(1, 8, 3), ones(1, 8, 2)]
    v = visit("LSTM", inputs, {"hidden_size": h}, outputs=3, at=("out0", 3))
    gates = pairs(range(4 * h), roots=[0, 1] * 4)
    assert v.cuts == {("in1", 1): ("out", gates), ("in2", 1): ("out", gates), ("in2", 2): ("in", pairs(h))}
    assert v.moves == {("out1", 2): pairs(h), ("out2", 2): pairs(h)}
    assert v.kinds == ("LSTM hidden units",)


def test_gather_embedding_root_and_a_frozen_channel_axis():
    table_ids = [ones(10, 4), Input((2, 3), np.int64)]
    assert roots("Gather", table_ids) == (("out0", 2),)
    assert visit("Gather", table_ids, at=("out0", 2)).cuts == {("in0", 1): ("out", pairs(4))}
    v = visit("Gather", [(2, 5, 4), np.array([0, 2], np.int64)], {"axis": 2}, at=("in0", 2))
    assert v.frozen == "gathers along the channel axis 2: indices would need renumbering"


def test_layer_norm_over_the_channel_axis_is_inexact_and_cuts_its_scale():
    v = visit("LayerNormalization", [(1, 5, 4), ones(4), ones(4)], {"axis": -1}, at=("in0", 2))
    assert v.inexact == ("LayerNormalization normalises over the pruned axis",)
    assert v.scales == frozenset({("in1", 0)}) and v.moves == {("out0", 2): pairs(4)}


def test_split_into_equal_parts_couples_position_p_of_each_half():
    v = visit("Split", [(1, 4, 5)], {"axis": 1, "num_outputs": 2}, outputs=2, opset=18, at=("in0", 1))
    assert v.couplings == ((0, 2), (1, 3))


def test_a_tensor_not_on_the_node_is_refused_with_the_names_it_has():
    with pytest.raises(BadInputError, match="'x' is neither an input nor an output of Relu node 'node'"):
        visit("Relu", [(1, 4)], at=("x", 1))


@pytest.mark.parametrize("op, inputs, attrs, kw", [
    ("Relu", [(1, 8, 4, 4)], None, {}),
    ("Concat", [(1, 4, 3, 3), (1, 6, 3, 3)], {"axis": 1}, {"min_groups": 2}),
    ("Transpose", [(1, 8, 4, 4)], {"perm": [0, 2, 3, 1]}, {}),
    ("Reshape", [(1, 4, 3, 3), np.array([1, 36], np.int64)], None, {}),
    ("LSTM", [(5, 1, 4), ones(1, 8, 4), ones(1, 8, 2)], {"hidden_size": 2}, {"min_groups": 2, "channel_axis": 2}),
])
def test_prune_through_passes_the_oracle(op, inputs, attrs, kw):
    min_groups = kw.pop("min_groups", 1)
    result = prune_through(op, inputs, attrs, outputs=3 if op == "LSTM" else 1, **kw).check(min_groups)
    assert result.oracle.passed and not result.frozen


def test_prune_through_fails_when_the_rule_maps_wrongly(monkeypatch):
    """Concat with its offsets dropped: the oracle (or apply's postcondition) catches it."""
    monkeypatch.setattr(indexmap, "shift", lambda p, offset: p.copy())
    with pytest.raises(CheckFailedError):
        prune_through("Concat", [(1, 4, 3, 3), (1, 6, 3, 3)], {"axis": 1}).check(2)


def test_check_says_when_nothing_was_pruned():
    wanted = "pruning through Gather node .node.: expected >= 1 pruned groups, found 0"
    with pytest.raises(CheckFailedError, match=wanted):
        prune_through("Gather", [(2, 5, 4), np.array([0, 2], np.int64)], {"axis": 2}, channel_axis=2).check()
