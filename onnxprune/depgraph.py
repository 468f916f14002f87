"""The dependency graph: grow one group from every root channel space.

Each node has an input side and an output side (its ports). Starting from a
root (a Conv's filters, a Gemm's output features...), channels flow across
inter-layer edges (a tensor links its producer's output port to every
consumer's input port) and intra-layer edges (a rule forwarding from one port
of a node to another). Rules say what to cut on the way. A space that reaches
something no rule can follow freezes the whole group, with the reason.
"""
from __future__ import annotations

import logging
import os
from collections import deque

import numpy as np

from . import cache_io, indexmap
from .group import Group, Slice, Space
from .indexmap import Pairs
from .ir import Graph, Node
from .kinds import EditKind, PortKind, Role
from .progress import Progress
from .rules import Effects, Port, rule_for
from .rules.shape_only import shape_readers

log = logging.getLogger(__name__)

# Set to 1 (the test suite does, in tests/conftest.py) to make a rule bug raise RuleBugError instead
# of freezing its group with a warning: users keep a run that one bad rule cannot kill, tests see it.
STRICT_ENV = "ONNXPRUNE_STRICT"


class RuleBugError(RuntimeError):
    """A rule said something impossible (positions outside a tensor); raised only in strict mode."""


def strict_mode() -> bool:
    """Whether rule bugs raise (ONNXPRUNE_STRICT set to anything but "" or "0")."""
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


def build_groups(graph: Graph) -> list[Group]:
    """One group per root channel space not already reached by an earlier group."""
    groups: list[Group] = []
    claimed: set[tuple[str, int]] = set()
    progress = Progress(log, "grouping", len(graph.nodes), " nodes")
    for node in graph.nodes:
        progress.add()
        for tensor, axis in rule_for(node).roots(node, graph):
            rank = graph.rank(tensor)
            if rank is not None and axis < 0:
                axis += rank
            if (tensor, axis) in claimed or not tensor:
                continue
            size = graph.dim(tensor, axis)
            if size is None or size < 2:
                if size is None:
                    groups.append(_frozen_stub(len(groups), node.name, tensor, axis,
                                               f"size of '{tensor}' along axis {axis} is unknown"))
                continue
            group, visited = _Growth(graph, len(groups), node.name, (tensor, axis), size).run()
            claimed.update(visited)
            groups.append(group)
    progress.finish()
    log.info("%d groups, %d frozen", len(groups), sum(g.frozen_reason is not None for g in groups))
    return groups


def _frozen_stub(gid: int, node: str, tensor: str, axis: int, reason: str) -> Group:
    return Group(gid, (tensor, axis), node, 0, np.zeros(0, np.int64), (), (), (), (), reason)


