"""Compensation: bias folding and least-squares refits on small models built in code."""
import numpy as np
import onnx
import pytest
from helpers import make_model, node, rng, save, weight

from onnxprune import Plan, analyze, calib, compensate, ir
from onnxprune.testing import TOLERANCE, compare, plan_removing, run_model, zero_consumers


def _plan(analysis, root_tensor: str, pruned) -> Plan:
    return plan_removing(analysis, {root_tensor: pruned})


def _prune(path: str, root_tensor: str, pruned, data, mode: str) -> onnx.ModelProto:
    analysis = analyze(path)
    plan = _plan(analysis, root_tensor, pruned)
    model = analysis.apply(plan).proto
    found = compensate.consumers(analysis.graph, analysis.groups, plan)
    assert found, "the plan has a linear consumer to compensate"
    stats = calib.collect_stats(analysis.graph.proto, data, compensate.stat_spaces(found))
    compensate.compensate(analysis.graph, found, model, data, stats, mode)
    onnx.checker.check_model(model, full_check=True)
    return model


def _error(original, pruned, x) -> float:
    return compare(run_model(original, {"x": x}).outputs, run_model(pruned, {"x": x}).outputs).relative


def _dense(op: str, constant=(2, 5)):
    """x -> dense(w1) + b1 -> Relu -> dense(w2) -> y; hidden channels in `constant` are constant (w1 column 0)."""
    w1, b1 = weight(6, 8), np.abs(weight(8)) + 0.5
    w1[:, list(constant)] = 0
    if op == "MatMul":
        nodes = [node("MatMul", ["x", "w1"], "h"), node("Add", ["h", "b1"], "hb"), node("Relu", ["hb"], "r"),
                 node("MatMul", ["r", "w2"], "y")]
        inits = {"w1": w1, "b1": b1, "w2": weight(8, 3)}
    else:  # Gemm with transB=1 and no C on the consumer
        nodes = [node("Gemm", ["x", "w1", "b1"], "h", transB=1), node("Relu", ["h"], "r"),
                 node("Gemm", ["r", "w2"], "y", transB=1)]
        inits = {"w1": np.ascontiguousarray(w1.T), "b1": b1, "w2": weight(3, 8)}
    return make_model(nodes, {"x": ["N", 6]}, {"y": ["N", 3]}, inits)


def _data(shape, n=64, seed=None):
    gen = rng() if seed is None else np.random.default_rng(seed)
    return calib.CalibData({"x": gen.standard_normal((n, *shape)).astype(np.float32)}, 16)


@pytest.mark.parametrize("op", ["MatMul", "Gemm"])
def test_bias_compensates_constant_inputs_exactly(tmp_path, op):
    model = _dense(op)
    path = save(model, tmp_path)
    root = "h"
    data, x = _data((6,)), rng().standard_normal((20, 6)).astype(np.float32)
    uncompensated = _prune(path, root, [2, 5], data, "none")
    assert _error(model, uncompensated, x) > 1e-2
    fixed = _prune(path, root, [2, 5], data, "bias")
    assert _error(model, fixed, x) < 1e-5
    # the consumer had no bias: one was added (an Add behind MatMul, input C of Gemm)
    assert len(fixed.graph.initializer) == len(model.graph.initializer) + 1


def _conv(constant=(1, 4)):
    w1, b1 = weight(6, 3, 3, 3), np.abs(weight(6)) + 0.5
    w1[list(constant)] = 0
    nodes = [node("Conv", ["x", "w1", "b1"], "c", pads=[1, 1, 1, 1]), node("Relu", ["c"], "r"),
             node("Conv", ["r", "w2"], "y", strides=[2, 2])]
    return make_model(nodes, {"x": ["N", 3, 9, 9]}, {"y": None}, {"w1": w1, "b1": b1, "w2": weight(5, 6, 3, 3)})


def test_bias_compensates_constant_conv_channels_exactly(tmp_path):
    model = _conv()
    path = save(model, tmp_path)
    data, x = _data((3, 9, 9), 32), rng().standard_normal((4, 3, 9, 9)).astype(np.float32)
    assert _error(model, _prune(path, "c", [1, 4], data, "none"), x) > 1e-2
    assert _error(model, _prune(path, "c", [1, 4], data, "bias"), x) < 1e-5


