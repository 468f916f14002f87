"""Per-op knowledge: one op family per module, registered by op type."""
from . import (concat_split, contrib_activation, contrib_attention, contrib_norm, control_flow, conv,  # noqa: F401
               elementwise, fill, fused, gather, layout, linear, matmul_nbits, norm, qoperator, quant, quant_recurrent,
               random_ops, recurrent, reduce, shape_only, slice, spatial)
from ..ir import set_node_shapes
from .base import (Cut, Effects, Port, Rule, node_shapes, packing, register, registered_op_types, root_op_types,
                   rule_for)

set_node_shapes(node_shapes)  # shapes of the contrib ops ONNX shape inference does not know

__all__ = ["Cut", "Effects", "Port", "Rule", "packing", "register", "registered_op_types", "root_op_types", "rule_for"]
