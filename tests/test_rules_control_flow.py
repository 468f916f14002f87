"""If / Loop / Scan: channels inside bodies, across outer-scope reads and across body values,
pruned and checked by the dead-channel oracle (both values of an If's condition)."""
import numpy as np
import onnx
import pytest
from checks import dims
from helpers import make_model, node, prune_with_oracle, save, weight
from onnx import TensorProto, helper, numpy_helper

from onnxprune import analyze
from onnxprune.cli import main
from onnxprune.testing import TOLERANCE, compare, make_plan, oracle_models, random_inputs, run_model, weight_scores

X_SHAPE = [1, 3, 8, 8]


def _net(tag: str, x: str, c1: int = 8, c2: int = 6) -> tuple[list, dict, str]:
    """Conv -> Relu -> Conv -> GlobalAveragePool -> Flatten -> Gemm on `x`; (nodes, weights, output)."""
    inits = {f"{tag}w1": weight(c1, 3, 3, 3), f"{tag}b1": weight(c1), f"{tag}w2": weight(c2, c1, 3, 3),
             f"{tag}g": weight(4, c2), f"{tag}gb": weight(4)}
    nodes = [node("Conv", [x, f"{tag}w1", f"{tag}b1"], f"{tag}c1", pads=[1] * 4),
             node("Relu", [f"{tag}c1"], f"{tag}r"),
             node("Conv", [f"{tag}r", f"{tag}w2"], f"{tag}c2", pads=[1] * 4),
             node("GlobalAveragePool", [f"{tag}c2"], f"{tag}p"),
             node("Flatten", [f"{tag}p"], f"{tag}f"),
             node("Gemm", [f"{tag}f", f"{tag}g", f"{tag}gb"], f"{tag}y", transB=1)]
    return nodes, inits, f"{tag}y"


def _inits(values: dict) -> list:
    return [numpy_helper.from_array(v, k) for k, v in values.items()]


def _body(name: str, nodes: list, inputs: list, outputs: list, inits: dict | None = None) -> onnx.GraphProto:
    return helper.make_graph(nodes, name, inputs, outputs, _inits(inits or {}))


def _vi(name: str, shape, elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _whole_net_in_if(weights_inside: bool, c1: int = 8, c2: int = 6) -> onnx.ModelProto:
    """The whole network in both branches of a top-level If on a bool input, other weights per
    branch (silero-vad switches on the sample rate like this)."""
    branches, outer = {}, {}
    for tag, attr in (("t_", "then_branch"), ("e_", "else_branch")):
        nodes, inits, y = _net(tag, "x", c1, c2)
        branches[attr] = _body(tag, nodes, [], [_vi(y, None)], inits if weights_inside else None)
        if not weights_inside:
            outer.update(inits)
    return make_model([helper.make_node("If", ["cond"], ["y"], name="if", **branches)],
                      {"cond": [], "x": X_SHAPE}, {"y": [1, 4]}, outer, input_types={"cond": TensorProto.BOOL})


def _plain() -> onnx.ModelProto:
    nodes, inits, y = _net("", "x")
    return make_model(nodes, {"x": X_SHAPE}, {y: [1, 4]}, inits)


def _all_params(model: onnx.ModelProto) -> int:
    """Float initializer elements, those of every body included."""
    count = 0
    graphs = [model.graph]
    while graphs:
        g = graphs.pop()
        count += sum(int(np.prod(t.dims)) for t in g.initializer if t.data_type == TensorProto.FLOAT)
        graphs.extend(a.g for n in g.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH)
    return count


def _plan(model, tmp_path, ratio=0.5):
    analysis = analyze(save(model, tmp_path))
    scores = weight_scores(analysis, "l1")
    return analysis, make_plan(analysis, scores, ratio)


def _oracle(analysis, plan, feeds) -> float:
    """The dead-channel oracle on given feeds (random_inputs gives a bool condition as True only)."""
    zeroed, pruned = oracle_models(analysis, plan)
    cmp = compare(run_model(zeroed, feeds, optimize=False).outputs, run_model(pruned, feeds, optimize=False).outputs)
    assert cmp.shapes_match and cmp.finite
    return cmp.relative


def _check_both_branches(model, analysis, plan, pruned) -> None:
    onnx.checker.check_model(pruned, full_check=True)
    feeds = random_inputs(model, {})
    for cond in (True, False):
        feeds["cond"] = np.array(cond)
        assert _oracle(analysis, plan, feeds) <= TOLERANCE, f"oracle fails with cond={cond}"
        before, after = run_model(model, feeds).outputs, run_model(pruned, feeds).outputs
        assert before[0].shape == after[0].shape
        assert not np.allclose(before[0], after[0])  # pruning live channels changes the output


@pytest.mark.parametrize("weights_inside", [True, False])
def test_whole_network_in_if_prunes_both_branches(tmp_path, weights_inside):
    model = _whole_net_in_if(weights_inside)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, min_groups=4)
    _check_both_branches(model, analysis, plan, pruned)
    d = dims(pruned) if not weights_inside else {
        t.name: list(t.dims) for n in pruned.graph.node for a in n.attribute for t in a.g.initializer}
    for tag in ("t_", "e_"):
        assert d[f"{tag}w1"] == [4, 3, 3, 3] and d[f"{tag}b1"] == [4]
        assert d[f"{tag}w2"] == [3, 4, 3, 3] and d[f"{tag}g"] == [4, 3]
    # each branch loses (at least 95% of) what the plain network loses at the same ratio
    plain = _plain()
    _, _, plain_pruned = prune_with_oracle(plain, tmp_path, min_groups=2)
    plain_lost = _all_params(plain) - _all_params(plain_pruned)
    lost = _all_params(model) - _all_params(pruned)
    assert plain_lost > 0 and lost >= 0.95 * 2 * plain_lost


