"""The shared model zoo (../shared/zoo): locate it and fill its stripped weights.

Zoo models have every float initializer of >= 4096 elements stripped; this
fills them with seeded normal(0, 1) / sqrt(fan_in) values as the zoo README
prescribes, so the models run in ONNX Runtime.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

STRIPPED = "onnxprune-zoo:stripped"
ZOO = Path(os.environ.get("ONNXPRUNE_ZOO", Path(__file__).resolve().parents[1].parent / "shared" / "zoo"))


def zoo_dir() -> Path | None:
    return ZOO if ZOO.is_dir() else None


def fill_stripped(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Fill stripped initializers in place with seeded random data; returns the model."""
    rng = np.random.default_rng(seed)
    for t in model.graph.initializer:
        if t.doc_string != STRIPPED:
            continue
        dims = list(t.dims)
        fan_in = int(np.prod(dims)) // dims[0] if len(dims) > 1 else 1
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
        value = (rng.standard_normal(dims) / np.sqrt(max(fan_in, 1))).astype(dtype)
        filled = numpy_helper.from_array(value, t.name)
        t.CopyFrom(filled)
    return model


def load_filled(name_or_path: str | Path, seed: int = 0) -> onnx.ModelProto:
    path = Path(name_or_path)
    if not path.exists():
        path = ZOO / (str(name_or_path) + ("" if str(name_or_path).endswith(".onnx") else ".onnx"))
    return fill_stripped(onnx.load(str(path)), seed)


def write_filled(name: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Write a filled copy of zoo model `name` into `out_dir`; reuse it if already there."""
    out = Path(out_dir) / f"{name}.onnx"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(load_filled(name, seed), str(out))
    return out


def meta(name: str) -> dict:
    path = ZOO / f"{name}.onnx.json"
    return json.loads(path.read_text()) if path.exists() else {}


def model_names() -> list[str]:
    return sorted(p.name[:-5] for p in ZOO.glob("*.onnx")) if zoo_dir() else []
