"""The only package that touches protobuf: load, normalise, infer shapes, edit, save.

`Graph` is a read-only view of a model for the analysis: nodes with decoded
attributes, producer/consumer links, constant values (decoded lazily) and
static shapes. New models are built by `apply.py` (and fold / compensate)
with the helpers of `edit.py`.
"""
from . import integrity, limits
from .annotate import downstream, refresh as refresh_annotations
from .edit import (add_after, add_initializer, as_identity, copy_model, fold_in_graph, get_node_attr, initializer_map, probe_model,
                   replace_initializer,
                   replace_with_constants, reshare_clones, set_initializer, set_node_attr, set_node_input, set_value_dims, to_array,
                   with_outputs)
from .graph import Graph, Node, Shape, numel, opset_of
from .load import load, normalise, read_model
from .model import Model, TensorSpec
from .save import is_large, remove_saved, save
from .scopes import top_level_tensors
from .shapes import (has_static_inputs, infer_shapes, input_specs, register_shape_hook, set_node_shapes,
                     standard_op_shapes, with_input_shapes)

__all__ = ["Graph", "Node", "Shape", "add_after", "add_initializer", "as_identity", "copy_model", "downstream", "fold_in_graph",
           "get_node_attr", "has_static_inputs", "infer_shapes", "initializer_map", "input_specs", "integrity",
           "is_large", "limits", "load", "Model", "normalise", "numel", "opset_of", "probe_model", "read_model",
           "refresh_annotations", "register_shape_hook", "remove_saved", "replace_initializer",
           "replace_with_constants", "reshare_clones", "save", "set_initializer", "set_node_attr", "set_node_input",
           "set_node_shapes", "set_value_dims", "standard_op_shapes", "TensorSpec", "to_array", "top_level_tensors",
           "with_input_shapes", "with_outputs"]
