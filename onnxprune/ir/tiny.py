"""Tiny models from plain Python specs (the rule harness builds one node, or a few, around a rule).

Nodes are `(op_type, inputs, outputs, attrs, domain[, name])` tuples (default name: op_type_output0);
graph inputs are `name -> (shape, dtype)`; constants are `name -> numpy array`. Output types and
shapes come from shape inference, so the model passes the checker and runs in ONNX Runtime.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph import Graph
from .load import normalise
from .shapes import infer_shapes

NodeSpec = tuple  # (op_type, inputs, outputs, attrs, domain) or the same with a name


def tiny_model(nodes: Sequence[NodeSpec], inputs: dict[str, tuple[tuple[int, ...], Any]], outputs: Sequence[str],
               consts: dict[str, np.ndarray] | None = None, opset: int = 17) -> onnx.ModelProto:
    """A normalised model of `nodes`, in order, outputs typed by inference."""
    protos = [helper.make_node(op, list(ins), list(outs), name=(rest[0] if rest else f"{op}_{outs[0]}"),
                               domain=domain or None, **attrs)
              for op, ins, outs, attrs, domain, *rest in nodes]
    graph = helper.make_graph(
        protos, "tiny",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(t)), list(s))
         for n, (s, t) in inputs.items()],
        [onnx.ValueInfoProto(name=n) for n in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (consts or {}).items()])
    domains = sorted({spec[4] for spec in nodes if spec[4] not in ("", "ai.onnx")})
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = helper.find_min_ir_version_for(opsets, ignore_unknown=True)  # contrib domains too
    normalise(model)
    _type_outputs(model)
    return model


def tiny_graph(model: onnx.ModelProto) -> Graph:
    """The analysis view of a tiny model, with its static shapes (what `ir.load` gives for a file)."""
    return Graph(model, infer_shapes(model, {}))


def _type_outputs(model: onnx.ModelProto) -> None:
    """Graph outputs get the inferred type and shape (those inference cannot tell keep float, no shape)."""
    graph = Graph(model, infer_shapes(model, {}))
    inferred = onnx.shape_inference.infer_shapes(model)
    values = list(inferred.graph.value_info) + list(inferred.graph.output)
    types = {v.name: v.type.tensor_type.elem_type for v in values}
    for out in model.graph.output:
        shape = graph.shape(out.name)
        dims = None if shape is None or any(d is None for d in shape) else list(shape)
        out.CopyFrom(helper.make_tensor_value_info(out.name, types.get(out.name) or onnx.TensorProto.FLOAT, dims))
