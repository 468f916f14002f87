"""Groups: every initializer slice, space and edit that moves with one root channel space."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .rules.base import Edit


@dataclass(frozen=True)
class Slice:
    """Positions along `axis` of initializer `tensor`, each tied to a root index."""

    tensor: str
    axis: int
    role: str
    scale: bool
    positions: np.ndarray
    roots: np.ndarray
    # role "in" only: (tensor, axis) of the consumer's input that these positions read
    # (same positions along that axis), for activation statistics; None when unknown
    source: tuple[str, int] | None = None

    def indices(self, pruned: np.ndarray) -> np.ndarray:
        """Sorted positions of this slice removed when the roots flagged in `pruned` go."""
        return np.unique(self.positions[pruned[self.roots]])


@dataclass(frozen=True)
class Space:
    """Positions along `axis` of an intermediate tensor, each tied to a root index."""

    tensor: str
    axis: int
    size: int
    positions: np.ndarray
    roots: np.ndarray

    def indices(self, pruned: np.ndarray) -> np.ndarray:
        return np.unique(self.positions[pruned[self.roots]])


@dataclass(frozen=True)
class Group:
    """Everything reached from one root channel space.

    `units[r]` labels root index r; roots with the same label are coupled and
    can only be removed together (for example the two branches of a channel
    shuffle, or the head_dim channels of one attention head). Scoring and
    planning work on units.
    """

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
