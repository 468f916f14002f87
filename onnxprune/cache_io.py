"""KV-cache inputs and outputs of decoder exports: the one part of a model's interface pruning may change.

Decoders exported with a KV cache (Optimum, ONNX Runtime's model builder) take
`past_key_values.N.key` / `.value` [batch, kv_heads, past, head_dim] and give
`present.N.key` / `.value`. Removing attention heads changes their heads axis,
so the groups that reach them are pruned only on request (`--prune-cache`).
This module recognises those tensors by name and carries a removal across the
interface: the pruned model's cache feeds are the original's at the kept heads,
and its cache outputs compare with the original's at the kept heads.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np

HEADS_AXIS = 1  # [batch, heads, sequence, head_dim]
_CACHE_NAME = re.compile(r"^(past_key_values|past|present|present_key_values)\.\d+\.(key|value)$")

# tensor name -> (axis, removed positions, sorted)
InterfaceChanges = Mapping[str, tuple[int, Sequence[int]]]


def is_cache_space(name: str, axis: int) -> bool:
    """True for the heads axis of a KV-cache input or output (by the exporters' names)."""
    return axis == HEADS_AXIS and bool(_CACHE_NAME.match(name))


def changes(spaces: Mapping[tuple[str, int], set[int]], interface: set[str]) -> dict[str, tuple[int, list[int]]]:
    """The removal's positions on interface tensors (`spaces`: removal.spaces)."""
    return {t: (axis, sorted(idx)) for (t, axis), idx in spaces.items() if t in interface and idx}


def slice_feeds(feeds: Mapping[str, np.ndarray], interface: InterfaceChanges) -> dict[str, np.ndarray]:
    """Feeds for the pruned model: cache inputs at the kept heads, the rest as they are."""
    out = dict(feeds)
    for name, (axis, removed) in interface.items():
        if name in out:
            out[name] = np.delete(out[name], list(removed), axis=axis)
    return out


def slice_shapes(shapes: Mapping[str, tuple[int, ...]], interface: InterfaceChanges) -> dict[str, tuple[int, ...]]:
    """Input shapes of the pruned model: cache inputs with their removed heads taken off."""
    out = dict(shapes)
    for name, (axis, removed) in interface.items():
        if name in out:
            dims = list(out[name])
            dims[axis] -= len(removed)
            out[name] = tuple(dims)
    return out


def slice_outputs(names: Sequence[str], outputs: Sequence[np.ndarray],
                  interface: InterfaceChanges) -> list[np.ndarray]:
    """The original model's outputs as the pruned one gives them: cache outputs at the kept heads."""
    result = []
    for name, value in zip(names, outputs):
        change = interface.get(name)
        result.append(np.delete(value, list(change[1]), axis=change[0]) if change else value)
    return result