def test_shape_arithmetic_inside_branches_is_folded(tmp_path):
    """A branch keeps the first half of its channels with Slice(r, 0, Shape(r)[1] / 2), computed at
    run time: folded inside the body (the inputs are static), conv1's filters prune through it."""
    branches = {}
    for tag, attr in (("t_", "then_branch"), ("e_", "else_branch")):
        nodes, w, _ = _net(tag, "x", 8, 6)
        half = [node("Shape", [f"{tag}r"], f"{tag}s"), node("Gather", [f"{tag}s", f"{tag}one"], f"{tag}n", axis=0),
                node("Div", [f"{tag}n", f"{tag}two"], f"{tag}h"),
                node("Unsqueeze", [f"{tag}h", f"{tag}ax"], f"{tag}end"),
                node("Slice", [f"{tag}r", f"{tag}ax", f"{tag}end", f"{tag}one1"], f"{tag}rh")]
        nodes = nodes[:2] + half + [node("Conv", [f"{tag}rh", f"{tag}w2"], f"{tag}c2", pads=[1] * 4)] + nodes[3:]
        w.update({f"{tag}w2": weight(6, 4, 3, 3), f"{tag}one": np.array(1, np.int64),
                  f"{tag}two": np.array(2, np.int64),
                  f"{tag}ax": np.array([0], np.int64), f"{tag}one1": np.array([1], np.int64)})
        branches[attr] = _body(tag, nodes, [], [_vi(f"{tag}y", None)], w)
    model = make_model([helper.make_node("If", ["cond"], ["y"], name="if", **branches)],
                       {"cond": [], "x": X_SHAPE}, {"y": [1, 4]}, {}, input_types={"cond": TensorProto.BOOL})
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, min_groups=4)
    _check_both_branches(model, analysis, plan, pruned)
    assert not any("computed at run time" in (g.frozen_reason or "") for g in analysis.groups)
    d = {t.name: list(t.dims) for n in pruned.graph.node for a in n.attribute for t in a.g.initializer}
    for tag in ("t_", "e_"):
        assert d[f"{tag}w1"][0] == 4 and d[f"{tag}w2"][1] <= 4


def test_cli_prunes_network_inside_if(tmp_path):
    model = _whole_net_in_if(True, 32, 24)  # wide enough for the default --round-to 8
    path, out = save(model, tmp_path), str(tmp_path / "out.onnx")
    assert main([path, "-o", out]) == 0
    pruned = onnx.load(out)
    onnx.checker.check_model(pruned, full_check=True)
    assert _all_params(pruned) < _all_params(model)
    feeds = random_inputs(model, {})
    for cond in (True, False):
        feeds["cond"] = np.array(cond)
        assert run_model(pruned, feeds).outputs[0].shape == (1, 4)


