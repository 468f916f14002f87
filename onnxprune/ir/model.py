"""`Model`: an ONNX model as the public API hands it out (load, describe, save); protobuf only on request."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import onnx

from ..errors import ModelLoadError
from .graph import Graph
from .load import normalise, read_model
from .save import save
from .shapes import input_specs

IN_MEMORY = "the in-memory model"  # how errors about a model given as an object name it


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: name, element type (e.g. "float") and dims (int, or str / None when dynamic)."""

    name: str
    dtype: str
    dims: tuple


class Model:
    """An ONNX model. `save` writes it (with an external data file when it has external data or is over
    2 GB, as the CLI does); `proto` is the explicit escape hatch to the underlying `onnx.ModelProto`.

    A model loaded from a file with external data reads its weights from that file until it is saved
    (its tensors name it by absolute path, and pruned ones hold their kept indices): keep the input's
    files in place until then, and save with `save`, not `onnx.save`."""

    def __init__(self, proto: onnx.ModelProto):
        if not isinstance(proto, onnx.ModelProto):
            raise TypeError(f"Model wraps an onnx.ModelProto, got {type(proto).__name__}")
        self._proto = proto

    @classmethod
    def load(cls, path: str | os.PathLike) -> Model:
        """Read and check a model file (external data checked, left on disk); raises ModelLoadError naming
        the problem."""
        return cls(read_model(path))

    @classmethod
    def of(cls, model: Model | onnx.ModelProto | str | os.PathLike) -> Model:
        """`model` as a Model: a Model is returned as is, a ModelProto wrapped (not copied), a path loaded."""
        if isinstance(model, Model):
            return model
        if isinstance(model, onnx.ModelProto):
            return cls(model)
        if isinstance(model, (str, os.PathLike)):
            return cls.load(model)
        raise TypeError(f"expected a model path, an onnx.ModelProto or an onnxprune Model, got {type(model).__name__}")

    @property
    def proto(self) -> onnx.ModelProto:
        """The underlying onnx.ModelProto (not a copy): edits to it change this model."""
        return self._proto

    @property
    def inputs(self) -> list[TensorSpec]:
        """The true graph inputs (initializers left out)."""
        return [TensorSpec(name, _dtype(elem), dims) for name, elem, dims in input_specs(self._proto)]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec(vi.name, _dtype(vi.type.tensor_type.elem_type),
                           tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                 for d in vi.type.tensor_type.shape.dim))
                for vi in self._proto.graph.output]

    @property
    def param_count(self) -> int:
        """Parameter elements (initializers but int64 / bool ones), each shared constant counted once."""
        return Graph(self._proto, {}).param_count()

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically; a model too large for one protobuf gets PATH.data beside it. The model stays usable."""
        save(self._proto, path)

    def __repr__(self) -> str:
        ins = ", ".join(f"{s.name}{list(s.dims)}" for s in self.inputs)
        return f"Model({len(self._proto.graph.node)} nodes, inputs {ins})"


def read_checked(model: Model | onnx.ModelProto | str | os.PathLike) -> onnx.ModelProto:
    """A checked, normalised copy of `model`, ready for `Graph`; the caller's model is not changed.

    A model object gets the checks of a model file (it is written to a temporary file and read
    back); errors name it as IN_MEMORY.
    """
    if isinstance(model, (str, os.PathLike)):
        proto = read_model(model)
    else:
        with tempfile.TemporaryDirectory(prefix="onnxprune-") as tmp:
            path = os.path.join(tmp, "model.onnx")
            save(Model.of(model).proto, path)
            try:
                proto = read_model(path)
            except ModelLoadError as exc:
                raise ModelLoadError(str(exc).replace(f"'{path}'", IN_MEMORY)) from None
    normalise(proto)
    return proto


def _dtype(elem_type: int) -> str:
    if not elem_type:
        return "undefined"
    return onnx.helper.tensor_dtype_to_string(elem_type).removeprefix("TensorProto.").lower()
