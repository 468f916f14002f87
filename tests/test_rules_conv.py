"""Conv / ConvTranspose rules: pruned through, checked by the dead-channel oracle."""
import pytest
from helpers import make_model, node, param_count, prune_with_oracle, weight


def _chain(group2: int = 1, c: int = 8, transpose: bool = False, dims: int = 2):
    k = [3] * dims
    spatial = [10] * dims
    inits = {"w1": weight(c, 3, *k), "b1": weight(c), "w2": weight(c, c // group2, *k), "b2": weight(c),
             "w3": weight(4, c, *[1] * dims)}
    op2 = "ConvTranspose" if transpose else "Conv"
    if transpose:
        inits["w2"] = weight(c, c // group2, *k)
    nodes = [node("Conv", ["x", "w1", "b1"], "a", pads=[1] * 2 * dims),
             node("Relu", ["a"], "r"),
             node(op2, ["r", "w2", "b2"], "c", pads=[1] * 2 * dims, group=group2),
             node("Relu", ["c"], "r2"),
             node("Conv", ["r2", "w3"], "y")]
    return make_model(nodes, {"x": [1, 3, *spatial]}, {"y": None}, inits)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_conv_chain_prunes_filters_and_next_inputs(tmp_path, dims):
    model = _chain(dims=dims)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, min_groups=2)
    assert param_count(pruned) < param_count(model)
    w1 = {t.name: list(t.dims) for t in pruned.graph.initializer}["w1"]
    assert w1[0] == 4


def test_depthwise_conv_shares_channels_with_its_input(tmp_path):
    model = _chain(group2=8)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, min_groups=1)
    # the depthwise conv couples the first conv's filters with its own: one group, not two
    assert len([g for g in analysis.groups if g.prunable]) == 1
    dw = [n for n in pruned.graph.node
          if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    assert dw and [a.i for a in dw[0].attribute if a.name == "group"] == [4]


def test_conv_transpose(tmp_path):
    analysis, plan, pruned = prune_with_oracle(_chain(transpose=True), tmp_path, ratio=0.5, min_groups=2)
    dims = {t.name: list(t.dims) for t in pruned.graph.initializer}
    assert dims["w2"][:2] == [4, 4]


def test_oracle_fails_when_a_consumer_is_missed(tmp_path, monkeypatch):
    """The oracle must be able to fail: hide the Conv input-side cut and it must catch it."""
    from onnxprune.rules import conv

    original = conv._ConvBase.propagate

    def forgetful(self, node, graph, port, axis, pairs, fx):
        if port.is_input and node.name.startswith("Conv_y"):
            return  # pretend the last conv does not read the channels
        original(self, node, graph, port, axis, pairs, fx)

    monkeypatch.setattr(conv._ConvBase, "propagate", forgetful)
    with pytest.raises(AssertionError):
        prune_with_oracle(_chain(), tmp_path, ratio=0.5)
