"""Channel shuffle (Reshape -> Transpose -> Reshape, ShuffleNet): channels are tracked through it.

The groups axis of the split is tiny; the per-group axis carries the channels
and the later Reshape merges it back, so the roots it mixes become coupled.
"""
import numpy as np
import onnx
import pytest
from helpers import frozen_reasons, make_model, node, param_count, prune_with_oracle, save, weight

from onnxprune import analyze

I64 = np.int64


def _shuffle(groups: int, c: int, nodes: list, inits: dict, src: str, out: str, hw: int = 8,
             fake_quant: bool = False) -> None:
    """The shuffle; with `fake_quant` a QuantizeLinear -> DequantizeLinear pair after the first Reshape and
    after the Transpose, as quantize_static writes a QDQ model."""
    inits[f"{out}_s1"] = np.array([1, groups, c // groups, hw, hw], I64)
    inits[f"{out}_s2"] = np.array([1, c, hw, hw], I64)
    inits.update({f"{out}_qs": np.array(0.05, np.float32), f"{out}_qz": np.array(0, np.int8)})

    def qdq(t: str) -> str:
        if not fake_quant:
            return t
        nodes.extend([node("QuantizeLinear", [t, f"{out}_qs", f"{out}_qz"], f"{t}_q"),
                      node("DequantizeLinear", [f"{t}_q", f"{out}_qs", f"{out}_qz"], f"{t}_dq")])
        return f"{t}_dq"

    nodes.append(node("Reshape", [src, f"{out}_s1"], f"{out}_r"))
    nodes.append(node("Transpose", [qdq(f"{out}_r")], f"{out}_t", perm=[0, 2, 1, 3, 4]))
    nodes.append(node("Reshape", [qdq(f"{out}_t"), f"{out}_s2"], out))


def _shufflenet_unit(groups: int = 2, c: int = 16, fake_quant: bool = False):
    """Two conv branches -> Concat -> shuffle -> Split in halves -> conv per half -> Concat -> conv."""
    half = c // 2
    inits = {"wa": weight(half, 3, 3, 3), "wb": weight(half, 3, 1, 1), "wc": weight(half, half, 1, 1),
             "wd": weight(half, 1, 3, 3), "wo": weight(5, c, 1, 1), "split": np.array([half, half], I64)}
    nodes = [node("Conv", ["x", "wa"], "a", pads=[1, 1, 1, 1]), node("Relu", ["a"], "ra"),
             node("Conv", ["x", "wb"], "b"), node("Relu", ["b"], "rb"),
             node("Concat", ["ra", "rb"], "cat", axis=1)]
    _shuffle(groups, c, nodes, inits, "cat", "shuf", fake_quant=fake_quant)
    nodes += [node("Split", ["shuf", "split"], ["h1", "h2"], axis=1),
              node("Conv", ["h2", "wc"], "c2"), node("Relu", ["c2"], "r2"),
              node("Conv", ["r2", "wd"], "d2", pads=[1, 1, 1, 1], group=half),
              node("Concat", ["h1", "d2"], "cat2", axis=1),
              node("Conv", ["cat2", "wo"], "y")]
    return make_model(nodes, {"x": [1, 3, 8, 8]}, {"y": None}, inits)


@pytest.mark.parametrize("groups", [2, 4])
def test_channel_shuffle_prunes_through(tmp_path, groups):
    model = _shufflenet_unit(groups)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, min_groups=1)
    assert param_count(pruned) < param_count(model)
    dims = {t.name: list(t.dims) for t in pruned.graph.initializer}
    targets = {t.name: onnx.numpy_helper.to_array(t).tolist() for t in pruned.graph.initializer
               if t.name.startswith("shuf_s")}
    new_c = dims["wa"][0] + dims["wb"][0]
    assert new_c < 16
    # both reshape targets follow the new channel count
    assert targets["shuf_s1"][1:3] == [groups, new_c // groups] and targets["shuf_s2"][1] == new_c


@pytest.mark.parametrize("fake_quant", [False, True], ids=["float", "qdq"])
def test_shuffle_couples_the_branches(tmp_path, fake_quant):
    """Channel k of branch a and channel k of branch b become neighbours after the shuffle: they go
    together (also with a QDQ pair between the Reshapes and the Transpose: ShuffleNetV2's QDQ variants
    coupled every channel into one unit before, and lost 8 % of the float model's pruning)."""
    analysis, plan, pruned = prune_with_oracle(_shufflenet_unit(2, fake_quant=fake_quant), tmp_path, ratio=0.5)
    g = next(g for g in analysis.groups if g.prunable and g.root[0] == "a")
    wb = next(s for s in g.slices if s.tensor == "wb" and s.axis == 0)
    assert sorted(zip(wb.positions.tolist(), wb.roots.tolist())) == [(k, k) for k in range(8)]
    assert not any(other.root[0] == "b" for other in analysis.groups)


def test_shuffle_into_a_mixing_reshape_freezes(tmp_path):
    """A Reshape that mixes the channel axis with a spatial axis cannot be followed."""
    inits = {"wa": weight(8, 3, 3, 3), "s": np.array([1, 4, 32, 8], I64), "wo": weight(2, 4, 1, 1)}
    nodes = [node("Conv", ["x", "wa"], "a", pads=[1, 1, 1, 1]), node("Reshape", ["a", "s"], "r"),
             node("Conv", ["r", "wo"], "y")]
    model = make_model(nodes, {"x": [1, 3, 8, 8]}, {"y": None}, inits)
    analysis = analyze(save(model, tmp_path), {})
    reasons = frozen_reasons(analysis)
    assert any("Reshape node" in r and "mixed into" in r for r in reasons), reasons
