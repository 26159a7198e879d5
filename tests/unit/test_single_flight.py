"""Request coalescing (SingleFlight), shared by the identity resolver and the permissions
enrichment: one call per key at a time, failures shared, a cancelled call taken over."""

from __future__ import annotations

import asyncio
import time

import pytest

from extauthz_server.cache.single_flight import SingleFlight


class Slow:
    def __init__(self, answer: str = "answer", delay_s: float = 0.05) -> None:
        self.answer = answer
        self.delay_s = delay_s
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        return self.answer


def later(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


async def test_concurrent_callers_share_one_call() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    call = Slow()

    results = await asyncio.gather(
        *(flight.run("k", call, later(), lambda: TimeoutError("late")) for _ in range(5))
    )

    assert call.calls == 1
    assert sorted(joined for _, joined in results) == [False, True, True, True, True]
    assert {value for value, _ in results} == {"answer"}


async def test_a_failure_reaches_every_waiter_and_is_not_remembered() -> None:
    flight: SingleFlight[str, str] = SingleFlight()

    async def failing() -> str:
        await asyncio.sleep(0.02)
        raise ValueError("down")

    results = await asyncio.gather(
        *(flight.run("k", failing, later(), lambda: TimeoutError()) for _ in range(3)),
        return_exceptions=True,
    )
    again = await flight.run("k", Slow(), later(), lambda: TimeoutError())

    assert all(isinstance(r, ValueError) for r in results)
    assert again == ("answer", False)


async def test_waiting_ends_at_the_deadline_with_the_callers_error() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    owner = asyncio.create_task(flight.run("k", Slow(delay_s=1.0), later(), lambda: TimeoutError()))
    await asyncio.sleep(0)

    with pytest.raises(LookupError, match="gave up"):
        await flight.run("k", Slow(), later(0.02), lambda: LookupError("gave up"))
    owner.cancel()


async def test_when_the_call_is_cancelled_one_waiter_takes_over_for_all() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    first = Slow(delay_s=1.0)
    owner = asyncio.create_task(flight.run("k", first, later(), lambda: TimeoutError()))
    await asyncio.sleep(0)
    takeover = Slow("second answer")
    waiters = [
        asyncio.create_task(flight.run("k", takeover, later(), lambda: TimeoutError()))
        for _ in range(3)
    ]
    await asyncio.sleep(0.01)

    owner.cancel()
    results = await asyncio.gather(*waiters)

    assert takeover.calls == 1
    assert {value for value, _ in results} == {"second answer"}
    # The key is free again: a later caller makes a fresh call.
    assert await flight.run("k", Slow("third"), later(), lambda: TimeoutError()) == ("third", False)
