"""Tensors as arrays and element types as numpy dtypes, for the modules outside ir/.

Those modules name a model only as `ModelProto` (in annotations) and read or
write its initializers through these functions, never through protobuf fields.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import onnx

from . import external
from .edit import initializer_map, replace_initializer, to_array
from .graph import Graph

ModelProto = onnx.ModelProto  # the model type, for annotations outside ir/


def is_tensor_type(elem: int) -> bool:
    """False for the element type of a sequence, map or optional input (ONNX's UNDEFINED)."""
    return elem != onnx.TensorProto.UNDEFINED


def np_dtype(elem: int) -> np.dtype:
    """The numpy dtype of an ONNX element type; raises KeyError, TypeError or ValueError (as onnx does)
    for a type numpy cannot hold."""
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))


def initializer_reader(model: onnx.ModelProto) -> Callable[[str], np.ndarray | None]:
    """A function giving the value of an initializer of `model` (in any scope) by name, or None when there
    is none of that name; each value is decoded when asked for, so only the ones read are held."""
    inits = initializer_map(model)

    def read(name: str) -> np.ndarray | None:
        tensor = inits.get(name)
        return None if tensor is None else to_array(tensor)

    return read


def on_disk(model: onnx.ModelProto) -> set[str]:
    """Initializers (in any scope) whose cuts can stay on disk until the model is written: external,
    of a numpy element type (ir.Kept)."""
    return {name for name, t in initializer_map(model).items() if external.can_stay(t)}


def initializer_shapes(model: onnx.ModelProto, names: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """The declared shapes of initializers `names` (in any scope), read without decoding them; KeyError
    for an unknown name."""
    inits = initializer_map(model)
    return {name: tuple(inits[name].dims) for name in names}


def set_initializers(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> None:
    """Replace the values of existing initializers (in any scope), in place; KeyError for an unknown name."""
    inits = initializer_map(model)
    for name, value in values.items():
        replace_initializer(inits[name], value)


def constant(graph: Graph, name: str) -> np.ndarray:
    """`graph.const(name)` for a tensor that must be a constant (a weight a plan cuts); KeyError naming it
    when it is not."""
    value = graph.const(name)
    if value is None:
        raise KeyError(f"tensor '{name}' is not a constant of the model")
    return value


def static_dim(graph: Graph, name: str, axis: int) -> int:
    """`graph.dim(name, axis)` for an axis that must have a static size (a pruned channel axis); KeyError
    naming the tensor and axis when it has none."""
    size = graph.dim(name, axis)
    if size is None:
        raise KeyError(f"tensor '{name}' has no static size along axis {axis}")
    return int(size)


def has_external(model: onnx.ModelProto) -> bool:
    """Whether some weight of the model is stored in an external data file (and read from there)."""
    return external.has_external(model)


def session_parts(model: onnx.ModelProto) -> tuple[bytes, dict[str, np.ndarray]]:
    """What ONNX Runtime loads from memory: the protobuf (external weights left out, over 2 GB only if
    the protobuf itself is) and the external weights as arrays, name -> array (ir.external)."""
    if not external.has_external(model):
        return model.SerializeToString(), {}
    return external.session_parts(model)