def test_lsq_recovers_channels_that_are_linear_in_the_kept_ones(tmp_path, monkeypatch):
    """Without a nonlinearity, 8 hidden channels of a 6-d input are linearly dependent: a refit is exact
    (up to the ridge, made tiny here: the default trades exactness for robustness on real activations)."""
    monkeypatch.setattr(compensate, "RIDGES", (1e-9,))
    rng = np.random.default_rng(3)
    inits = {"w1": rng.standard_normal((6, 8)).astype(np.float32), "w2": rng.standard_normal((8, 3)).astype(np.float32)}
    model = make_model([node("MatMul", ["x", "w1"], "h"), node("MatMul", ["h", "w2"], "y")],
                       {"x": ["N", 6]}, {"y": ["N", 3]}, inits)
    path = save(model, tmp_path)
    data, x = _data((6,), 200, seed=4), rng.standard_normal((20, 6)).astype(np.float32)
    none = _error(model, _prune(path, "h", [0, 3], data, "none"), x)
    bias = _error(model, _prune(path, "h", [0, 3], data, "bias"), x)
    lsq = _error(model, _prune(path, "h", [0, 3], data, "lsq"), x)
    assert none > 0.05 and bias > 0.05
    assert lsq < 1e-4


def test_lsq_refits_conv_from_sampled_patches(tmp_path):
    model = _conv(constant=())
    path = save(model, tmp_path)
    data, x = _data((3, 9, 9), 48), rng().standard_normal((8, 3, 9, 9)).astype(np.float32)
    none = _error(model, _prune(path, "c", [0, 2, 3], data, "none"), x)
    lsq = _error(model, _prune(path, "c", [0, 2, 3], data, "lsq"), x)
    assert lsq < 0.9 * none


