"""Shared test helpers: build small models in code and run the dead-channel oracle on them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune import analyze
from onnxprune.testing import make_plan, weight_scores

# the current test's generator: conftest.py reseeds it from each test's node id before the test runs
_rng = np.random.default_rng(1234)


def reseed(seed: int) -> None:
    """Start a fresh generator for the test about to run (conftest's autouse fixture calls this)."""
    global _rng
    _rng = np.random.default_rng(seed)


def rng() -> np.random.Generator:
    """The current test's generator: draws depend on the test alone, not on the tests run before it."""
    return _rng


def weight(*shape: int, scale: float | None = None) -> np.ndarray:
    """Random float32 weights ~ N(0, 1/fan_in), from the current test's generator."""
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    s = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
    return (_rng.standard_normal(shape) * s).astype(np.float32)


def node(op: str, inputs: list[str], outputs: list[str] | str, **attrs) -> onnx.NodeProto:
    outputs = [outputs] if isinstance(outputs, str) else outputs
    return helper.make_node(op, inputs, outputs, name=f"{op}_{outputs[0]}", **attrs)


def make_model(nodes: list[onnx.NodeProto], inputs: dict[str, list], outputs: dict[str, list | None],
               inits: dict[str, np.ndarray] | None = None, opset: int = 17,
               input_types: dict[str, int] | None = None) -> onnx.ModelProto:
    """A checked model; `inputs`/`outputs` map names to shapes (None: let inference decide)."""
    types = input_types or {}
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(n, types.get(n, TensorProto.FLOAT), s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    _fill_output_shapes(model)
    onnx.checker.check_model(model, full_check=True)
    return model


def _fill_output_shapes(model: onnx.ModelProto) -> None:
    """Outputs declared without a shape get the inferred one (the checker wants a shape)."""
    missing = [o for o in model.graph.output if not o.type.tensor_type.HasField("shape")]
    if not missing:
        return
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for o in missing:
        if o.name in known:
            o.type.CopyFrom(known[o.name].type)


def save(model: onnx.ModelProto, tmp_path: Path, name: str = "model.onnx") -> str:
    path = str(tmp_path / name)
    onnx.save(model, path)
    return path


def prune_with_oracle(model: onnx.ModelProto, tmp_path: Path, ratio: float = 0.5, min_groups: int = 1,
                      input_shapes: dict | None = None, importance: str = "l1"):
    """Analyse, plan at `ratio`, assert the oracle passes and at least `min_groups` groups were pruned.

    Returns (analysis, plan, pruned ModelProto).
    """
    path = save(model, tmp_path)
    analysis = analyze(path, input_shapes or {})
    scores = weight_scores(analysis, importance)
    plan = make_plan(analysis, scores, ratio)
    assert len(plan.groups) >= min_groups, (
        f"expected >= {min_groups} pruned groups, got {len(plan.groups)}; frozen: "
        f"{[g.frozen_reason for g in analysis.groups if g.frozen_reason]}")
    result = analysis.verify(plan, input_shapes=input_shapes)
    assert result.passed, result.detail
    pruned = analysis.apply(plan).proto
    onnx.checker.check_model(pruned, full_check=True)
    return analysis, plan, pruned


def param_count(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == TensorProto.FLOAT)


def frozen_reasons(analysis) -> list[str]:
    return [g.frozen_reason for g in analysis.groups if g.frozen_reason]
