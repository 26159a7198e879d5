"""Prometheus metrics. The hot path only bumps plain counters; prometheus-client reads them at
scrape time through a collector, so a Check pays for no metric library calls. Label values
are bounded: route *names* and reason codes, never paths or subjects."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from extauthz_server.core.decision import Decision

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CHECK_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
INTROSPECTION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


@dataclass(slots=True)
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative, running = [], 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += count
            cumulative.append((_bound(bound), running))
        return HistogramMetricFamily(name, documentation, buckets=cumulative, sum_value=self.total)


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)


@dataclass(slots=True)
class CheckMetrics:
    decisions: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    check_seconds: Histogram = field(default_factory=lambda: Histogram(CHECK_BUCKETS_S))
    introspections: Counter[str] = field(default_factory=Counter)
    introspection_seconds: Histogram = field(
        default_factory=lambda: Histogram(INTROSPECTION_BUCKETS_S)
    )
    logouts: Counter[str] = field(default_factory=Counter)
    reloads: Counter[str] = field(default_factory=Counter)
    jwt_validations: Counter[str] = field(default_factory=Counter)

    def record_decision(self, decision: Decision, elapsed_s: float) -> None:
        outcome = "allowed" if decision.allowed else "denied"
        # `_value_`, not `value`: the same string without the enum's descriptor (hot path).
        self.decisions[(outcome, decision.reason._value_, decision.route or "")] += 1
        self.check_seconds.observe(elapsed_s)

    def record_introspection(self, outcome: str, elapsed_s: float) -> None:
        self.introspections[outcome] += 1
        self.introspection_seconds.observe(elapsed_s)


@dataclass(frozen=True, slots=True)
class CacheReadings:
    l1_hits: int
    l2_hits: int
    misses: int
    stale_served: int
    saturated: int
    in_flight: int
    l1_entries: int
    l1_bytes: int
    redis_errors: int
    redis_available: bool | None
    redis_writes_dropped: int = 0
    permission_cache_hits: int = 0
    permission_calls: int = 0
    permission_failures: int = 0
    permission_short_circuits: int = 0
    # Keycloak Authorization Services: "cache_hit", and the answers of calls by outcome.
    keycloak_permission_checks: Mapping[str, int] = field(default_factory=dict)
    # Log lines (audit lines included) dropped because stdout did not keep up.
    log_lines_dropped: int = 0


class _Collector(Collector):
    def __init__(self, checks: CheckMetrics, cache: Callable[[], CacheReadings]) -> None:
        self._checks = checks
        self._cache = cache

    def collect(self) -> Iterator[Metric]:
        checks = self._checks
        decisions = CounterMetricFamily(
            "extauthz_checks", "Check decisions.", labels=["outcome", "reason", "route"]
        )
        for (outcome, reason, route), count in sorted(checks.decisions.items()):
            decisions.add_metric([outcome, reason, route], count)
        yield decisions
        yield checks.check_seconds.family(
            "extauthz_check_duration_seconds", "Time to answer a Check."
        )
        introspections = CounterMetricFamily(
            "extauthz_introspections",
            "Introspection calls by outcome (active, inactive, error, rejected_client).",
            labels=["outcome"],
        )
        for outcome, count in sorted(checks.introspections.items()):
            introspections.add_metric([outcome], count)
        yield introspections
        yield checks.introspection_seconds.family(
            "extauthz_introspection_duration_seconds", "Time of introspection calls."
        )
        for name, documentation, counter in (
            (
                "extauthz_backchannel_logouts",
                "Back-channel logout requests by result.",
                checks.logouts,
            ),
            ("extauthz_config_reloads", "Configuration reloads by result.", checks.reloads),
            (
                "extauthz_jwt_validations",
                "Local JWT access token validations by result (valid, invalid).",
                checks.jwt_validations,
            ),
        ):
            family = CounterMetricFamily(name, documentation, labels=["result"])
            for result, count in sorted(counter.items()):
                family.add_metric([result], count)
            yield family
        cache = self._cache()
        lookups = CounterMetricFamily(
            "extauthz_cache_lookups", "Identity cache lookups.", labels=["level", "result"]
        )
        lookups.add_metric(["l1", "hit"], cache.l1_hits)
        lookups.add_metric(["l2", "hit"], cache.l2_hits)
        lookups.add_metric(["all", "miss"], cache.misses)
        yield lookups
        permissions = CounterMetricFamily(
            "extauthz_permission_lookups",
            "Permissions API lookups: answered from the cache, by a call that worked or failed, "
            "or failed at once while the circuit breaker was open.",
            labels=["result"],
        )
        permissions.add_metric(["cache_hit"], cache.permission_cache_hits)
        permissions.add_metric(["call_ok"], cache.permission_calls - cache.permission_failures)
        permissions.add_metric(["call_failed"], cache.permission_failures)
        permissions.add_metric(["short_circuited"], cache.permission_short_circuits)
        yield permissions
        keycloak = CounterMetricFamily(
            "extauthz_keycloak_permission_checks",
            "Keycloak Authorization Services answers: from the cache (cache_hit, shared_hit), "
            "served stale while Keycloak failed (stale_served), or by a call (granted, denied, "
            "token_invalid, misconfigured, failed, short_circuited).",
            labels=["outcome"],
        )
        for outcome, count in sorted(cache.keycloak_permission_checks.items()):
            keycloak.add_metric([outcome], count)
        yield keycloak
        yield CounterMetricFamily(
            "extauthz_cache_stale_served",
            "Identities served stale while the provider failed.",
            value=cache.stale_served,
        )
        yield CounterMetricFamily(
            "extauthz_introspection_saturated",
            "Checks refused because no introspection slot came free in time.",
            value=cache.saturated,
        )
        yield GaugeMetricFamily(
            "extauthz_introspections_in_flight", "Introspections under way.", value=cache.in_flight
        )
        yield GaugeMetricFamily("extauthz_cache_l1_entries", "L1 entries.", value=cache.l1_entries)
        yield GaugeMetricFamily(
            "extauthz_cache_l1_bytes", "L1 estimated size.", value=cache.l1_bytes
        )
        yield CounterMetricFamily(
            "extauthz_redis_errors", "Failed or timed-out Redis calls.", value=cache.redis_errors
        )
        yield CounterMetricFamily(
            "extauthz_redis_writes_dropped",
            "Cache entries not written to Redis because too many writes were under way.",
            value=cache.redis_writes_dropped,
        )
        if cache.redis_available is not None:
            yield GaugeMetricFamily(
                "extauthz_redis_up", "1 when Redis answers.", value=int(cache.redis_available)
            )
        yield CounterMetricFamily(
            "extauthz_log_lines_dropped",
            "Log and audit lines dropped because stdout did not take them fast enough.",
            value=cache.log_lines_dropped,
        )


class MetricsRegistry:
    """One per server, so several servers in one process (tests) never share counters."""

    def __init__(self, checks: CheckMetrics, cache: Callable[[], CacheReadings]) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_Collector(checks, cache))

    def render(self) -> bytes:
        return generate_latest(self._registry)
