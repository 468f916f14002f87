"""The index-map kernels the dependency graph grows groups with, against plain references."""
import numpy as np

from onnxprune import indexmap
from onnxprune.depgraph import couple_units


def _components(size: int, relations) -> list[int]:
    """Union-find reference: roots sharing a position of any relation are one unit, numbered in
    order of their smallest root."""
    parent = list(range(size))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for positions, roots in relations:
        first: dict[int, int] = {}
        for p, r in zip(positions.tolist(), roots.tolist()):
            if p in first:
                a, b = find(first[p]), find(r)
                parent[max(a, b)] = min(a, b)
            else:
                first[p] = r
    reps = [find(r) for r in range(size)]
    number = {rep: i for i, rep in enumerate(sorted(set(reps)))}
    return [number[rep] for rep in reps]


def test_couple_units_matches_union_find_on_random_relations():
    rng = np.random.default_rng(1)
    for _ in range(2000):
        size = int(rng.integers(1, 30))
        relations = []
        for _ in range(int(rng.integers(0, 4))):
            n = int(rng.integers(0, 40))
            relations.append((rng.integers(0, int(rng.integers(1, 40)), n), rng.integers(0, size, n)))
        assert couple_units(size, relations).tolist() == _components(size, relations)


def test_inverse_and_keys_match_numpy():
    rng = np.random.default_rng(2)
    for n in (0, 1, 2, 50, 1000):
        values = rng.integers(-5, 40, n)
        distinct, slot = indexmap.inverse(values)
        expected, inverse = np.unique(values, return_inverse=True)
        assert distinct == len(expected) and slot.tolist() == inverse.reshape(-1).tolist()
        pairs = np.stack([rng.integers(-3, 1 << 20, n), rng.integers(0, 1 << 30, n)], axis=1).astype(np.int64)
        assert np.array_equal(indexmap.decode(indexmap.encode(pairs)), pairs)