def test_branches_reusing_names_and_nested_if(tmp_path):
    """Sibling branches may use the same names (renamed apart at load); an If nested in a branch
    is analysed the same way."""
    nodes, w, y = _net("", "x")
    same = {attr: _body(attr, nodes, [], [_vi(y, None)], w) for attr in ("then_branch", "else_branch")}
    inner = helper.make_node("If", ["cond"], ["inner_y"], name="inner_if", **same)
    nodes2, w2, y2 = _net("o_", "x")
    then_b = _body("outer_then", [inner], [], [_vi("inner_y", None)])
    else_b = _body("outer_else", nodes2, [], [_vi(y2, None)], w2)
    model = make_model([helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then_b, else_branch=else_b)],
                       {"cond": [], "x": X_SHAPE}, {"y": [1, 4]}, {}, input_types={"cond": TensorProto.BOOL})
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, min_groups=6)
    _check_both_branches(model, analysis, plan, pruned)
    names = [t.name for t in analysis.graph.initializers.values()]
    assert len(names) == len(set(names)) == 15


def test_if_branches_share_pruned_outer_tensor(tmp_path):
    """Both branches read the outer tensor r (pruned by conv0's filters) and give a conv output
    that a top-level Conv reads: the branches' filters are cut alike."""
    then_b = _body("then", [node("Conv", ["r", "tw"], "tc", pads=[1] * 4)], [], [_vi("tc", None)])
    else_b = _body("else", [node("Conv", ["r", "ew"], "ec", pads=[1] * 4), node("Relu", ["ec"], "er")],
                   [], [_vi("er", None)])
    inits = {"w0": weight(8, 3, 3, 3), "tw": weight(6, 8, 3, 3), "ew": weight(6, 8, 3, 3), "w3": weight(5, 6, 1, 1)}
    nodes = [node("Conv", ["x", "w0"], "c0", pads=[1] * 4), node("Relu", ["c0"], "r"),
             helper.make_node("If", ["cond"], ["b"], name="if", then_branch=then_b, else_branch=else_b),
             node("Conv", ["b", "w3"], "y")]
    model = make_model(nodes, {"cond": [], "x": X_SHAPE}, {"y": [1, 5, 8, 8]}, inits,
                       input_types={"cond": TensorProto.BOOL})
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, min_groups=2)
    _check_both_branches(model, analysis, plan, pruned)
    d = dims(pruned)
    assert d["w0"] == [4, 3, 3, 3] and d["tw"] == [3, 4, 3, 3] and d["ew"] == [3, 4, 3, 3]
    assert d["w3"] == [5, 3, 1, 1]
    # one group holds both branches' filters and the reader behind the If: both branches agree
    (group,) = [g for g in analysis.groups if any(s.tensor == "tw" and s.axis == 0 for s in g.slices)]
    assert {(s.tensor, s.axis) for s in group.slices} == {("tw", 0), ("ew", 0), ("w3", 1)}


def _loop_model(weights_inside: bool, c: int = 8) -> onnx.ModelProto:
    """Conv -> Loop (trip count 2; body: Conv -> Relu -> Conv on the carried value) -> Conv."""
    body_w = {"w1": weight(c, c, 3, 3), "w2": weight(c, c, 3, 3)}
    body = _body("body", [node("Conv", ["v", "w1"], "bc1", pads=[1] * 4), node("Relu", ["bc1"], "br"),
                          node("Conv", ["br", "w2"], "v_next", pads=[1] * 4),
                          node("Identity", ["cond_in"], "cond_out")],
                 [_vi("i", [], TensorProto.INT64), _vi("cond_in", [], TensorProto.BOOL), _vi("v", [1, c, 8, 8])],
                 [_vi("cond_out", [], TensorProto.BOOL), _vi("v_next", [1, c, 8, 8])],
                 body_w if weights_inside else None)
    inits = {"trips": np.array(2, np.int64), "go": np.array(True), "w0": weight(c, 3, 3, 3), "w3": weight(5, c, 1, 1)}
    if not weights_inside:
        inits.update(body_w)
    nodes = [node("Conv", ["x", "w0"], "v0", pads=[1] * 4),
             helper.make_node("Loop", ["trips", "go", "v0"], ["v_end"], name="loop", body=body),
             node("Conv", ["v_end", "w3"], "y")]
    return make_model(nodes, {"x": X_SHAPE}, {"y": [1, 5, 8, 8]}, inits)


