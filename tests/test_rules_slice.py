"""Slice: a window of the channel axis (bounds move left as channels below them go), or a pass-through."""
import numpy as np
import pytest
from checks import attr, dims, removed
from helpers import frozen_reasons, make_model, node, prune_with_oracle, save, weight
from onnx import numpy_helper

from onnxprune import analyze

C, HW = 8, 4
INT64_MAX = np.iinfo(np.int64).max


def _window_model(start: int, end: int, opset: int = 13, axis: int = 1, step: int | None = None):
    """a = conv(x) (C channels); window = Slice(a, start:end on `axis`) -> 1x1 conv.

    On the channel axis a second 1x1 conv reads all of `a` and is added: the channels outside the
    window still have a consumer. On a spatial axis the window conv is the output.
    """
    dim = C if axis == 1 else HW
    lo, hi, _ = slice(start, end, step).indices(dim)
    width = len(range(lo, hi, step or 1))
    inits = {"w1": weight(C, 3, 3, 3), "ws": weight(5, width if axis == 1 else C, 1, 1)}
    if opset < 10:
        sl = node("Slice", ["a"], "s", starts=[start], ends=[end], axes=[axis])
    else:
        inits.update({"starts": np.array([start], np.int64), "ends": np.array([end], np.int64),
                      "axes": np.array([axis], np.int64)})
        steps = [] if step is None else ["steps"]
        if step is not None:
            inits["steps"] = np.array([step], np.int64)
        sl = node("Slice", ["a", "starts", "ends", "axes", *steps], "s")
    nodes = [node("Conv", ["x", "w1"], "a", pads=[1, 1, 1, 1]), sl]
    if axis == 1:
        inits["wf"] = weight(5, C, 1, 1)
        nodes += [node("Conv", ["s", "ws"], "ys"), node("Conv", ["a", "wf"], "yf"), node("Add", ["ys", "yf"], "y")]
        out = [1, 5, HW, HW]
    else:
        nodes.append(node("Conv", ["s", "ws"], "y"))
        out = [1, 5, width, HW]
    return make_model(nodes, {"x": [1, 3, HW, HW]}, {"y": out}, inits, opset=opset)


def _bound(pruned, name: str) -> int:
    (t,) = [t for t in pruned.graph.initializer if t.name == name]
    return int(numpy_helper.to_array(t)[0])


@pytest.mark.parametrize("start,end", [(2, 6), (0, 5), (3, INT64_MAX), (-5, INT64_MAX), (1, -1), (2, 100)])
def test_slice_window_on_the_channel_axis_moves_its_bounds(tmp_path, start, end):
    model = _window_model(start, end)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    gone = removed(analysis, plan)[("w1", 0)]
    lo, hi, _ = slice(start, end).indices(C)
    assert removed(analysis, plan).get(("ws", 1), []) == [c - lo for c in gone if lo <= c < hi]
    assert removed(analysis, plan)[("wf", 1)] == gone
    assert _bound(pruned, "starts") == lo - sum(c < lo for c in gone)
    if end in (INT64_MAX, 100):
        assert _bound(pruned, "ends") == end  # "until the end" stays valid as it is
    else:
        assert _bound(pruned, "ends") == hi - sum(c < hi for c in gone)
    assert dims(pruned)["ws"][1] == (hi - lo) - sum(lo <= c < hi for c in gone)


def test_slice_attribute_form_opset9(tmp_path):
    model = _window_model(2, 7, opset=9)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    gone = removed(analysis, plan)[("w1", 0)]
    assert list(attr(pruned, "Slice_s", "starts")) == [2 - sum(c < 2 for c in gone)]
    assert list(attr(pruned, "Slice_s", "ends")) == [7 - sum(c < 7 for c in gone)]
    assert list(attr(pruned, "Slice_s", "axes")) == [1]


@pytest.mark.parametrize("opset", [9, 13])
def test_slice_on_a_spatial_axis_passes_with_bounds_unchanged(tmp_path, opset):
    model = _window_model(1, 3, opset=opset, axis=2)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    gone = removed(analysis, plan)
    assert gone[("w1", 0)] == gone[("ws", 1)] and len(gone[("w1", 0)]) == C // 2
    if opset < 10:
        assert list(attr(pruned, "Slice_s", "starts")) == [1] and list(attr(pruned, "Slice_s", "ends")) == [3]
    else:
        assert _bound(pruned, "starts") == 1 and _bound(pruned, "ends") == 3


def test_strided_slice_on_the_channel_axis_freezes(tmp_path):
    model = _window_model(0, C, step=2)
    analysis = analyze(save(model, tmp_path))
    assert not analysis.prunable
    assert any("strided slice (step 2) on the channel axis 1" in r for r in frozen_reasons(analysis))


def test_bound_constants_shared_by_two_slices_move_separately(tmp_path):
    """Two convs windowed by the same starts/ends initializers: each Slice gets its own private copy."""
    inits = {"w1": weight(C, 3, 3, 3), "w2": weight(C, 3, 3, 3, scale=2.0), "starts": np.array([2], np.int64),
             "ends": np.array([6], np.int64), "axes": np.array([1], np.int64), "wa": weight(5, 4, 1, 1),
             "wb": weight(5, 4, 1, 1), "wfa": weight(5, C, 1, 1), "wfb": weight(5, C, 1, 1)}
    # make the two groups choose different channels: w1's high and w2's low channels are the weak ones,
    # in the producer and in every consumer column (a group's score sums all its slices)
    inits["w1"][4:] *= 0.01
    inits["wfa"][:, 4:] *= 0.01
    inits["wa"][:, 2:] *= 0.01  # sa = a[2:6]: columns 2, 3 are channels 4, 5
    inits["w2"][:4] *= 0.01
    inits["wfb"][:, :4] *= 0.01
    inits["wb"][:, :2] *= 0.01  # sb = b[2:6]: columns 0, 1 are channels 2, 3
    nodes = [node("Conv", ["x", "w1"], "a", pads=[1, 1, 1, 1]), node("Conv", ["x", "w2"], "b", pads=[1, 1, 1, 1]),
             node("Slice", ["a", "starts", "ends", "axes"], "sa"), node("Slice", ["b", "starts", "ends", "axes"], "sb"),
             node("Conv", ["sa", "wa"], "ya"), node("Conv", ["sb", "wb"], "yb"), node("Conv", ["a", "wfa"], "fa"),
             node("Conv", ["b", "wfb"], "fb"), node("Sum", ["ya", "yb", "fa", "fb"], "y")]
    model = make_model(nodes, {"x": [1, 3, HW, HW]}, {"y": [1, 5, HW, HW]}, inits)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, min_groups=2)
    gone = removed(analysis, plan)
    assert gone[("w1", 0)] == [4, 5, 6, 7] and gone[("w2", 0)] == [0, 1, 2, 3]
    starts = {n.name: n.input[1] for n in pruned.graph.node if n.op_type == "Slice"}
    ends = {n.name: n.input[2] for n in pruned.graph.node if n.op_type == "Slice"}
    assert starts["Slice_sa"] != starts["Slice_sb"]
    assert (_bound(pruned, starts["Slice_sa"]), _bound(pruned, ends["Slice_sa"])) == (2, 4)
    assert (_bound(pruned, starts["Slice_sb"]), _bound(pruned, ends["Slice_sb"])) == (0, 2)
