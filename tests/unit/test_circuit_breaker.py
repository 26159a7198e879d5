"""The circuit breaker in front of the permissions API: when it opens, lets one probe
through, and closes again."""

from __future__ import annotations

import pytest

from extauthz_server.metadata.circuit_breaker import BreakerSettings, CircuitBreaker

OPEN_S = 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def breaker(clock: Clock, threshold: int = 3) -> CircuitBreaker:
    return CircuitBreaker(BreakerSettings(failure_threshold=threshold, open_s=OPEN_S), clock)


def fail(breaker: CircuitBreaker, times: int) -> list[bool]:
    opened = []
    for _ in range(times):
        assert breaker.allow()
        opened.append(breaker.failed())
    return opened


def test_it_opens_at_the_threshold_of_consecutive_failures(clock: Clock) -> None:
    circuit = breaker(clock)

    assert fail(circuit, 3) == [False, False, True]
    assert circuit.is_open
    assert not circuit.allow()


def test_a_success_starts_the_count_again(clock: Clock) -> None:
    circuit = breaker(clock)
    fail(circuit, 2)
    assert circuit.allow()
    circuit.succeeded()

    assert fail(circuit, 2) == [False, False]
    assert circuit.allow()


def test_once_the_open_period_passes_exactly_one_call_probes(clock: Clock) -> None:
    circuit = breaker(clock)
    fail(circuit, 3)

    clock.now += OPEN_S - 0.01
    assert not circuit.allow()
    clock.now += 0.01
    assert circuit.allow()
    assert not circuit.allow(), "a second call went through while the probe was running"


def test_a_successful_probe_closes_it(clock: Clock) -> None:
    circuit = breaker(clock)
    fail(circuit, 3)
    clock.now += OPEN_S
    assert circuit.allow()

    circuit.succeeded()

    assert not circuit.is_open
    assert all(circuit.allow() for _ in range(10))
    assert fail(circuit, 3) == [False, False, True]


def test_a_failed_probe_opens_it_for_another_period(clock: Clock) -> None:
    circuit = breaker(clock)
    fail(circuit, 3)
    clock.now += OPEN_S
    assert circuit.allow()

    assert circuit.failed()

    clock.now += OPEN_S - 0.01
    assert not circuit.allow()
    clock.now += 0.01
    assert circuit.allow()


def test_an_abandoned_probe_lets_the_next_call_probe(clock: Clock) -> None:
    circuit = breaker(clock)
    fail(circuit, 3)
    clock.now += OPEN_S
    assert circuit.allow()

    circuit.abandoned()

    assert circuit.is_open
    assert circuit.allow()


def test_an_abandoned_call_does_not_count_as_a_failure(clock: Clock) -> None:
    circuit = breaker(clock)
    fail(circuit, 2)
    assert circuit.allow()
    circuit.abandoned()

    assert circuit.allow()
    assert circuit.failed()  # the third failure, not the fourth


def test_a_threshold_of_zero_never_opens(clock: Clock) -> None:
    circuit = breaker(clock, threshold=0)

    assert not any(fail(circuit, 1000))
    assert not circuit.is_open
