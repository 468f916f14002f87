"""Write a removal into a copy of a model: cut initializers, set shape constants and attributes, new dims.

What to remove is decided outside ir/ (`onnxprune.removal`, `onnxprune.apply`); this
module only writes the resulting values, named by tensor, node position and attribute.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from .edit import (Kept, copy_model, get_node_attr, initializer_map, replace_initializer, set_node_attr, set_value_dims,
                   to_array)


@dataclass(frozen=True)
class AttrEdit:
    """Set attribute `attr` of node `local` of the graph at `scope` to `value`; with `element` >= 0 set only
    that element of the list attribute (its current value, else `default`)."""

    scope: tuple
    local: int
    attr: str
    element: int
    value: int
    default: tuple = ()


@dataclass
class Cut:
    """The model changes of a removal, in names and plain values."""

    values: dict[str, np.ndarray | Kept]  # initializer -> its kept part (replaced without copying the original
    # first), or the kept indices of an external one (cut when written)
    elements: dict[str, dict[int, Any]]  # constant -> flat element -> new value
    attrs: list[AttrEdit]
    dims: dict[str, dict[int, int]]  # tensor -> axis -> new size, for value_info and graph outputs


def cut_model(base: onnx.ModelProto, cut: Cut) -> onnx.ModelProto:
    """A copy of `base` with `cut` written into it; `base` is not changed."""
    model = copy_model(base, cut.values)
    inits = initializer_map(model)
    for name, elements in cut.elements.items():
        arr = to_array(inits[name]).copy()
        flat = arr.reshape(-1)
        for element, value in elements.items():
            flat[element] = value
        replace_initializer(inits[name], arr)
    for edit in cut.attrs:
        if edit.element < 0:
            set_node_attr(model, edit.local, edit.attr, int(edit.value), edit.scope)
        else:
            current = get_node_attr(model, edit.local, edit.attr, list(edit.default), edit.scope)
            current[edit.element] = int(edit.value)
            set_node_attr(model, edit.local, edit.attr, current, edit.scope)
    set_value_dims(model, cut.dims)
    return model
