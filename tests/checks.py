"""Assertions on pruned models shared by the rule-family tests (kept out of helpers.py)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.testing import slices_json


def dims(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Initializer name -> its dims."""
    return {t.name: list(t.dims) for t in model.graph.initializer}


def init(model: onnx.ModelProto, name: str) -> np.ndarray:
    """Value of one initializer."""
    (t,) = [t for t in model.graph.initializer if t.name == name]
    return numpy_helper.to_array(t)


def removed(analysis, plan) -> dict[tuple[str, int], list[int]]:
    """(tensor, axis) -> sorted indices the plan removes from that initializer, over all groups."""
    by_id = {g.id: g for g in analysis.groups}
    out: dict[tuple[str, int], set[int]] = {}
    for pg in plan.groups:
        for s in slices_json(by_id[pg.id], pg.pruned):
            out.setdefault((s["tensor"], s["axis"]), set()).update(s["indices"])
    return {k: sorted(v) for k, v in out.items()}


def kept(size: int, gone: list[int]) -> np.ndarray:
    return np.setdiff1d(np.arange(size), np.asarray(gone, dtype=np.int64))


def attr(model: onnx.ModelProto, node_name: str, name: str):
    (n,) = [n for n in model.graph.node if n.name == node_name]
    for a in n.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return None


def group_with(analysis, tensor: str):
    """The one group that cuts initializer `tensor`."""
    found = [g for g in analysis.groups if any(s.tensor == tensor for s in g.slices)]
    assert len(found) == 1, f"{len(found)} groups cut '{tensor}'"
    return found[0]