@pytest.mark.parametrize("weights_inside", [True, False])
def test_loop_body_chain_and_carried_state(tmp_path, weights_inside):
    """The carried value comes from a top-level Conv and goes to one: its channels are one space
    across the initial value, the body input and output and the final value; the chain inside
    the body prunes on its own."""
    model = _loop_model(weights_inside)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, min_groups=2)
    onnx.checker.check_model(pruned, full_check=True)
    d = dims(pruned)
    if weights_inside:
        d.update({t.name: list(t.dims) for t in pruned.graph.node[1].attribute[0].g.initializer})
    assert d["w0"] == [4, 3, 3, 3] and d["w3"] == [5, 4, 1, 1]
    assert d["w1"] == [4, 4, 3, 3] and d["w2"] == [4, 4, 3, 3]
    out_dims = [x.dim_value for x in pruned.graph.node[1].attribute[0].g.output[1].type.tensor_type.shape.dim]
    assert out_dims == [1, 4, 8, 8]  # the body's declared output follows the cut
    feeds = random_inputs(model, {})
    assert run_model(pruned, feeds).outputs[0].shape == (1, 5, 8, 8)


def test_loop_scan_output(tmp_path):
    """A Loop's scan output stacks a body value along a new axis 0: body axis 1 is output axis 2."""
    body = _body("body", [node("Conv", ["x", "w1"], "bc1", pads=[1] * 4), node("Relu", ["bc1"], "br"),
                          node("Identity", ["cond_in"], "cond_out")],
                 [_vi("i", [], TensorProto.INT64), _vi("cond_in", [], TensorProto.BOOL)],
                 [_vi("cond_out", [], TensorProto.BOOL), _vi("br", [1, 8, 8, 8])], {"w1": weight(8, 3, 3, 3)})
    nodes = [helper.make_node("Loop", ["trips", ""], ["stack"], name="loop", body=body),
             node("ReduceMean", ["stack"], "mean", axes=[0], keepdims=0), node("Conv", ["mean", "w3"], "y")]
    model = make_model(nodes, {"x": X_SHAPE}, {"y": [1, 5, 8, 8]},
                       {"trips": np.array(3, np.int64), "w3": weight(5, 8, 1, 1)})
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, min_groups=1)
    d = dims(pruned)
    d.update({t.name: list(t.dims) for t in pruned.graph.node[0].attribute[0].g.initializer})
    assert d["w1"] == [4, 3, 3, 3] and d["w3"] == [5, 4, 1, 1]
    assert run_model(pruned, random_inputs(model, {})).outputs[0].shape == (1, 5, 8, 8)


def test_cli_with_calibration_on_loop(tmp_path):
    """Activation statistics cannot expose body tensors: those groups fall back to weight scores."""
    model = _loop_model(True, 32)  # wide enough for the default --round-to 8
    path, out, npz = save(model, tmp_path), str(tmp_path / "out.onnx"), str(tmp_path / "calib.npz")
    np.savez(npz, x=np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32))
    assert main([path, "-o", out, "--calib", npz, "--importance", "act"]) == 0
    pruned = onnx.load(out)
    onnx.checker.check_model(pruned, full_check=True)
    assert _all_params(pruned) < _all_params(model)


def test_loop_chain_inside_body_only(tmp_path):
    """The carried value is a graph input: its channels are frozen, the chain inside still prunes."""
    body = _body("body", [node("Conv", ["v", "w1"], "bc1", pads=[1] * 4), node("Relu", ["bc1"], "br"),
                          node("Conv", ["br", "w2"], "v_next", pads=[1] * 4),
                          node("Identity", ["cond_in"], "cond_out")],
                 [_vi("i", [], TensorProto.INT64), _vi("cond_in", [], TensorProto.BOOL), _vi("v", [1, 3, 8, 8])],
                 [_vi("cond_out", [], TensorProto.BOOL), _vi("v_next", [1, 3, 8, 8])],
                 {"w1": weight(8, 3, 3, 3), "w2": weight(3, 8, 3, 3)})
    model = make_model([helper.make_node("Loop", ["trips", "", "x"], ["y"], name="loop", body=body)],
                       {"x": X_SHAPE}, {"y": X_SHAPE}, {"trips": np.array(3, np.int64)})
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, min_groups=1)
    d = {t.name: list(t.dims) for t in pruned.graph.node[0].attribute[0].g.initializer}
    assert d["w1"] == [4, 3, 3, 3] and d["w2"] == [3, 4, 3, 3]
    frozen = [g.frozen_reason for g in analysis.groups if g.frozen_reason]
    assert any("graph input 'x'" in r or "graph output 'y'" in r for r in frozen)


