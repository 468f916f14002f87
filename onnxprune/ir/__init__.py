"""The only package that touches protobuf: load, normalise, infer shapes, edit, save.

`Graph` is a read-only view of a model for the analysis: nodes with decoded
attributes, producer/consumer links, constant values (decoded lazily) and
static shapes. New models are built by `apply.py` (and fold / compensate)
with the helpers of `edit.py` and `cut.py`; `values.py` reads and writes
initializers as arrays. Outside ir/, a model is only named (`ModelProto`) and
handed to these functions.
"""
from . import integrity, limits
from .annotate import downstream
from .annotate import refresh as refresh_annotations
from .cut import AttrEdit, Cut, cut_model
from .edit import (Kept, Segment, add_after, add_initializer, as_identity, copy_model, fold_in_graph,
                   get_node_attr, initializer_map, needed_for, overwrite, probe_model, replace_initializer,
                   replace_with_constants, reshare_clones, segment, set_initializer, set_node_attr, set_node_input,
                   set_value_dims, to_array, with_outputs)
from .external import gather as take_kept
from .graph import Graph, Node, Shape, numel, opset_of
from .load import load, normalise, read_model
from .model import Model, TensorSpec
from .save import is_large, remove_saved, save, saved_from_file, saved_size
from .scopes import top_level_tensors
from .shapes import (has_static_inputs, infer_shapes, input_specs, register_shape_hook, set_node_shapes,
                     standard_op_shapes, with_input_shapes)
from .values import (ModelProto, constant, has_external, on_disk, session_parts, initializer_reader,
                     initializer_shapes, is_tensor_type, np_dtype, set_initializers, static_dim)

__all__ = ["add_after", "add_initializer", "as_identity", "AttrEdit", "constant", "copy_model", "Cut", "cut_model",
           "downstream", "fold_in_graph", "get_node_attr", "Graph", "has_static_inputs", "infer_shapes",
           "initializer_map", "initializer_reader", "has_external", "Kept", "needed_for", "on_disk",
           "saved_from_file", "saved_size", "session_parts", "initializer_shapes", "input_specs", "integrity",
           "is_large", "is_tensor_type", "limits", "load", "Model", "ModelProto", "Node", "normalise", "np_dtype",
           "numel", "opset_of", "overwrite", "probe_model", "read_model", "refresh_annotations", "register_shape_hook",
           "remove_saved", "replace_initializer", "replace_with_constants", "reshare_clones", "save", "Segment",
           "segment",
           "set_initializer", "set_initializers", "set_node_attr", "set_node_input", "set_node_shapes",
           "set_value_dims", "Shape", "standard_op_shapes", "static_dim", "take_kept", "TensorSpec", "to_array",
           "top_level_tensors", "with_input_shapes", "with_outputs"]
