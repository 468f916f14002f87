"""Normalisation layers: per-channel parameters cut with the channels; LayerNorm over them is inexact."""
import numpy as np
from checks import dims, init, kept, removed
from helpers import frozen_reasons, make_model, node, prune_with_oracle, save, weight

from onnxprune import PruneConfig, analyze
from onnxprune.testing import random_inputs, run_model

C = 8


def _conv_norm_conv(norm: list, inits: dict, extra_inputs=None):
    inits = {"w1": weight(C, 3, 3, 3), "w2": weight(4, C, 1, 1), **inits}
    nodes = [node("Conv", ["x", "w1"], "a", pads=[1, 1, 1, 1]), *norm, node("Relu", ["n"], "r"),
             node("Conv", ["r", "w2"], "y")]
    return make_model(nodes, {"x": [1, 3, 5, 5], **(extra_inputs or {})}, {"y": [1, 4, 5, 5]}, inits)


def _bn_params():
    rng = np.random.default_rng(3)
    return {"gamma": rng.uniform(0.1, 2, C).astype(np.float32), "beta": weight(C, scale=1.0),
            "mean": weight(C, scale=1.0), "var": rng.uniform(0.5, 2, C).astype(np.float32)}


def test_batchnorm_parameters_are_cut_and_kept_values_unchanged(tmp_path):
    params = _bn_params()
    model = _conv_norm_conv([node("BatchNormalization", ["a", "gamma", "beta", "mean", "var"], "n")], params)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    (group,) = analysis.prunable
    assert [s.tensor for s in group.slices if s.scale] == ["gamma"]  # the bn criterion reads this one
    gone = removed(analysis, plan)
    keep = kept(C, gone[("w1", 0)])
    assert len(keep) == C // 2
    for name, value in params.items():
        assert gone[(name, 0)] == gone[("w1", 0)]
        np.testing.assert_array_equal(init(pruned, name), value[keep])


def test_batchnorm_bn_criterion_drops_the_smallest_gammas(tmp_path):
    params = _bn_params()
    params["gamma"] = np.array([5, 0.01, 4, 0.02, 3, 0.03, 2, 0.04], np.float32)
    model = _conv_norm_conv([node("BatchNormalization", ["a", "gamma", "beta", "mean", "var"], "n")], params)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, importance="bn")
    assert removed(analysis, plan)[("gamma", 0)] == [1, 3, 5, 7]
    np.testing.assert_array_equal(init(pruned, "gamma"), [5, 4, 3, 2])


def test_instancenorm_parameters_are_cut(tmp_path):
    inits = {"s": weight(C, scale=1.0), "b": weight(C, scale=1.0)}
    model = _conv_norm_conv([node("InstanceNormalization", ["a", "s", "b"], "n")], inits)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    gone = removed(analysis, plan)
    keep = kept(C, gone[("w1", 0)])
    for name in ("s", "b"):
        np.testing.assert_array_equal(init(pruned, name), inits[name][keep])
    assert analysis.prunable[0].exact


def test_batchnorm_with_computed_parameters_freezes(tmp_path):
    params = _bn_params()
    del params["gamma"]
    model = _conv_norm_conv([node("BatchNormalization", ["a", "gamma", "beta", "mean", "var"], "n")], params,
                            extra_inputs={"gamma": [C]})
    analysis = analyze(save(model, tmp_path))
    assert not analysis.prunable
    assert any("parameter input 'gamma' is computed at run time" in r for r in frozen_reasons(analysis))


D, S = 16, 5


def _mlp_with_layernorm():
    """x [2, S, D] -> MatMul (hidden) -> LayerNorm over the hidden axis -> MatMul."""
    inits = {"w1": weight(D, D), "ln_s": weight(D, scale=1.0), "ln_b": weight(D, scale=1.0), "w2": weight(D, 4)}
    nodes = [node("MatMul", ["x", "w1"], "h"), node("LayerNormalization", ["h", "ln_s", "ln_b"], "n", axis=-1),
             node("MatMul", ["n", "w2"], "y")]
    return make_model(nodes, {"x": [2, S, D]}, {"y": [2, S, 4]}, inits)


def test_layernorm_over_the_channel_axis_makes_the_group_inexact(tmp_path):
    model = _mlp_with_layernorm()
    analysis = analyze(save(model, tmp_path))
    (group,) = analysis.prunable
    assert not group.exact
    assert any("LayerNormalization normalises over the pruned axis" in r for r in group.inexact_reasons)
    assert {(s.tensor, s.axis) for s in group.slices} == {("w1", 1), ("ln_s", 0), ("ln_b", 0), ("w2", 0)}
    # left out of the default plan; pruned only when asked, then the model still runs with the new shapes
    assert not analysis.plan(PruneConfig(ratio=0.5)).groups
    plan = analysis.plan(PruneConfig(ratio=0.5, inexact=True))
    (pg,) = plan.groups
    assert not pg.exact and len(pg.pruned) == D // 2
    pruned = analysis.apply(plan).proto
    assert dims(pruned) == {"w1": [D, D // 2], "ln_s": [D // 2], "ln_b": [D // 2], "w2": [D // 2, 4]}
    (out,) = run_model(pruned, random_inputs(pruned, {}), optimize=False).outputs
    assert out.shape == (2, S, 4) and np.isfinite(out).all()


def test_layernorm_over_other_axes_stays_exact(tmp_path):
    """LayerNorm over H, W of a conv output ([H, W] scale): the channel axis is outside it."""
    inits = {"ln_s": weight(5, 5, scale=1.0), "ln_b": weight(5, 5, scale=1.0)}
    model = _conv_norm_conv([node("LayerNormalization", ["a", "ln_s", "ln_b"], "n", axis=2)], inits)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5)
    (group,) = analysis.prunable
    assert group.exact
    assert {s.tensor for s in group.slices} == {"w1", "w2"}
    assert dims(pruned)["ln_s"] == [5, 5] and dims(pruned)["w1"] == [C // 2, 3, 3, 3]
