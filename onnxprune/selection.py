"""User patterns (--ignore, --ratio-for) resolved to group ids.

Patterns are fnmatch globs (case-sensitive) matched against node names,
initializer names and op types. No op knowledge here: an op type is just
one more name a pattern may match.
"""
from __future__ import annotations

from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Iterable

from .errors import BadInputError

if TYPE_CHECKING:  # annotations only: parse_ratio_for serves the CLI parser without onnx
    from .group import Group
    from .ir import Graph, Node


def _matches(patterns: Iterable[str], names: Iterable[str]) -> bool:
    names = [n for n in names if n]
    return any(fnmatchcase(n, p) for p in patterns for n in names)


def touched_nodes(group: Group, graph: Graph) -> list[Node]:
    """The root node, every node reading a sliced initializer, and every node reading or
    writing one of the group's channel spaces."""
    by_name = {n.name: n for n in graph.nodes}
    nodes = [by_name[group.root_node]] if group.root_node in by_name else []
    for s in group.slices:
        nodes.extend(n for n, _ in graph.consumers(s.tensor))
    for sp in group.spaces:
        producer = graph.producer(sp.tensor)
        if producer is not None:
            nodes.append(producer)
        nodes.extend(n for n, _ in graph.consumers(sp.tensor))
    return nodes


def ignored_groups(groups: list[Group], graph: Graph, patterns: list[str]) -> frozenset[int]:
    """Ids of groups touching a node (by name or op type) or an initializer that a pattern matches."""
    if not patterns:
        return frozenset()
    out = set()
    for g in groups:
        nodes = touched_nodes(g, graph)
        names = [n.name for n in nodes] + [n.op_type for n in nodes] + [s.tensor for s in g.slices]
        if _matches(patterns, names):
            out.add(g.id)
    return frozenset(out)


def group_ratios(groups: list[Group], graph: Graph, rules: list[tuple[str, float]]) -> dict[int, float]:
    """Group id -> ratio for groups whose root node (name or op type) or a slice tensor matches;
    the first matching rule, in the order given, wins."""
    if not rules:
        return {}
    by_name = {n.name: n for n in graph.nodes}
    out: dict[int, float] = {}
    for g in groups:
        root = by_name.get(g.root_node)
        names = [g.root_node, root.op_type if root else ""] + [s.tensor for s in g.slices]
        for pattern, ratio in rules:
            if _matches([pattern], names):
                out[g.id] = ratio
                break
    return out


def parse_ratio_for(text: str) -> tuple[str, float]:
    """'PATTERN=R' -> (PATTERN, R) with R in [0, 1); BadInputError otherwise."""
    pattern, sep, value = text.rpartition("=")
    try:
        ratio = float(value)
    except ValueError:
        ratio = -1.0
    if not sep or not pattern or not 0.0 <= ratio < 1.0:
        raise BadInputError(f"--ratio-for expects PATTERN=R with R in [0, 1), got '{text}'")
    return pattern, ratio