def test_scan_matmul_body(tmp_path):
    """Scan over a sequence [T, 2, 8]: the body's MatMul -> Relu -> MatMul prunes inside; the top-level
    MatMuls before and after the Scan are tied to the body through the scan input and output."""
    body = _body("body", [node("MatMul", ["x_t", "w1"], "h"), node("Relu", ["h"], "hr"),
                          node("MatMul", ["hr", "w2"], "y_t")],
                 [_vi("x_t", [2, 8])], [_vi("y_t", [2, 6])], {"w1": weight(8, 16), "w2": weight(16, 6)})
    inits = {"w0": weight(3, 8), "w3": weight(6, 4)}
    nodes = [node("MatMul", ["seq", "w0"], "xs"),
             helper.make_node("Scan", ["xs"], ["ys"], name="scan", body=body, num_scan_inputs=1),
             node("MatMul", ["ys", "w3"], "y")]
    model = make_model(nodes, {"seq": [5, 2, 3]}, {"y": [5, 2, 4]}, inits)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, min_groups=3)
    onnx.checker.check_model(pruned, full_check=True)
    d = dims(pruned)
    d.update({t.name: list(t.dims) for t in pruned.graph.node[1].attribute[0].g.initializer})
    assert d["w0"] == [3, 4] and d["w1"] == [4, 8]
    assert d["w2"] == [8, 3] and d["w3"] == [3, 4]
    feeds = random_inputs(model, {})
    assert run_model(pruned, feeds).outputs[0].shape == (5, 2, 4)


def test_scan_axis_is_frozen(tmp_path):
    """Channels along the scan axis of a scan input are iterations, not channels: frozen."""
    body = _body("body", [node("Relu", ["x_t"], "y_t")], [_vi("x_t", [2, 2])], [_vi("y_t", [2, 2])])
    inits = {"w0": weight(3, 5), "w3": weight(2, 4)}
    nodes = [node("MatMul", ["seq", "w0"], "xs"),  # xs [2, 2, 5] scanned along its last axis
             helper.make_node("Scan", ["xs"], ["ys"], name="scan", body=body, num_scan_inputs=1,
                              scan_input_axes=[2], scan_output_axes=[2]),
             node("Transpose", ["ys"], "yt", perm=[0, 2, 1]), node("MatMul", ["yt", "w3"], "y")]
    model = make_model(nodes, {"seq": [2, 2, 3]}, {"y": None}, inits)
    analysis = analyze(save(model, tmp_path))
    (group,) = [g for g in analysis.groups if g.root[0] == "xs"]
    assert group.frozen_reason and "iteration axis" in group.frozen_reason


def test_shape_constant_shared_by_layers_inside_a_branch_is_cloned(tmp_path):
    """The dynamo exporter shares one Reshape target among every layer's heads split; inside a
    branch too. Each layer's group must be able to rewrite its own copy (a shared one would freeze
    every group that reaches it), and the output shares it again where nothing changed."""
    branches = {}
    for tag, attr in (("t_", "then_branch"), ("e_", "else_branch")):
        inits = {f"{tag}shape": np.array([2, 4, 4], np.int64), f"{tag}flat": np.array([2, 16], np.int64)}
        nodes, x = [], "x"
        for layer in range(2):
            p = f"{tag}{layer}"
            inits.update({f"{p}w1": weight(16, 16), f"{p}w2": weight(16, 16)})
            nodes += [node("MatMul", [x, f"{p}w1"], f"{p}h"),
                      node("Reshape", [f"{p}h", f"{tag}shape"], f"{p}heads"),  # [2, 4 heads, 4]
                      node("Relu", [f"{p}heads"], f"{p}r"),
                      node("Reshape", [f"{p}r", f"{tag}flat"], f"{p}f"),
                      node("MatMul", [f"{p}f", f"{p}w2"], f"{p}y")]
            x = f"{p}y"
        branches[attr] = _body(tag, nodes, [], [_vi(x, None)], inits)
    model = make_model([helper.make_node("If", ["cond"], ["y"], name="if", **branches)],
                       {"cond": [], "x": [2, 16]}, {"y": [2, 16]}, {}, input_types={"cond": TensorProto.BOOL})
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, min_groups=4)
    assert not [g.frozen_reason for g in analysis.groups if g.frozen_reason and "shape constant" in g.frozen_reason]
    _check_both_branches(model, analysis, plan, pruned)
    body_inits = [t for n in pruned.graph.node for a in n.attribute for t in a.g.initializer]
    assert not [t.name for t in body_inits if t.doc_string]  # no load-time clone mark left behind
    assert len(body_inits) <= len([t for n in model.graph.node for a in n.attribute for t in a.g.initializer]) + 4
