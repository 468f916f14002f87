"""Grouped Conv / ConvTranspose (1 < group < C): whole groups or one within-group index per group."""
import numpy as np
import pytest
from helpers import frozen_reasons, make_model, node, param_count, prune_with_oracle, weight

import onnx

from onnxprune import analyze
from onnxprune.ir import Graph, infer_shapes
from onnxprune.rules.conv import WHOLE, WITHIN, group_mode


def _block(c: int, m: int, group: int, transpose: bool = False, residual: bool = False):
    """1x1 conv (c filters) -> Relu -> grouped 3x3 conv (m filters) -> Relu -> 1x1 conv (+ skip)."""
    op = "ConvTranspose" if transpose else "Conv"
    w2 = weight(c, m // group, 3, 3) if transpose else weight(m, c // group, 3, 3)
    out = 5 if not residual else m
    inits = {"w1": weight(c, 3, 1, 1), "b1": weight(c), "w2": w2, "b2": weight(m), "w3": weight(out, m, 1, 1)}
    nodes = [node("Conv", ["x", "w1", "b1"], "a"),
             node("Relu", ["a"], "r"),
             node(op, ["r", "w2", "b2"], "g", pads=[1, 1, 1, 1], group=group),
             node("Relu", ["g"], "r2"),
             node("Conv", ["r2", "w3"], "y" if not residual else "z")]
    if residual:
        inits["w0"] = weight(m, 3, 1, 1)
        nodes += [node("Conv", ["x", "w0"], "s"), node("Add", ["z", "s"], "t"), node("Conv", ["t", "w4"], "y")]
        inits["w4"] = weight(4, m, 1, 1)
    return make_model(nodes, {"x": [1, 3, 8, 8]}, {"y": None}, inits)


def _grouped_node(model):
    return next(n for n in model.graph.node if n.output[0] == "g")


def _group_attr(model) -> int:
    return next(a.i for a in _grouped_node(model).attribute if a.name == "group")


def _dims(model) -> dict[str, list[int]]:
    return {t.name: list(t.dims) for t in model.graph.initializer}


def _mode(model) -> str | None:
    g = Graph(model, infer_shapes(model, {}))
    return group_mode(next(n for n in g.nodes if n.attr("group", 1) > 1), g)


@pytest.mark.parametrize("c,m,group", [(16, 16, 8), (8, 16, 4)])
def test_whole_groups_go_together_and_group_attr_follows(tmp_path, c, m, group):
    model = _block(c, m, group)
    assert _mode(model) == WHOLE
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    # one space from the first conv's filters through the grouped conv: units are the groups
    (g,) = [g for g in analysis.groups if g.prunable]
    assert g.unit_count == group
    new_group = _group_attr(pruned)
    assert new_group == group // 2
    d = _dims(pruned)
    assert d["w1"][0] == new_group * (c // group)  # input channels: whole groups of Cg
    assert d["w2"] == [new_group * (m // group), c // group, 3, 3]  # rows: whole groups of Mg, columns unchanged
    assert d["w3"][1] == d["w2"][0]
    assert param_count(pruned) < param_count(model)


@pytest.mark.parametrize("c,m,group", [(16, 16, 2), (12, 8, 2)])
def test_within_groups_keep_every_group_the_same_width(tmp_path, c, m, group):
    model = _block(c, m, group)
    assert _mode(model) == WITHIN
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, min_groups=2)
    # input and output sides are separate spaces; each one's roots are coupled across groups
    units = sorted(g.unit_count for g in analysis.groups if g.prunable)
    assert units == sorted([c // group, m // group])
    assert _group_attr(pruned) == group
    d = _dims(pruned)
    assert d["w2"][0] == m // 2 and d["w2"][0] % group == 0
    assert d["w2"][1] * group == d["w1"][0] == c // 2


def test_within_groups_remove_the_same_index_from_every_group(tmp_path):
    model = _block(16, 16, 2)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.25, min_groups=2)
    for pg in plan.groups:
        removed = np.asarray(pg.pruned)
        assert len(removed) % 2 == 0
        first, second = removed[removed < 8], removed[removed >= 8] - 8
        assert first.tolist() == second.tolist()


def test_high_ratio_never_empties_a_group(tmp_path):
    for c, m, group in [(16, 16, 8), (16, 16, 2)]:
        analysis, plan, pruned = prune_with_oracle(_block(c, m, group), tmp_path, ratio=0.99)
        d = _dims(pruned)
        g = _group_attr(pruned)
        assert g >= 1 and d["w2"][0] >= g and d["w2"][0] % g == 0 and d["w2"][1] >= 1


@pytest.mark.parametrize("c,m,group", [(16, 16, 8), (16, 16, 2), (8, 12, 2)])
def test_grouped_conv_transpose(tmp_path, c, m, group):
    model = _block(c, m, group, transpose=True)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    d = _dims(pruned)
    g = _group_attr(pruned)
    assert d["w2"][0] == d["w1"][0] and d["w2"][0] % g == 0
    assert d["w3"][1] == d["w2"][1] * g
    assert param_count(pruned) < param_count(model)


def test_resnext_block_with_skip(tmp_path):
    analysis, plan, pruned = prune_with_oracle(_block(16, 16, 8, residual=True), tmp_path, ratio=0.5, min_groups=2)
    assert _group_attr(pruned) == 4


def test_grouped_output_reaching_graph_output_freezes(tmp_path):
    """A within-group conv's own filters are a root space; a graph output must keep them all."""
    inits = {"w1": weight(8, 3, 1, 1), "w2": weight(8, 4, 3, 3)}
    nodes = [node("Conv", ["x", "w1"], "a"), node("Conv", ["a", "w2"], "y", pads=[1, 1, 1, 1], group=2)]
    model = make_model(nodes, {"x": [1, 3, 8, 8]}, {"y": None}, inits)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    analysis = analyze(str(path), {})
    assert any("reaches graph output 'y'" in r for r in frozen_reasons(analysis))
