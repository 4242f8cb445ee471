"""A clock a test moves by hand, for code that takes a `clock` (a monotonic function)."""
from __future__ import annotations


class FakeClock:
    """Seconds that pass only when the test says so: ``clock.now += 1.1``."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now
