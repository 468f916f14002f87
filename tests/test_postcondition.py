"""The postcondition of apply, whatever the flags: shape annotations agree with the cut, the
full onnx.checker passes, and a model that breaks it is never written."""
from __future__ import annotations

import onnx
import pytest
from helpers import make_model, node, save, weight

from onnxprune import apply, cli, ir


def _annotated_mlp() -> onnx.ModelProto:
    """MatMul -> Relu -> MatMul with a Transpose of the second weight, annotated as the dynamo exporter
    does: value_info for the weights and for every intermediate tensor (the Transpose of a weight too).
    The weights are too large to be cloned per user at load."""
    inits = {"w1": weight(16, 512), "w2": weight(256, 512)}
    nodes = [node("MatMul", ["x", "w1"], "h"), node("Relu", ["h"], "r"),
             node("Transpose", ["w2"], "w2t", perm=[1, 0]), node("MatMul", ["r", "w2t"], "y")]
    model = make_model(nodes, {"x": [1, 16]}, {"y": None}, inits)
    inferred = onnx.shape_inference.infer_shapes(model)
    model.graph.value_info.extend(inferred.graph.value_info)
    for name, value in inits.items():
        model.graph.value_info.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                                                         list(value.shape)))
    onnx.checker.check_model(model, full_check=True)
    return model


def _declared(model: onnx.ModelProto) -> dict[str, list[int]]:
    return {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in model.graph.value_info}


@pytest.mark.parametrize("flags", [[], ["--no-validate"]])
def test_annotations_of_cut_weights_and_their_derived_tensors_follow_the_cut(tmp_path, capsys, flags):
    path = save(_annotated_mlp(), tmp_path)
    out = tmp_path / "out.onnx"
    code = cli.main([path, "-o", str(out), "--ratio", "0.5", "--round-to", "1", "--inexact", *flags])
    assert code == 0, capsys.readouterr().err
    pruned = onnx.load(str(out))
    onnx.checker.check_model(pruned, full_check=True)
    declared = _declared(pruned)
    assert declared["w1"] == [16, 256] and declared["h"] == [1, 256] and declared["w2"] == [256, 256]
    assert declared["w2t"] == [256, 256]  # computed from a cut weight: re-inferred, not stale


def test_stale_annotations_fail_the_check_even_without_validation(tmp_path, capsys, monkeypatch):
    """With the refresh disabled the stale value_info must be caught: exit 1, nothing written."""
    monkeypatch.setattr(ir, "refresh_annotations", lambda model, touched: {})
    path = save(_annotated_mlp(), tmp_path)
    out = tmp_path / "out.onnx"
    code = cli.main([path, "-o", str(out), "--ratio", "0.5", "--round-to", "1", "--inexact", "--no-validate"])
    err = capsys.readouterr().err
    assert code == 1 and "onnx.checker" in err
    assert not out.exists()


def test_a_size_the_plan_did_not_predict_names_the_tensor(tmp_path, capsys, monkeypatch):
    """If shape inference of the pruned model disagrees with the plan's sizes, say which tensor."""
    real = apply.Removal.new_size
    monkeypatch.setattr(apply.Removal, "new_size", lambda self, graph, space: real(self, graph, space) + 1)
    path = save(_annotated_mlp(), tmp_path)
    out = tmp_path / "out.onnx"
    code = cli.main([path, "-o", str(out), "--ratio", "0.5", "--round-to", "1", "--inexact", "--no-validate"])
    err = capsys.readouterr().err
    assert code == 1 and "pruned tensor '" in err and "shape inference" in err, err
    assert not out.exists()


def test_a_graph_out_of_topological_order_prunes_into_a_checked_model(tmp_path, capsys):
    """ONNX Runtime runs unsorted graphs (onnxruntime.transformers' float16 converter writes them);
    the tool sorts them at load, so the output passes the checker."""
    model = _annotated_mlp()
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(reversed(nodes))
    path = save(model, tmp_path)
    out = tmp_path / "out.onnx"
    code = cli.main([path, "-o", str(out), "--ratio", "0.5", "--round-to", "1", "--inexact"])
    assert code == 0, capsys.readouterr().err
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
