"""The only package that touches protobuf: load, normalise, infer shapes, edit, save.

`Graph` is a read-only view of a model for the analysis: nodes with decoded
attributes, producer/consumer links, constant values (decoded lazily) and
static shapes. New models are built by `apply.py` (and fold / compensate)
with the helpers of `edit.py`.
"""
from . import limits
from .annotate import downstream, refresh as refresh_annotations
from .edit import (add_after, add_initializer, as_identity, copy_model, get_node_attr, initializer_map, replace_initializer,
                   replace_with_constants, reshare_clones, set_initializer, set_node_attr, set_node_input, set_value_dims, to_array,
                   with_outputs)
from .graph import Graph, Node, Shape, numel, opset_of
from .load import load, normalise, read_model
from .save import is_large, remove_saved, save
from .shapes import has_static_inputs, infer_shapes, input_specs, with_input_shapes

__all__ = ["Graph", "Node", "Shape", "add_after", "downstream", "refresh_annotations", "add_initializer", "as_identity", "copy_model", "get_node_attr", "has_static_inputs", "infer_shapes",
           "initializer_map", "input_specs", "is_large", "limits", "load", "normalise", "numel", "opset_of", "read_model", "remove_saved",
           "replace_initializer", "replace_with_constants", "reshare_clones", "save", "set_initializer", "set_node_attr",
           "set_node_input", "set_value_dims", "to_array", "with_input_shapes", "with_outputs"]