class _Growth:
    """Breadth-first walk of one group. Per-walk state lives here, never on rules."""

    def __init__(self, graph: Graph, gid: int, root_node: str, root: tuple[str, int], size: int):
        self.graph, self.gid, self.root_node, self.root, self.size = graph, gid, root_node, root, size
        self.spaces: dict[tuple[str, int], np.ndarray] = {}
        self.cuts: dict[tuple[str, int, Role, bool], np.ndarray] = {}
        self.sources: dict[tuple[str, int], tuple[str, int]] = {}  # Role.IN cut -> consumed (tensor, axis)
        self.edits: dict = {}
        self.inexact: list[str] = []
        self.shared_range: list[str] = []
        self.interface: list[str] = []  # KV-cache graph inputs / outputs whose heads axis the group reaches
        self.kinds: list[str] = []
        self.frozen: str | None = None
        self.queue: deque = deque()
        # initializers with several users: tensor -> user node index -> axis -> positions cut
        self.shared: dict[str, dict[int, dict[int, set[int]]]] = {}
        self.edit_nodes: dict[str, set[int]] = {}  # shape constant -> nodes whose edits rewrite it
        self.required: dict[tuple[str, int], str] = {}  # space -> freeze reason when never reached
        self.scaled: list[tuple[tuple[str, int], tuple[str, int], int, str]] = []  # Effects.scaled
        # spaces of weights computed from constants -> role of the initializer cuts they stand for
        self.roles: dict[tuple[str, int], Role] = {}
        # (shared initializer, user node index, axis) -> the window a Slice user reads
        self.windows: dict[tuple[str, int, int], tuple[int, int]] = {}

    def run(self) -> tuple[Group, set[tuple[str, int]]]:
        self._visit(self.root[0], self.root[1], indexmap.identity(self.size), None)
        while self.queue and self.frozen is None:
            self._step(*self.queue.popleft())
        self.frozen = self.frozen or self._shared_problem() or self._required_problem() or self._edit_problem()
        return self._group(), set(self.spaces)

    def _visit(self, tensor: str, axis: int, pairs: Pairs, origin) -> None:
        keys, fresh = indexmap.merge(self.spaces.get((tensor, axis)), pairs)
        if len(fresh):
            self.spaces[(tensor, axis)] = keys
            self.queue.append((tensor, axis, fresh, origin))

    def _step(self, tensor: str, axis: int, pairs: Pairs, origin) -> None:
        by = self.graph.nodes[origin[0]] if origin is not None else None  # the node that forwarded them
        size = self.graph.dim(tensor, axis)  # None is a space problem
        problem = self._space_problem(tensor, axis, pairs) or \
            (self._rule_bug(tensor, axis, size, pairs, by) if size is not None else None)
        if problem:
            self.frozen = problem
            return
        for node, port in self._ports(tensor):
            if origin == (node.index, port):
                continue
            if port.index < 0:
                self.frozen = f"{node}: reads '{tensor}' inside a subgraph"
                return
            fx = Effects(node, self.graph, const_role=self.roles.get((tensor, axis), Role.OUT))
            rule_for(node).propagate(node, self.graph, port, axis, pairs, fx)
            if port.is_input:
                self._note_sources(fx, tensor, axis, pairs)
            if fx.frozen_reason or self._take(fx):
                self.frozen = self.frozen or fx.frozen_reason
                return

    def _ports(self, tensor: str):
        producer = self.graph.producer(tensor)
        if producer is not None:
            yield producer, Port(PortKind.OUT, producer.outputs.index(tensor))
        for node, i in self.graph.consumers(tensor):
            yield node, Port(PortKind.IN, i)
        for node, j in self.graph.body_users(tensor):  # a body input or output of a control-flow node
            yield node, Port(PortKind.BODY, j)

    def _space_problem(self, tensor: str, axis: int, pairs: Pairs) -> str | None:
        g = self.graph
        if (g.is_graph_output(tensor) or g.is_graph_input(tensor)) and cache_io.is_cache_space(tensor, axis):
            if tensor not in self.interface:  # the planner prunes it only on request (--prune-cache)
                self.interface.append(tensor)
        elif g.is_graph_output(tensor):
            return f"reaches graph output '{tensor}'"
        elif g.is_graph_input(tensor):
            return f"reaches graph input '{tensor}'"
        size = g.dim(tensor, axis)
        if size is None:
            hint = "dynamic; fix it with --input-shape" if _dynamic_inputs(g) else "shape inference cannot tell it"
            return f"size of '{tensor}' along axis {axis} is unknown ({hint})"
        return None

    @staticmethod
    def _rule_bug(tensor: str, axis: int, size: int, pairs: Pairs, by: Node | None) -> str | None:
        """Positions that node `by`'s rule forwarded or cut but that do not exist: a bug in that rule.
        Strict mode raises RuleBugError; otherwise the group freezes with an "internal:" reason and
        a warning."""
        lo, hi = int(pairs[:, 0].min()), int(pairs[:, 0].max())
        if 0 <= lo and hi < size:
            return None
        problem = (f"{by or 'the root'} mapped positions [{lo}, {hi}] onto '{tensor}' along axis {axis}, which has "
                   f"{size} positions")
        if strict_mode():
            raise RuleBugError(f"rule bug: {problem}")
        log.warning("rule bug: %s; the group is frozen", problem)
        return f"internal: {problem}"

    def _note_sources(self, fx: Effects, tensor: str, axis: int, pairs: Pairs) -> None:
        """A Role.IN cut with the visited positions themselves reads the visited input along `axis`."""
        for cut in fx.cuts:
            if cut.role == Role.IN and np.array_equal(cut.pairs, pairs):
                self.sources.setdefault((cut.tensor, cut.axis), (tensor, axis))

    def _take(self, fx: Effects) -> bool:
        """Record a rule's effects; return True when they freeze the group."""
        for cut in fx.cuts:
            if self.graph.is_graph_output(cut.tensor):
                self.frozen = f"{fx.node}: initializer '{cut.tensor}' is a graph output"
                return True
            shape = self.graph.const_shape(cut.tensor)
            size = shape[cut.axis] if 0 <= cut.axis < len(shape) else 0  # an axis it lacks: nothing fits
            bug = self._rule_bug(cut.tensor, cut.axis, size, cut.pairs, fx.node)
            if bug:
                self.frozen = bug
                return True
            if self.graph.const_users(cut.tensor) > 1:
                by_axis = self.shared.setdefault(cut.tensor, {}).setdefault(fx.node.index, {})
                by_axis.setdefault(cut.axis, set()).update(cut.pairs[:, 0].tolist())
                if cut.reads is not None:
                    self.windows[(cut.tensor, fx.node.index, cut.axis)] = cut.reads
            key = (cut.tensor, cut.axis, cut.role, cut.scale)
            self.cuts[key], _ = indexmap.merge(self.cuts.get(key), cut.pairs)
        for edit in fx.edits:
            self.edits[edit] = None
            target = edit.target
            if target[0] is EditKind.CONST:
                self.edit_nodes.setdefault(target[1], set()).add(fx.node.index)
        for space, reason in fx.required:
            self.required.setdefault(space, reason)
        self.scaled.extend(fx.scaled)
        self.inexact.extend(r for r in fx.inexact_reasons if r not in self.inexact)
        self.shared_range.extend(r for r in fx.shared_range_reasons if r not in self.shared_range)
        self.kinds.extend(k for k in fx.kinds if k not in self.kinds)
        for space, role in fx.roles.items():
            self.roles.setdefault(space, role)
        for tensor, axis, pairs, port in fx.forwards:
            self._visit(tensor, axis, pairs, (fx.node.index, port))
        return False

    def _shared_problem(self) -> str | None:
        """A shared initializer (tied embedding and output weights) may only be cut when every
        one of its users is reached by this group and cuts the same positions on the same axes
        (within the window it reads, for Slices of a weight's gate blocks)."""
        for tensor, by_node in self.shared.items():
            users = {node.index for node, _ in self.graph.consumers(tensor)}
            if set(by_node) != users:
                missing = sorted(str(self.graph.nodes[i]) for i in users - set(by_node))
                return (f"initializer '{tensor}' is shared by {len(users)} nodes and the channels do not "
                        f"reach {', '.join(missing)}")
            union: dict[int, set[int]] = {}
            for by_axis in by_node.values():
                for axis, pos in by_axis.items():
                    union.setdefault(axis, set()).update(pos)
            for user, by_axis in by_node.items():
                for axis, pos in union.items():
                    lo, hi = self.windows.get((tensor, user, axis), (0, 1 << 62))
                    if {p for p in pos if lo <= p < hi} != by_axis.get(axis, set()):
                        return f"initializer '{tensor}' is shared by {len(users)} nodes that cut it differently"
        return None

    def _required_problem(self) -> str | None:
        """A shape element copying a tensor's size at run time follows the pruning only when that
        tensor loses the same channels, i.e. is in this group."""
        for (tensor, axis), reason in self.required.items():
            if (tensor, axis) not in self.spaces:
                return reason
        for source, target, scale, reason in self.scaled:
            if target not in self.spaces or not _scaled_positions(self.spaces[source], self.spaces[target], scale):
                return f"{reason}: it does not lose {scale} positions for each one '{source[0]}' loses"
        return None

    def _edit_problem(self) -> str | None:
        """A rewritten shape constant sets the size of every node reading it, through shared shape
        arithmetic too (one Concat'ed target read by the Reshapes of several layers): each of them
        must be one of this group's nodes that asked for the rewrite, or it would be left stale."""
        for const, owners in self.edit_nodes.items():
            others = shape_readers(self.graph, const) - owners
            if others:
                names = ", ".join(sorted(str(self.graph.nodes[i]) for i in others)[:3])
                return (f"shape constant '{const}' also sets the size of {len(others)} node(s) outside this "
                        f"group ({names}{', ...' if len(others) > 3 else ''}); it cannot be rewritten for this "
                        f"group alone")
        return None

    def _group(self) -> Group:
        spaces = []
        for (tensor, axis), keys in self.spaces.items():
            pairs = indexmap.decode(keys)
            spaces.append(Space(tensor, axis, int(self.graph.dim(tensor, axis) or 0), pairs[:, 0], pairs[:, 1]))
        slices = []
        for (tensor, axis, role, scale), keys in self.cuts.items():
            pairs = indexmap.decode(keys)
            source = self.sources.get((tensor, axis)) if role == Role.IN else None
            slices.append(Slice(tensor, axis, role, scale, pairs[:, 0], pairs[:, 1], source))
        relations = [(s.positions, s.roots) for s in spaces] + [(c.positions, c.roots) for c in slices]
        units = couple_units(self.size, relations)
        return Group(self.gid, self.root, self.root_node, self.size, units, tuple(spaces), tuple(slices),
                     tuple(self.edits), tuple(self.inexact), self.frozen, tuple(self.kinds),
                     tuple(self.shared_range), tuple(self.interface))


