"""A circuit breaker for a remote dependency: after repeated failures, callers fail at once
for a while instead of each waiting out its timeout; then one call probes for recovery."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    failure_threshold: int  # consecutive failures that open the circuit; 0 never opens it
    open_s: float  # how long it stays open before one call may probe


class CircuitBreaker:
    """Closed → (threshold consecutive failures) → open for `open_s` → one probe: a success
    closes it, a failure opens it again. Callers ask `allow()` before each call and report
    its outcome with exactly one of `succeeded`, `failed` or `abandoned`."""

    def __init__(self, settings: BreakerSettings, clock: Callable[[], float] = time.monotonic):
        self._settings = settings
        self._clock = clock
        self._consecutive_failures = 0
        self._open_until: float | None = None
        self._probing = False

    @property
    def is_open(self) -> bool:
        """True from opening until a probe succeeds."""
        return self._open_until is not None

    def allow(self) -> bool:
        if self._open_until is None:
            return True
        if self._probing or self._clock() < self._open_until:
            return False
        self._probing = True
        return True

    def succeeded(self) -> None:
        self._consecutive_failures = 0
        self._open_until = None
        self._probing = False

    def failed(self) -> bool:
        """Record a failure; True when it opened the circuit (it was closed or probing)."""
        self._consecutive_failures += 1
        threshold = self._settings.failure_threshold
        opens = self._probing or (
            self._open_until is None and 0 < threshold <= self._consecutive_failures
        )
        self._probing = False
        if opens:
            self._open_until = self._clock() + self._settings.open_s
        return opens

    def abandoned(self) -> None:
        """The call ended without an outcome (cancelled): another call may probe."""
        self._probing = False
