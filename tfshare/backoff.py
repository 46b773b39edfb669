"""One retry pause for every long-running loop (the agent, the audit service).

Owns: ``Backoff``, a pause that doubles on each failure up to a ceiling, with jitter so that
many agents cut off by one broker restart do not all come back in the same instant, and
``sleep_or_stop``, which waits for the pause or for a stop request, whichever comes first.
A loop that fails before it did any work (a missing stream, a consumer that is not there
during a leader election, refused credentials) waits longer each time instead of spinning.
Randomness is an argument, so the schedule is testable exactly.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """A growing pause: ``first`` after the first failure, doubling up to ``ceiling``.

    ``jitter`` is the fraction of the pause drawn at random (0.2: 80-100 % of it); ``rand``
    returns a float in [0, 1). ``reset`` after a success starts again from ``first``."""

    first: float = 0.2
    ceiling: float = 5.0
    jitter: float = 0.2
    rand: Callable[[], float] = field(default=random.random, repr=False)
    _current: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.ceiling:
            raise ValueError("Backoff needs 0 < first <= ceiling")
        if not 0 <= self.jitter < 1:
            raise ValueError("Backoff jitter is a fraction in [0, 1)")

    @property
    def current(self) -> float:
        """The pause the next failure will take, before jitter (0 before any failure)."""
        return self._current

    def next(self) -> float:
        """The pause to take after one more failure, in seconds."""
        self._current = self.first if self._current == 0 else min(self._current * 2, self.ceiling)
        return self._current * (1 - self.jitter * self.rand())

    def reset(self) -> None:
        self._current = 0.0


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if ``stop`` is set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return
