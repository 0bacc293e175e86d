"""Exponential backoff with a cap and jitter, for reconnects, sync retries and failed appends.

Jitter matters when many daemons (or many nodes of one daemon) fail together, e.g. when their
server restarts: without it they would all come back at the same instant, again and again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    """Delays of ``initial * factor**(attempt - 1)`` seconds, at most ``cap``, each shortened
    by a random fraction up to ``jitter`` (0 = none, 0.5 = between half and all of it)."""

    initial: float = 1.0
    factor: float = 2.0
    cap: float = 60.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.factor < 1 or self.cap < self.initial:
            raise ValueError(f"unusable backoff {self!r}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
        exponent = max(0, attempt - 1)
        # Compare exponents before computing the power: factor**1000 would overflow a float.
        base = self.cap if exponent > 64 else min(self.cap, self.initial * self.factor**exponent)
        return base * (1 - self.jitter * self.rng.random())
