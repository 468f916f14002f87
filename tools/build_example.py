"""Build models/tiny_cnn.onnx: a small ResNet-style CNN with numpy weights (no PyTorch).

Conv-BN-Relu stem, two residual blocks (one with a projection shortcut), a
depthwise block, global pooling and a classifier: enough to show every kind
of coupling the README example prunes.

    python tools/build_example.py [OUT]
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class Builder:
    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def _name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def conv(self, x: str, cin: int, cout: int, k: int = 3, stride: int = 1, group: int = 1) -> str:
        n = self._name("conv")
        w = self.rng.standard_normal((cout, cin // group, k, k)) / np.sqrt(cin // group * k * k)
        b = self.rng.standard_normal(cout) * 0.1
        out = f"{n}_out"
        self.nodes.append(helper.make_node("Conv", [x, self.const(f"{n}.weight", w), self.const(f"{n}.bias", b)], [out],
                                           name=n, kernel_shape=[k, k], pads=[k // 2] * 4, strides=[stride] * 2,
                                           group=group))
        return out

    def bn(self, x: str, c: int) -> str:
        n = self._name("bn")
        params = [self.const(f"{n}.{p}", v) for p, v in (
            ("scale", 1 + 0.2 * self.rng.standard_normal(c)), ("bias", 0.1 * self.rng.standard_normal(c)),
            ("mean", 0.1 * self.rng.standard_normal(c)), ("var", 1 + 0.2 * self.rng.random(c)))]
        out = f"{n}_out"
        self.nodes.append(helper.make_node("BatchNormalization", [x, *params], [out], name=n))
        return out

    def op(self, op: str, inputs: list[str], **attrs) -> str:
        n = self._name(op.lower())
        out = f"{n}_out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=n, **attrs))
        return out

    def gemm(self, x: str, k: int, n_out: int, out: str) -> str:
        n = self._name("fc")
        w = self.rng.standard_normal((n_out, k)) / np.sqrt(k)
        self.nodes.append(helper.make_node("Gemm", [x, self.const(f"{n}.weight", w),
                                                    self.const(f"{n}.bias", np.zeros(n_out))], [out],
                                           name=n, transB=1))
        return out


def build() -> onnx.ModelProto:
    b = Builder()
    x = b.op("Relu", [b.bn(b.conv("image", 3, 32, stride=2), 32)])
    # residual block, identity shortcut
    y = b.op("Relu", [b.bn(b.conv(x, 32, 32), 32)])
    x = b.op("Relu", [b.op("Add", [b.bn(b.conv(y, 32, 32), 32), x])])
    # residual block, projection shortcut
    y = b.op("Relu", [b.bn(b.conv(x, 32, 64, stride=2), 64)])
    x = b.op("Relu", [b.op("Add", [b.bn(b.conv(y, 64, 64), 64), b.bn(b.conv(x, 32, 64, k=1, stride=2), 64)])])
    # depthwise separable block
    y = b.op("Relu", [b.bn(b.conv(x, 64, 64, group=64), 64)])
    x = b.op("Relu", [b.bn(b.conv(y, 64, 96, k=1), 96)])
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x])])
    b.gemm(x, 96, 10, "logits")
    graph = helper.make_graph(b.nodes, "tiny_cnn",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnxprune-example")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "models" / "tiny_cnn.onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(build(), str(out))
    print(f"wrote {out}")
