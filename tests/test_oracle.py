"""The oracle's tolerance follows the precision the cut weights compute in."""
from __future__ import annotations

import numpy as np
import onnx
from helpers import make_model, node, save, weight

from onnxprune import analyze, cli
from onnxprune.testing import TOLERANCE, tolerance_for


def _mlp(dtype) -> onnx.ModelProto:
    inits = {"w1": weight(64, 256).astype(dtype), "w2": weight(256, 64).astype(dtype)}
    nodes = [node("Cast", ["x"], "xc", to=onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))),
             node("MatMul", ["xc", "w1"], "h"), node("Relu", ["h"], "r"), node("MatMul", ["r", "w2"], "yc"),
             node("Cast", ["yc"], "y", to=onnx.TensorProto.FLOAT)]
    return make_model(nodes, {"x": [4, 64]}, {"y": [4, 64]}, inits)


def test_float16_weights_get_a_float16_tolerance(tmp_path):
    half = analyze(save(_mlp(np.float16), tmp_path, "half.onnx"))
    single = analyze(save(_mlp(np.float32), tmp_path, "single.onnx"))
    assert tolerance_for(single, ["w1", "w2"]) == TOLERANCE
    assert tolerance_for(half, ["w1", "w2"]) == 4 * 2.0 ** -10


def test_a_float16_model_passes_the_oracle_from_the_cli(tmp_path, capsys):
    path = save(_mlp(np.float16), tmp_path)
    assert cli.main(["verify", path, "--ratio", "0.5"]) == 0, capsys.readouterr()
