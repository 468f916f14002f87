"""A log line every few seconds of a long step, with how far it is and the time left."""
from __future__ import annotations

import logging
import time

EVERY_S = 5.0


class Progress:
    """Counts `done` of `total` (items or bytes) and logs at most every EVERY_S seconds:
    "LABEL: 3/12 groups (5.2s, about 15s left)"."""

    def __init__(self, log: logging.Logger, label: str, total: float, unit: str = "", scale: float = 1.0) -> None:
        self.log, self.label, self.total, self.unit, self.scale = log, label, total, unit, scale
        self.done = 0.0
        self.start = self.last = time.perf_counter()

    def add(self, amount: float = 1) -> None:
        self.done += amount
        now = time.perf_counter()
        if now - self.last < EVERY_S or self.done >= self.total:
            return
        elapsed = now - self.start
        left = elapsed * (self.total - self.done) / max(self.done, 1e-9)
        self.log.info("%s: %s/%s%s (%.0fs, about %.0fs left)", self.label, self._amount(self.done),
                      self._amount(self.total), self.unit, elapsed, left)
        self.last = now

    def finish(self) -> None:
        """One closing line when the step was long enough to have shown progress."""
        seconds = time.perf_counter() - self.start
        if seconds >= EVERY_S:
            self.log.info("%s: %s%s in %.0fs", self.label, self._amount(self.total), self.unit, seconds)

    def _amount(self, value: float) -> str:
        return f"{value / self.scale:.2f}" if self.scale != 1.0 else f"{int(value)}"
