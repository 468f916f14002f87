"""Groups: every initializer slice, space and edit that moves with one root channel space.

Groups, slices and spaces are values: their index arrays are read-only copies, and equality
and hashing compare every field, arrays by content.
"""
from __future__ import annotations

from dataclasses import Field, dataclass, fields
from typing import Any, ClassVar

import numpy as np

from . import indexmap
from .edit import Edit
from .kinds import Role


class _Frozen:
    """Value semantics for a frozen dataclass holding numpy arrays (the fields named in `_arrays`):
    they are stored as read-only copies; == and hash() compare their dtype, shape and content."""

    _arrays: ClassVar[tuple[str, ...]] = ()
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]  # set by @dataclass on each subclass

    def __post_init__(self) -> None:
        for name in self._arrays:
            arr = np.array(getattr(self, name))  # a copy: the caller's array stays its own
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    def _key(self) -> tuple:
        return tuple((v.dtype.str, v.shape, v.tobytes()) if f.name in self._arrays else v
                     for f in fields(self) for v in (getattr(self, f.name),))

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self is other or self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self):  # pickle and copy rebuild through __init__: the arrays stay read-only
        return (type(self), tuple(getattr(self, f.name) for f in fields(self)))


@dataclass(frozen=True, eq=False)
class Slice(_Frozen):
    """Positions along `axis` of initializer `tensor`, each tied to a root index."""

    _arrays: ClassVar[tuple[str, ...]] = ("positions", "roots")

    tensor: str
    axis: int
    role: Role
    scale: bool
    positions: np.ndarray
    roots: np.ndarray
    # role IN only: (tensor, axis) of the consumer's input that these positions read
    # (same positions along that axis), for activation statistics; None when unknown
    source: tuple[str, int] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "role", Role(self.role))

    def indices(self, pruned: np.ndarray) -> np.ndarray:
        """Sorted positions of this slice removed when the roots flagged in `pruned` go."""
        return indexmap.unique(self.positions[pruned[self.roots]])


@dataclass(frozen=True, eq=False)
class Space(_Frozen):
    """Positions along `axis` of an intermediate tensor, each tied to a root index."""

    _arrays: ClassVar[tuple[str, ...]] = ("positions", "roots")

    tensor: str
    axis: int
    size: int
    positions: np.ndarray
    roots: np.ndarray

    def indices(self, pruned: np.ndarray) -> np.ndarray:
        return indexmap.unique(self.positions[pruned[self.roots]])


@dataclass(frozen=True, eq=False)
class Group(_Frozen):
    """Everything reached from one root channel space.

    `units[r]` labels root index r; roots with the same label are coupled and
    can only be removed together (for example the two branches of a channel
    shuffle, or the head_dim channels of one attention head). Scoring and
    planning work on units.
    """

    _arrays: ClassVar[tuple[str, ...]] = ("units",)

    id: int
    root: tuple[str, int]
    root_node: str
    size: int
    units: np.ndarray
    spaces: tuple[Space, ...]
    slices: tuple[Slice, ...]
    edits: tuple[Edit, ...]
    inexact_reasons: tuple[str, ...]
    frozen_reason: str | None
    kinds: tuple[str, ...] = ()  # what the units are, from the rules ("attention heads", ...)
    # run-time quantizers whose range spans the channels (Effects.shared_range): the oracle silences
    # the removed channels at their producers too
    shared_range_reasons: tuple[str, ...] = ()
    # KV-cache graph inputs / outputs whose heads axis the group reaches (cache_io): pruning it changes
    # the model's signature, so the planner takes the group only with PruneConfig.prune_cache
    interface: tuple[str, ...] = ()

    @property
    def exact(self) -> bool:
        return not self.inexact_reasons

    @property
    def prunable(self) -> bool:
        return self.frozen_reason is None and self.unit_count > 1

    @property
    def unit_count(self) -> int:
        return int(self.units.max()) + 1 if len(self.units) else 0

    @property
    def root_label(self) -> str:
        return f"{self.root[0]}[axis {self.root[1]}]"

    def roots_of_units(self, unit_ids) -> np.ndarray:
        return np.nonzero(np.isin(self.units, np.asarray(list(unit_ids), dtype=np.int64)))[0]

    def mask(self, pruned_roots) -> np.ndarray:
        mask = np.zeros(self.size, dtype=bool)
        mask[np.asarray(list(pruned_roots), dtype=np.int64)] = True
        return mask
