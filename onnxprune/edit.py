"""`Edit`: an attribute or shape-constant element that follows a channel space's new size.

Rules make edits (rules.base.Effects.edit_attr / edit_const), groups carry them, apply.py
performs them; none of them owns the type, so it lives here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

from .kinds import EditKind

AttrTarget = tuple[Literal[EditKind.ATTR], int, str, int]  # (kind, node index, attribute, element or -1)
ConstTarget = tuple[Literal[EditKind.CONST], str, int]  # (kind, initializer name, flat element index)
EditTarget = Union[AttrTarget, ConstTarget]


@dataclass(frozen=True)
class Edit:
    """Set an attribute element or a constant element from a space's new layout.

    target: (EditKind.ATTR, node_index, attr_name, element or -1 for a scalar)
            or (EditKind.CONST, initializer_name, flat element index).
    Without `offset` the value is the space's new size * mul // div; with it,
    the value is `offset` less the removed positions of the space below it
    (a Slice bound moving left as channels before it go).
    """

    target: EditTarget
    space: tuple[str, int]
    mul: int = 1
    div: int = 1
    offset: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", (EditKind(self.target[0]), *self.target[1:]))

    @property
    def kind(self) -> EditKind:
        return self.target[0]