def couple_units(size: int, relations: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Label root indices so that roots sharing any position carry the same label (0..U-1).

    Connected components by vectorised min-label propagation: the relations become one list of
    (position, root) pairs (positions made distinct per relation), pairs whose position no other pair
    shares are dropped (they couple nothing), then every position takes the smallest label of its
    roots and every root the smallest label of its positions (sorted segments and reduceat), labels
    are shortcut through each other, until nothing changes. Widened spaces such as grouped
    convolutions put tens of thousands of pairs here, a 7B decoder's residual stream a million.
    """
    labels = np.arange(size, dtype=np.int64)
    positions_all, roots_all, offset = [], [], 0
    for positions, roots in _distinct_relations(relations):
        if np.bincount(positions - positions.min()).max() < 2:
            continue  # all positions distinct: this relation couples no roots
        positions_all.append(positions + offset)
        roots_all.append(roots)
        offset = int(positions_all[-1].max()) + 1
    if not positions_all:
        return labels
    n_slots, slot = indexmap.inverse(np.concatenate(positions_all))
    roots = np.concatenate(roots_all)
    shared = np.bincount(slot, minlength=n_slots)[slot] >= 2
    if not shared.any():
        return labels
    slot, roots = slot[shared], roots[shared]
    by_slot = np.argsort(slot, kind="stable")
    roots_by_slot = roots[by_slot]
    slot_starts = _segment_starts(slot[by_slot])
    slot_lengths = np.diff(np.append(slot_starts, len(slot)))
    by_root = np.argsort(roots_by_slot, kind="stable")
    root_starts = _segment_starts(roots_by_slot[by_root])
    distinct_roots = roots_by_slot[by_root][root_starts]
    changed = True
    while changed:
        before = labels.copy()
        lowest = np.repeat(np.minimum.reduceat(labels[roots_by_slot], slot_starts), slot_lengths)
        labels[distinct_roots] = np.minimum(labels[distinct_roots], np.minimum.reduceat(lowest[by_root], root_starts))
        while True:  # pointer jumping: a label is a root of the same component
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
        changed = not np.array_equal(before, labels)
    return indexmap.inverse(labels)[1]


def _distinct_relations(relations: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The relations of two pairs or more, each once as flat int64 arrays: a decoder's head spaces repeat
    one relation 30 times (compared by a cheap signature first, then element by element)."""
    kept: dict[tuple[int, int, int], list[tuple[np.ndarray, np.ndarray]]] = {}
    out = []
    for positions, roots in relations:
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        if len(positions) < 2:
            continue
        roots = np.asarray(roots, dtype=np.int64).reshape(-1)
        same = kept.setdefault((len(positions), int(positions.sum()), int(roots.sum())), [])
        if any(np.array_equal(positions, p) and np.array_equal(roots, r) for p, r in same):
            continue
        same.append((positions, roots))
        out.append((positions, roots))
    return out


def _segment_starts(ordered: np.ndarray) -> np.ndarray:
    """Where each run of equal values of a sorted array begins."""
    return np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))


def _dynamic_inputs(graph) -> bool:
    """Whether some graph input's shape is not fully static (then --input-shape may fix a size)."""
    return any(any(d is None for d in graph.shapes.get(name, (None,))) for name in graph.graph_inputs)


def _scaled_positions(source, target, scale: int) -> bool:
    """Each set of roots that removes together (coupled through a position of either space) holds
    `scale` times as many positions in `target` as in `source`, so any removal takes k x as many
    from the target's size as from the source's (both indexmap keys)."""
    src, tgt = indexmap.decode(source), indexmap.decode(target)
    if set(np.unique(src[:, 1]).tolist()) != set(np.unique(tgt[:, 1]).tolist()):
        return False
    size = int(max(src[:, 1].max(), tgt[:, 1].max())) + 1
    units = couple_units(size, [(src[:, 0], src[:, 1]), (tgt[:, 0], tgt[:, 1])])

    def positions_per_unit(pairs) -> np.ndarray:
        unit_of = np.unique(np.stack([units[pairs[:, 1]], pairs[:, 0]], axis=1), axis=0)[:, 0]
        return np.bincount(unit_of, minlength=int(units.max()) + 1)
    return bool(np.array_equal(positions_per_unit(tgt), scale * positions_per_unit(src)))
