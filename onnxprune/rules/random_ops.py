"""Ops whose outputs are random: no channel space crosses them, and they are never folded."""
from __future__ import annotations

from .base import UnknownOpRule, register


@register("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli", "Multinomial")
class RandomRule(UnknownOpRule):
    """Each run draws new values: folding them into a constant would change what the model computes."""

    deterministic = False
