"""Single use of DPoP proofs: a proof's jti is accepted once within the proof window.

The Protocol is what the authorizer asks; LocalReplayGuard answers for one process. The
shared answer across replicas (Redis) is `cache.shared_replay`.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from extauthz_server.errors import ReplayCheckUnavailable

# Far above what one process can take in a proof window (about 3,000 checks a second for
# 40 s): reaching it means a flood, which is refused rather than let forget proofs.
DEFAULT_MAX_ENTRIES = 500_000


class ReplayGuard(Protocol):
    async def first_use(self, key: bytes, now: float, window_s: float) -> bool:
        """True the first time `key` is offered within `window_s` seconds, False after that;
        raises ReplayCheckUnavailable when it cannot tell."""
        ...


class LocalReplayGuard:
    """Keys seen by this process, forgotten once their window has passed."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._max_entries = max_entries
        self._until: dict[bytes, float] = {}
        # (forget at, key), oldest first: one window for every key, so the order of
        # arrival is the order of expiry.
        self._order: deque[tuple[float, bytes]] = deque()

    async def first_use(self, key: bytes, now: float, window_s: float) -> bool:
        self._forget_until(now)
        until = self._until.get(key)
        if until is not None and until > now:
            return False
        if len(self._until) >= self._max_entries:
            raise ReplayCheckUnavailable("the in-process DPoP replay store is full")
        self._until[key] = now + window_s
        self._order.append((now + window_s, key))
        return True

    def _forget_until(self, now: float) -> None:
        order, until = self._order, self._until
        while order and order[0][0] <= now:
            expiry, key = order.popleft()
            if until.get(key) == expiry:
                del until[key]
