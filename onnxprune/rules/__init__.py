"""Per-op knowledge: one op family per module, registered by op type."""
from . import (concat_split, conv, elementwise, fill, gather, layout, linear, norm, recurrent,  # noqa: F401
               matmul_nbits, qoperator, quant, quant_recurrent, reduce, shape_only, slice, spatial)
from .base import Cut, Edit, Effects, Port, Rule, register, registered_op_types, rule_for

__all__ = ["Cut", "Edit", "Effects", "Port", "Rule", "register", "registered_op_types", "rule_for"]
