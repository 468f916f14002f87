"""The closed vocabularies of the analysis: slice roles, port kinds, edit targets, bias placement.

Each is a string enum: its members compare equal to (and print, format and serialise to JSON as)
their plain string values, so plan files, reports and `role == "in"` tests read as before, while
the code names the few values there are and a misspelt value fails where it is made.
"""
from __future__ import annotations

from enum import Enum


class StrEnum(str, Enum):
    """`enum.StrEnum` (Python 3.11) for Python 3.10 too: str() and format() give the value."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, format_spec: str) -> str:
        return str.__format__(self, format_spec)


class Role(StrEnum):
    """What an initializer slice does with the group's channels."""

    IN = "in"  # consumes them (a consumer weight's input-channel axis)
    OUT = "out"  # produces or transforms them (filters, bias, normalisation parameters)


class PortKind(StrEnum):
    """Which side of a node a port is on."""

    IN = "in"  # input `index` of the node
    OUT = "out"  # output `index` of the node
    BODY = "body"  # position `index` of a control-flow node's `body_values`


class EditKind(StrEnum):
    """What an Edit rewrites: the first element of `Edit.target`."""

    ATTR = "attr"  # ("attr", node_index, attr_name, element or -1 for a scalar)
    CONST = "const"  # ("const", initializer_name, flat element index)


class BiasAttach(StrEnum):
    """Where compensation puts a new bias: the first element of `LinearForm.bias_attach`."""

    INPUT = "input"  # ("input", i): it becomes input i of the node
    ADD = "add"  # ("add",): an Add of it after the node
