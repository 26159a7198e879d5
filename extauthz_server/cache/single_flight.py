"""One call per key at a time: callers that come while a call for their key is under way wait
for its answer instead of making their own (request coalescing)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Abandoned(Exception):
    """The call being waited for was cancelled with its caller."""


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._in_flight: dict[K, asyncio.Future[V]] = {}

    async def run(
        self,
        key: K,
        call: Callable[[], Awaitable[V]],
        deadline: float,
        timed_out: Callable[[], Exception],
    ) -> tuple[V, bool]:
        """The answer for `key` and whether it came from another caller's call.

        Waiting for another call ends at `deadline` (time.monotonic()) with `timed_out()`
        raised. A failure of that call is raised to its waiters too. If it is cancelled with
        its caller, a waiter makes the call itself.
        """
        while (pending := self._in_flight.get(key)) is not None:
            try:
                return await self._join(pending, deadline, timed_out), True
            except _Abandoned:
                continue
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            value = await call()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # nobody else may be waiting: mark it retrieved
            raise
        else:
            future.set_result(value)
            return value, False
        finally:
            if self._in_flight.get(key) is future:
                del self._in_flight[key]

    @staticmethod
    async def _join(
        pending: asyncio.Future[V], deadline: float, timed_out: Callable[[], Exception]
    ) -> V:
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                return await asyncio.shield(pending)
        except TimeoutError as exc:
            raise timed_out() from exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if pending.cancelled() and task is not None and not task.cancelling():
                raise _Abandoned from None
            raise
