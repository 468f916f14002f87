"""Concat and Split: channels move by an offset along the joined / split axis; sizes follow."""
import numpy as np
import pytest

from checks import attr, dims, init, removed
from helpers import make_model, node, prune_with_oracle, weight

from onnxprune import indexmap
from onnxprune.errors import CheckFailedError

C1, C2 = 4, 6


def _two_convs_concat(axis: int = 1, c2: int = C2):
    """conv1 (C1) and conv2 (c2) of x, Concat along `axis`, Relu, 1x1 conv3."""
    c_in = C1 + c2 if axis == 1 else C1
    inits = {"w1": weight(C1, 3, 3, 3), "w2": weight(c2, 3, 3, 3), "w3": weight(5, c_in, 1, 1)}
    nodes = [node("Conv", ["x", "w1"], "a", pads=[1, 1, 1, 1]), node("Conv", ["x", "w2"], "b", pads=[1, 1, 1, 1]),
             node("Concat", ["a", "b"], "cat", axis=axis), node("Relu", ["cat"], "r"), node("Conv", ["r", "w3"], "y")]
    h = 10 if axis == 2 else 5
    return make_model(nodes, {"x": [1, 3, 5, 5]}, {"y": [1, 5, h, 5]}, inits)


def test_concat_offsets_the_second_inputs_channels(tmp_path):
    model = _two_convs_concat()
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, min_groups=2)
    gone = removed(analysis, plan)
    assert len(gone[("w1", 0)]) == C1 // 2 and len(gone[("w2", 0)]) == C2 // 2
    assert gone[("w3", 1)] == gone[("w1", 0)] + [C1 + i for i in gone[("w2", 0)]]
    assert dims(pruned)["w3"] == [5, (C1 + C2) // 2, 1, 1]


def test_concat_along_a_spatial_axis_couples_both_inputs(tmp_path):
    model = _two_convs_concat(axis=2, c2=C1)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    (group,) = analysis.prunable
    assert {s.tensor for s in group.slices} == {"w1", "w2", "w3"}
    gone = removed(analysis, plan)
    assert gone[("w1", 0)] == gone[("w2", 0)] == gone[("w3", 1)] and len(gone[("w1", 0)]) == C1 // 2


def test_oracle_fails_when_concat_offsets_are_dropped(tmp_path, monkeypatch):
    monkeypatch.setattr(indexmap, "shift", lambda pairs, offset: pairs.copy())
    with pytest.raises((AssertionError, CheckFailedError)):  # the oracle, or apply's postcondition
        prune_with_oracle(_two_convs_concat(), tmp_path, ratio=0.5, min_groups=2)


C, SA, SB = 8, 3, 5


def _conv_split(opset: int, sizes: list[int] | None = (SA, SB)):
    """conv1 (C) -> Split on channels -> each part into its own 1x1 conv -> Add."""
    parts = sizes or [C // 2, C // 2]
    inits = {"w1": weight(C, 3, 3, 3), "wa": weight(4, parts[0], 1, 1), "wb": weight(4, parts[1], 1, 1)}
    if sizes is None:
        split = node("Split", ["a"], ["p", "q"], axis=1, **({"num_outputs": 2} if opset >= 18 else {}))
    elif opset < 13:
        split = node("Split", ["a"], ["p", "q"], axis=1, split=list(sizes))
    else:
        inits["sizes"] = np.array(sizes, np.int64)
        split = node("Split", ["a", "sizes"], ["p", "q"], axis=1)
    nodes = [node("Conv", ["x", "w1"], "a", pads=[1, 1, 1, 1]), split,
             node("Conv", ["p", "wa"], "ya"), node("Conv", ["q", "wb"], "yb"), node("Add", ["ya", "yb"], "y")]
    return make_model(nodes, {"x": [1, 3, 5, 5]}, {"y": [1, 4, 5, 5]}, inits, opset=opset)


def _check_split(analysis, plan, pruned):
    gone = removed(analysis, plan)
    channels = gone[("w1", 0)]
    assert len(channels) == C // 2
    in_a = [c for c in channels if c < SA]
    in_b = [c - SA for c in channels if c >= SA]
    assert gone.get(("wa", 1), []) == in_a and gone.get(("wb", 1), []) == in_b
    assert dims(pruned)["wa"][1] == SA - len(in_a) >= 1 and dims(pruned)["wb"][1] == SB - len(in_b) >= 1
    return [SA - len(in_a), SB - len(in_b)]


def test_split_attribute_sizes_follow_opset11(tmp_path):
    analysis, plan, pruned = prune_with_oracle(_conv_split(11), tmp_path, ratio=0.5)
    new_sizes = _check_split(analysis, plan, pruned)
    assert list(attr(pruned, "Split_p", "split")) == new_sizes


@pytest.mark.parametrize("opset", [13, 18])
def test_split_input_sizes_follow(tmp_path, opset):
    analysis, plan, pruned = prune_with_oracle(_conv_split(opset), tmp_path, ratio=0.5)
    new_sizes = _check_split(analysis, plan, pruned)
    assert init(pruned, "sizes").tolist() == new_sizes


@pytest.mark.parametrize("opset", [13, 18])
def test_split_into_equal_parts_without_sizes_couples_the_parts(tmp_path, opset):
    analysis, plan, pruned = prune_with_oracle(_conv_split(opset, sizes=None), tmp_path, ratio=0.5)
    (group,) = analysis.prunable
    assert group.unit_count == C // 2  # position p of each half goes together
    gone = removed(analysis, plan)
    half = C // 2
    low = [c for c in gone[("w1", 0)] if c < half]
    assert gone[("w1", 0)] == low + [c + half for c in low]
    assert gone[("wa", 1)] == gone[("wb", 1)] == low