@pytest.mark.parametrize("attrs", [dict(pads=[1, 0, 2, 1], strides=[2, 1]), dict(dilations=[2, 2], pads=[2, 2, 2, 2])])
def test_conv_form_rows_reproduce_the_conv(tmp_path, attrs):
    from onnxprune.ir import load
    from onnxprune.rules import rule_for

    model = make_model([node("Conv", ["x", "w", "b"], "y", **attrs)], {"x": [2, 4, 7, 8]}, {"y": None},
                       {"w": weight(5, 4, 3, 3), "b": weight(5)})
    graph = load(save(model, tmp_path))
    form = rule_for(graph.nodes[0]).linear_form(graph.nodes[0], graph)
    x = rng().standard_normal((2, 4, 7, 8)).astype(np.float32)
    y = run_model(model, {"x": x}).outputs[0]
    rows = form.rows(x, np.random.default_rng(0), 10 ** 6)
    got = np.einsum("rck,ckn->rn", rows, form.matrix(graph.const("w"))) + graph.const("b")
    np.testing.assert_allclose(got, y.transpose(0, 2, 3, 1).reshape(-1, 5), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(form.weight_from(form.matrix(graph.const("w")), graph.const("w")), graph.const("w"))


@pytest.mark.parametrize("mode", ["bias", "moments", "lsq"])
@pytest.mark.parametrize("build, root, shape, pruned", [
    (lambda: _dense("MatMul", constant=()), "h", (6,), [1, 4, 6]),
    (lambda: _dense("Gemm", constant=()), "h", (6,), [0, 7]),
    (lambda: _conv(constant=()), "c", (3, 9, 9), [2, 3, 5]),
])
def test_compensation_keeps_the_dead_channel_oracle(tmp_path, mode, build, root, shape, pruned):
    """Consumers already zero on the removed channels: pruning with compensation changes nothing."""
    model = build()
    analysis = analyze(save(model, tmp_path))
    zeroed = zero_consumers(analysis, _plan(analysis, root, pruned)).proto
    path = save(zeroed, tmp_path, "zeroed.onnx")
    data = _data(shape, 48)
    x = rng().standard_normal((6, *shape)).astype(np.float32)
    assert _error(zeroed, _prune(path, root, pruned, data, mode), x) <= TOLERANCE


def _wide_ffn(hidden: int = 48):
    """x [N, 8] -> MatMul (8 -> hidden) -> Relu -> MatMul (hidden -> 8): a hidden layer as wide as a small
    calibration set is long."""
    gen = np.random.default_rng(7)
    inits = {"w1": gen.standard_normal((8, hidden)).astype(np.float32),
             "w2": (gen.standard_normal((hidden, 8)) / np.sqrt(hidden)).astype(np.float32)}
    return make_model([node("MatMul", ["x", "w1"], "h"), node("Relu", ["h"], "r"), node("MatMul", ["r", "w2"], "y")],
                      {"x": ["N", 8]}, {"y": ["N", 8]}, inits)


def test_lsq_validates_its_ridge_where_a_small_one_overfits(tmp_path, monkeypatch):
    """28 calibration rows for a refit of 32 inputs: the old fixed ridge (1e-3) fits the rows' noise and
    does worse than bias compensation on new inputs; the ridge chosen on held-out rows does not."""
    model = _wide_ffn()
    path = save(model, tmp_path)
    data, x = _data((8,), 28, seed=5), np.random.default_rng(6).standard_normal((400, 8)).astype(np.float32)
    removed = list(range(0, 48, 3))
    bias = _error(model, _prune(path, "h", removed, data, "bias"), x)
    validated = _error(model, _prune(path, "h", removed, data, "lsq"), x)
    monkeypatch.setattr(compensate, "RIDGES", (1e-3,))
    fixed = _error(model, _prune(path, "h", removed, data, "lsq"), x)
    assert fixed > bias
    assert validated < bias


def test_moments_restore_the_spread_of_each_consumer_output(tmp_path):
    """Removing hidden units shrinks the variance of what the consumer computes; `moments` scales each
    output channel back to the original's mean and standard deviation on the calibration rows."""
    model = _wide_ffn()
    path = save(model, tmp_path)
    data = _data((8,), 256, seed=8)
    x = data.arrays["x"][:compensate.MOMENT_SAMPLES]  # the samples the moments are measured on
    removed = list(range(0, 48, 2))
    original = run_model(model, {"x": x}).outputs[0]
    bias = run_model(_prune(path, "h", removed, data, "bias"), {"x": x}).outputs[0]
    moments = run_model(_prune(path, "h", removed, data, "moments"), {"x": x}).outputs[0]
    assert not np.allclose(bias.std(0), original.std(0), rtol=0.05)
    np.testing.assert_allclose(moments.std(0), original.std(0), rtol=1e-4)
    np.testing.assert_allclose(moments.mean(0), original.mean(0), atol=1e-4)


def test_compensation_still_sees_a_real_change(tmp_path):
    """The oracle comparison above can fail: without zeroing, compensation cannot hide the removal."""
    model = _dense("MatMul", constant=())
    path = save(model, tmp_path)
    x = rng().standard_normal((6, 6)).astype(np.float32)
    assert _error(model, _prune(path, "h", [1, 4, 6], _data((6,), 48), "lsq"), x) > TOLERANCE


def test_bias_compensation_of_stacked_layers_uses_each_layers_own_statistics(tmp_path):
    """Two FFN blocks (MatMul -> Add(bias, .) -> Relu -> MatMul -> Add(bias, .)), both hidden spaces pruned:
    each consumer's bias moves by exactly E[a_removed] @ W[removed] of its own input in the original model,
    and the first block's output keeps its calibration mean (its input is not pruned upstream)."""
    rng = np.random.default_rng(11)
    inits = {"w1": weight(8, 16), "b1": np.abs(weight(16)) + 0.3, "w2": weight(16, 8), "c1": weight(8),
             "w3": weight(8, 16), "b3": np.abs(weight(16)) + 0.3, "w4": weight(16, 8), "c2": weight(8)}
    nodes = [node("MatMul", ["x", "w1"], "h1"), node("Add", ["b1", "h1"], "h1b"), node("Relu", ["h1b"], "r1"),
             node("MatMul", ["r1", "w2"], "m1"), node("Add", ["c1", "m1"], "y1"),
             node("MatMul", ["y1", "w3"], "h2"), node("Add", ["b3", "h2"], "h2b"), node("Relu", ["h2b"], "r2"),
             node("MatMul", ["r2", "w4"], "m2"), node("Add", ["c2", "m2"], "y")]
    model = make_model(nodes, {"x": [4, 5, 8]}, {"y": [4, 5, 8]}, inits)
    path = save(model, tmp_path)
    analysis = analyze(path)
    plan = plan_removing(analysis, {"h1": (0, 3, 9, 12), "h2": (1, 2, 7, 15)})
    found = compensate.consumers(analysis.graph, analysis.groups, plan)
    assert [c.form.bias for c in found] == ["c1", "c2"]
    data = calib.CalibData({"x": rng.standard_normal((32, 5, 8)).astype(np.float32)}, 4, True)
    stats = calib.collect_stats(analysis.graph.proto, data, compensate.stat_spaces(found))
    pruned = analysis.apply(plan).proto
    compensate.compensate(analysis.graph, found, pruned, data, stats, "bias")
    onnx.checker.check_model(pruned, full_check=True)

    acts = {}
    calib.run_batches(model, data, ["r1", "r2", "y1"],
                      lambda _, v: [acts.setdefault(k, []).append(a) for k, a in v.items()])
    acts = {k: np.concatenate(v).astype(np.float64) for k, v in acts.items()}
    new = {t.name: onnx.numpy_helper.to_array(t) for t in pruned.graph.initializer}
    for r, w, b, removed in (("r1", "w2", "c1", [0, 3, 9, 12]), ("r2", "w4", "c2", [1, 2, 7, 15])):
        want = acts[r].reshape(-1, 16)[:, removed].mean(0) @ inits[w].astype(np.float64)[removed]
        np.testing.assert_allclose(new[b] - inits[b], want, atol=1e-5)
    after = []
    calib.run_batches(pruned, data, ["y1"], lambda _, v: after.append(v["y1"]))
    err = np.concatenate(after).astype(np.float64) - acts["y1"]
    assert np.abs(err.reshape(-1, 8).mean(0)).max() < 1e-5 < np.abs(err).max()


def test_a_tied_weight_is_left_as_pruned_and_named(tmp_path, monkeypatch, caplog):
    """w2 is read by two MatMuls (a weight shared by two layers): a refit or bias fitted on one
    reader's inputs would be wrong for the other, so only w3, read once, is compensated."""
    import logging

    from onnxprune.ir import limits

    monkeypatch.setattr(limits, "PRIVATE_CONSTANT_MAX", 16)  # w2 (24 values) stays shared at load
    nodes = [node("MatMul", ["x", "w1"], "h"), node("Relu", ["h"], "r"), node("Sigmoid", ["h"], "s"),
             node("MatMul", ["r", "w2"], "y1"), node("MatMul", ["s", "w2"], "y2"), node("MatMul", ["r", "w3"], "y3")]
    model = make_model(nodes, {"x": ["N", 6]}, {"y1": ["N", 3], "y2": ["N", 3], "y3": ["N", 3]},
                       {"w1": weight(6, 8), "w2": weight(8, 3), "w3": weight(8, 3)})
    analysis = analyze(save(model, tmp_path))
    assert [n.name for n, _ in analysis.graph.consumers("w2")] == ["MatMul_y1", "MatMul_y2"]
    plan = _plan(analysis, "h", [2, 5])
    with caplog.at_level(logging.INFO, logger="onnxprune.compensate"):
        found = compensate.consumers(analysis.graph, analysis.groups, plan)
    assert [c.form.weight for c in found] == ["w3"]
    assert "'w2' is a tied weight, read by MatMul node 'MatMul_y1', MatMul node 'MatMul_y2'" in caplog.text
    pruned = analysis.apply(plan).proto
    before = {t.name: onnx.numpy_helper.to_array(t) for t in pruned.graph.initializer}
    data = _data((6,), 64, seed=5)
    stats = calib.collect_stats(analysis.graph.proto, data, compensate.stat_spaces(found))
    compensate.compensate(analysis.graph, found, pruned, data, stats, "lsq")
    after = {t.name: onnx.numpy_helper.to_array(t) for t in pruned.graph.initializer}
    assert np.array_equal(after["w2"], before["w2"])  # the tied weight is as pruned
    assert not np.array_equal(after["w3"], before["w3"])  # its untied neighbour was refit


# -- one pass over the network for all refits (calib.Stepwise) ---------------------------------------------

def _deep_cnn():
    """Conv chain with a residual Add, a branch (two convs read r3) and a MatMul head without a bias (its
    refit adds an Add behind it): x -> c1 -> r1 -> c2 -> r2 -> c3 (+ r1) -> r3 -> {c4 -> r4 -> mean -> fc, c6}."""
    inits = {"w1": weight(8, 3, 3, 3), "b1": np.abs(weight(8)) + 0.2, "w2": weight(8, 8, 3, 3), "b2": weight(8),
             "w3": weight(8, 8, 1, 1), "b3": weight(8), "w4": weight(8, 8, 3, 3), "b4": weight(8),
             "w6": weight(4, 8, 1, 1), "wf": weight(8, 5)}
    nodes = [node("Conv", ["x", "w1", "b1"], "h1", pads=[1, 1, 1, 1]), node("Relu", ["h1"], "r1"),
             node("Conv", ["r1", "w2", "b2"], "h2", pads=[1, 1, 1, 1]), node("Relu", ["h2"], "r2"),
             node("Conv", ["r2", "w3", "b3"], "h3"), node("Add", ["h3", "r1"], "s"), node("Relu", ["s"], "r3"),
             node("Conv", ["r3", "w4", "b4"], "h4", pads=[1, 1, 1, 1]), node("Relu", ["h4"], "r4"),
             node("ReduceMean", ["r4"], "f", axes=[2, 3], keepdims=0), node("MatMul", ["f", "wf"], "y1"),
             node("Conv", ["r3", "w6"], "y2")]
    return make_model(nodes, {"x": ["N", 3, 8, 8]}, {"y1": ["N", 5], "y2": None}, inits)


DEEP_REMOVED = {"h1": [1, 4, 6], "h2": [0, 3], "h4": [2, 5, 7]}


class _FullRuns:
    """The refits' inputs as they were computed before calib.Stepwise: every target runs the model from
    its graph inputs (calib.run_batches, ir.needed_for), so L targets cost L runs of the network."""

    def __init__(self, data, targets, label):
        self.data, self.targets, self.step, self.nodes_run = data, list(targets), 0, 0

    def next(self, model, visit):
        name = self.targets[self.step]
        self.step += 1
        self.nodes_run += len(ir.needed_for(model, [name]).graph.node)
        calib.run_batches(model, self.data, [name], visit, progress=False)

    def changed(self, initializers):
        pass


def _deep_prune(tmp_path, mode, runner=None, monkeypatch=None, model=None):
    """The deep CNN pruned by DEEP_REMOVED and compensated by `mode` (the refits' inputs through `runner`,
    default calib.Stepwise); returns (pruned model, the runners used, the consumers' inputs)."""
    made = []
    runner = runner or calib.Stepwise

    def recorded(*args):
        made.append(runner(*args))
        return made[-1]

    monkeypatch.setattr(calib, "Stepwise", recorded)
    path = save(model if model is not None else _deep_cnn(), tmp_path, f"deep_{mode}_{runner.__name__}.onnx")
    analysis = analyze(path)
    plan = plan_removing(analysis, DEEP_REMOVED)
    found = compensate.consumers(analysis.graph, analysis.groups, plan)
    pruned = analysis.apply(plan).proto
    data = _data((3, 8, 8), 40, seed=21)  # batches of 16, 16 and 8
    stats = calib.collect_stats(analysis.graph.proto, data, compensate.stat_spaces(found))
    compensate.compensate(analysis.graph, found, pruned, data, stats, mode)
    onnx.checker.check_model(pruned, full_check=True)
    return pruned, made, [c.form.x for c in found]


@pytest.mark.parametrize("mode", ["lsq", "moments"])
def test_stepwise_refits_equal_a_full_run_per_consumer(tmp_path, monkeypatch, mode):
    """Running only the nodes not run yet, on the tensors kept from earlier runs, gives the weights that
    running the network up to every consumer's input gives (up to float round-off), and runs every node
    needed for the consumers' inputs exactly once: on this 12-node model with 5 consumers (two reading
    one tensor, one behind a residual Add) the full runs take more than twice as many node runs."""
    model = _deep_cnn()
    stepwise, steps, xs = _deep_prune(tmp_path, mode, monkeypatch=monkeypatch, model=model)
    full, full_runs, _ = _deep_prune(tmp_path, mode, _FullRuns, monkeypatch, model)
    assert xs == ["r1", "r2", "r3", "f", "r3"]  # r3 is kept while f is computed
    got = {t.name: onnx.numpy_helper.to_array(t) for t in stepwise.graph.initializer}
    want = {t.name: onnx.numpy_helper.to_array(t) for t in full.graph.initializer}
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert [n.op_type for n in stepwise.graph.node] == [n.op_type for n in full.graph.node]
    (step,) = steps
    assert step.nodes_run == len(ir.needed_for(stepwise, xs).graph.node) == 10
    assert full_runs[0].nodes_run == 2 + 4 + 7 + 10 + 7
    assert step.peak_bytes > 0


@pytest.mark.parametrize("mode", ["lsq", "moments"])
def test_stepwise_compensation_keeps_the_dead_channel_oracle_of_a_deep_model(tmp_path, monkeypatch, mode):
    """Consumers already zero on the removed channels of all three groups: compensating layer after layer
    on kept tensors changes nothing."""
    analysis = analyze(save(_deep_cnn(), tmp_path))
    zeroed = zero_consumers(analysis, plan_removing(analysis, DEEP_REMOVED)).proto
    pruned, _, _ = _deep_prune(tmp_path, mode, monkeypatch=monkeypatch, model=zeroed)
    x = rng().standard_normal((6, 3, 8, 8)).astype(np.float32)
    assert _error(zeroed, pruned, x) <= TOLERANCE


def test_stepwise_recomputes_after_a_change_to_a_node_already_run(tmp_path):
    """A refit that writes an initializer an earlier node read (a bias shared upstream) leaves the kept
    tensors stale: `changed` drops them and the next target is computed afresh."""
    model = _deep_cnn()
    data = _data((3, 8, 8), 40, seed=22)

    def step_values(changed: bool) -> np.ndarray:
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
        steps = calib.Stepwise(data, ["r1", "r3"], "test")
        steps.next(proto, lambda i, v: None)
        ir.set_initializer(proto, "b1", np.full(8, 3.0, np.float32))  # read by c1, run for r1
        if changed:
            steps.changed({"b1", "unrelated"})
        seen = []
        steps.next(proto, lambda i, v: seen.append(v["r3"]))
        return np.concatenate(seen)

    def full_values() -> np.ndarray:
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
        ir.set_initializer(proto, "b1", np.full(8, 3.0, np.float32))
        seen = []
        calib.run_batches(proto, data, ["r3"], lambda i, v: seen.append(v["r3"]), progress=False)
        return np.concatenate(seen)

    np.testing.assert_allclose(step_values(True), full_values(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(step_values(False), full_values(), atol=1e-3)


def test_segment_feeds_an_available_tensor_to_a_body_that_reads_it(tmp_path):
    """An If body reads `a` from the outer scope: with `a` available, the segment holds the If alone, takes
    `a` (and the graph input `cond`) as graph inputs, and computes what the whole model computes."""
    from onnx import TensorProto, helper

    then_g = helper.make_graph([node("Neg", ["a"], "t")], "then", [], [helper.make_tensor_value_info("t", 1, None)])
    else_g = helper.make_graph([node("Mul", ["a", "k"], "e")], "else", [],
                               [helper.make_tensor_value_info("e", 1, None)])
    model = make_model([node("Relu", ["x"], "a"), node("Sigmoid", ["a"], "b"),
                        node("If", ["cond"], "y", then_branch=then_g, else_branch=else_g),
                        node("Add", ["y", "b"], "z")],
                       {"x": ["N", 4], "cond": []}, {"z": None}, {"k": np.full(4, 2.0, np.float32)},
                       input_types={"cond": TensorProto.BOOL})
    seg = ir.segment(model, ["y"], {"a": (np.dtype(np.float32), 2)}, ["z"])
    assert seg.nodes == 1 and seg.produced == {"y"}
    assert {i.name for i in seg.model.graph.input} == {"a", "cond"}
    assert "a" in seg.reads and "k" in seg.reads
    assert seg.live == {"y"} | {"a"}  # z = y + Sigmoid(a): both still needed
    assert [o.name for o in seg.model.graph.output] == ["y"]
    x = rng().standard_normal((3, 4)).astype(np.float32)
    a = np.maximum(x, 0)
    for cond in (True, False):
        feeds = {"a": a, "cond": np.array(cond)}
        got = run_model(seg.model, feeds).outputs[0]
        np.testing.assert_allclose(got, -a if cond else 2 * a)
    assert ir.segment(model, ["a"], {"a": (np.dtype(np.float32), 2)}).model is None


def _auto_run(tmp_path, model, calib_samples: int, total: int, mode: str = "auto"):
    """Prune half the hidden units of `model` through the CLI with `--compensate mode`; the report's
    compensation and the pruned model's outputs on new inputs."""
    import json

    from onnxprune.cli import main

    path, out, report = save(model, tmp_path), str(tmp_path / f"{mode}.onnx"), tmp_path / f"{mode}.json"
    npz = str(tmp_path / "calib.npz")
    np.savez(npz, x=np.random.default_rng(5).standard_normal((total, 8)).astype(np.float32))
    assert main([path, "-o", out, "--ratio", "0.5", "--round-to", "1", "--calib", npz, "--calib-samples",
                 str(calib_samples), "--compensate", mode, "--providers", "cpu", "--report-json", str(report)]) == 0
    x = np.random.default_rng(6).standard_normal((400, 8)).astype(np.float32)
    return json.loads(report.read_text())["calibration"]["compensation"], run_model(out, {"x": x}).outputs[0]


def test_auto_keeps_bias_where_the_refit_does_worse(tmp_path, monkeypatch):
    """A refit made worse on purpose (a negative ridge amplifies the fit to 12 samples' noise) loses to bias
    on the held-out samples: auto measures both and writes the bias-compensated model."""
    monkeypatch.setattr(compensate, "RIDGES", (-0.5,))
    summary, auto = _auto_run(tmp_path, _wide_ffn(), 12, 40)
    assert summary["mode"] == "bias" and summary["auto"]["kept"] == "bias", summary
    assert summary["auto"]["bias"]["relative_error"] < summary["auto"]["lsq"]["relative_error"]
    _, bias = _auto_run(tmp_path, _wide_ffn(), 12, 40, "bias")
    np.testing.assert_array_equal(auto, bias)


def test_auto_keeps_lsq_where_the_refit_is_better(tmp_path):
    summary, auto = _auto_run(tmp_path, _wide_ffn(), 256, 400)
    assert summary["mode"] == "lsq" and summary["auto"]["samples"] == 128
    _, lsq = _auto_run(tmp_path, _wide_ffn(), 256, 400, "lsq")
    np.testing.assert_array_equal(auto, lsq)


def test_token_scores_of_lm_logits():
    """Logits [N, positions, vocabulary]: KL of the softmaxes per token and the share of unchanged top-1."""
    gen = np.random.default_rng(0)
    a = gen.standard_normal((2, 3, 1000)).astype(np.float32)
    b = a.copy()
    b[0, 1, int(a[0, 1].argmax())] -= 50.0  # one position loses its top token
    scores = calib.token_scores(a, b)
    assert scores["token_top1_agreement"] == pytest.approx(5 / 6)
    pa = np.exp(a[0, 1] - a[0, 1].max()) / np.exp(a[0, 1] - a[0, 1].max()).sum()
    pb = np.exp(b[0, 1] - b[0, 1].max()) / np.exp(b[0, 1] - b[0, 1].max()).sum()
    assert scores["token_kl"] == pytest.approx(float(np.sum(pa * np.log(pa / pb))) / 6, rel=1e-4)
    assert calib.token_scores(a, a)["token_kl"] == pytest.approx(0.0, abs=1e-12)


def test_auto_judges_lm_logits_by_their_token_kl():
    """SmolLM2-135M at 20 % fewer parameters, measured: lsq's logits were closer to the original's by
    relative error, cosine and top-1 tokens, bias's by per-token KL, and bias had the lower perplexity
    (72.6 against 75.7). For LM logits the KL decides; without it, the vote does."""
    def fidelity(rel, cos, kl=None, top1=None):
        row = {"relative_error": rel, "cosine_mean": cos, "cosine_min": cos}
        if kl is not None:
            row.update(token_kl=kl, token_top1_agreement=top1)
        return {"samples": 16, "outputs": {"logits": row}}

    lsq, bias = fidelity(0.485, 0.879, 0.911, 0.507), fidelity(0.669, 0.782, 0.887, 0.503)
    measures = compensate.fidelity_measures
    assert compensate.no_worse(measures(bias), measures(lsq))
    assert not compensate.no_worse(measures(lsq), measures(bias))
    assert compensate.no_worse(measures(fidelity(0.485, 0.879)), measures(fidelity(0.669, 0.782)))
