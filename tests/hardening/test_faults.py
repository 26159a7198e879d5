"""Faults end to end under load: nothing is allowed that should not be, and it all recovers.

Real Envoy (envoy/envoy.yaml, fail closed) → our server process → the Keycloak stand-in and a
real redis-server, with a bounded load loop of valid, invalid and malformed tokens through
Envoy. Each scenario runs: normal load, the fault, the fault cleared; it records the
statuses seen while the fault lasted and the time from the fault's end to the first 200 for
a valid token that no cache knew (recovery). `pytest -s tests/hardening/test_faults.py`
prints the table; it is also written as JSON under the pytest temporary directory.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.hardening.stack import (
    CACHED,
    CLIENT_SECRET,
    FRESH,
    AuthzRuns,
    BackgroundStandIn,
    LoadRunner,
    Result,
    Tokens,
    assert_only_valid_identities_upstream,
    assert_statuses,
    client_secret_forms,
    find_secrets,
    first_valid_200_after,
    hardening_config_text,
    status_counts,
    wait_until,
)
from tests.support.echo_upstream import BackgroundEchoUpstream
from tests.support.envoy import ENVOY_YAML, EXT_AUTHZ_FILTER, EnvoyProcess, load_deployment_config
from tests.support.envoy_fixture import EnvoyFactory
from tests.support.keycloak_standin import Fault
from tests.support.net import free_port
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.envoy, pytest.mark.slow, pytest.mark.timeout(120)]

PRE_S = 0.8  # normal load before the fault
FAULT_S = 2.0  # how long the fault lasts
SETTLE_S = 0.05  # requests sent this soon after the fault starts may have beaten it
RECOVERY_MAX_S = 8.0  # the scenario fails if no valid token is allowed by then
AFTER_MIN_S = 0.8  # load kept up after recovery, to see it stays recovered
MAX_REQUESTS = 6000  # per scenario (at most ~600/s); scenarios stay under 15 s


@dataclass
class Stack:
    standin: BackgroundStandIn
    redis: RedisServer
    authz: AuthzRuns
    envoy: EnvoyProcess
    upstream: BackgroundEchoUpstream
    tokens: Tokens
    table: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def stack(
    envoy_factory: EnvoyFactory,
    echo_upstream: BackgroundEchoUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("hardening-faults")
    standin = BackgroundStandIn()
    standin.start()
    redis = RedisServer.start(workdir / "redis")
    authz = AuthzRuns(
        hardening_config_text(standin.standin.issuer, grpc_port=free_port(), redis_url=redis.url),
        workdir / "authz",
    )
    try:
        process = authz.start()
        envoy = envoy_factory(process.grpc_port)
        tokens = Tokens(standin.standin)
        tokens.make_cached_pool()
        stack = Stack(standin, redis, authz, envoy, echo_upstream, tokens)
        yield stack
        _report(stack.table, workdir / "fault_table.json")
    finally:
        authz.stop()
        redis.stop()
        standin.stop()


def _report(table: list[dict[str, Any]], path: Path) -> None:
    path.write_text(json.dumps(table, indent=2), encoding="utf-8")
    lines = [
        "",
        f"{'scenario':<18} {'requests':>8}  {'statuses while faulty':<44} {'recovery ms':>11}",
    ]
    for row in table:
        counts = " ".join(f"{k}:{v}" for k, v in row["fault_statuses"].items())
        extra = " ".join(
            f"{k}={v}" for k, v in row.items() if k.endswith("_ms") and k != "recovery_ms"
        )
        lines.append(
            f"{row['scenario']:<18} {row['requests']:>8}  {counts:<44} {row['recovery_ms']!s:>11}"
            f"  {extra}"
        )
    lines.append(f"(written to {path})")
    print("\n".join(lines))


@dataclass(frozen=True)
class Scenario:
    name: str
    inject: Callable[[Stack], None]
    clear: Callable[[Stack], None]
    # What a fresh valid token (known to no cache) gets while the fault lasts.
    fresh_while_faulty: frozenset[int]
    # What a valid token every cache knows gets while the fault lasts.
    cached_while_faulty: frozenset[int] = frozenset({200})
    # Further signs of recovery, waited for under load: name → condition.
    recovered: tuple[tuple[str, Callable[[Stack], bool]], ...] = ()


def provider_fault(fault: Fault) -> tuple[Callable[[Stack], None], Callable[[Stack], None]]:
    return (
        lambda stack: stack.standin.set_fault(fault, delay_s=1.0),
        lambda stack: stack.standin.set_fault(Fault.NONE),
    )


def _restart_redis(stack: Stack) -> None:
    stack.redis.restart()


def _redis_refilled(stack: Stack) -> bool:
    """The empty restarted Redis holds entries again: L2 is written to."""
    return int(str(stack.redis.command("DBSIZE"))) > 0


def _redis_resubscribed(stack: Stack) -> bool:
    """The invalidation channel (back-channel logout) has its subscriber back."""
    reply = stack.redis.command("PUBSUB", "NUMSUB", "extauthz:invalidate")
    assert isinstance(reply, list)
    return int(reply[1]) > 0


def _stop_authz(stack: Stack) -> None:
    stack.authz.scrape()
    stack.authz.stop()


def _start_authz(stack: Stack) -> None:
    stack.authz.start()


UNAVAILABLE = frozenset({503})
SCENARIOS = [
    Scenario(
        "provider-down",
        lambda stack: stack.standin.go_down(),
        lambda stack: stack.standin.come_back(),
        UNAVAILABLE,
    ),
    Scenario("provider-slow", *provider_fault(Fault.SLOW), UNAVAILABLE),
    Scenario("provider-500", *provider_fault(Fault.SERVER_ERROR), UNAVAILABLE),
    Scenario("malformed-json", *provider_fault(Fault.MALFORMED_JSON), UNAVAILABLE),
    Scenario("html-answer", *provider_fault(Fault.HTML), UNAVAILABLE),
    Scenario("rejects-our-client", *provider_fault(Fault.REJECT_CLIENT_NEW), UNAVAILABLE),
    # Redis failures degrade, never fail: checks go on with L1 and the provider.
    Scenario(
        "redis-killed",
        lambda stack: stack.redis.kill(),
        _restart_redis,
        frozenset({200}),
        recovered=(("l2_writes_ms", _redis_refilled), ("resubscribed_ms", _redis_resubscribed)),
    ),
    # While our server restarts Envoy fails closed: 503, never an allow, never a reset.
    Scenario(
        "server-restart",
        _stop_authz,
        _start_authz,
        frozenset({200, 503}),
        frozenset({200, 503}),
    ),
]


def _pause(seconds: float) -> None:
    threading.Event().wait(seconds)


@dataclass
class Run:
    results: list[Result]
    injected: float
    cleared: float
    recovered_ms: dict[str, float | None]


def run_scenario(stack: Stack, scenario: Scenario) -> Run:
    runner = LoadRunner(stack.envoy, stack.tokens, scenario.name, max_requests=MAX_REQUESTS)
    runner.start()
    try:
        _pause(PRE_S)
        injected = time.monotonic()
        scenario.inject(stack)
        _pause(max(0.0, FAULT_S - (time.monotonic() - injected)))
        scenario.clear(stack)
        cleared = time.monotonic()
        wait_until(
            lambda: first_valid_200_after(runner.snapshot(), cleared) is not None,
            RECOVERY_MAX_S,
        )
        recovered_ms: dict[str, float | None] = {}
        for name, condition in scenario.recovered:
            met = wait_until(lambda condition=condition: condition(stack), RECOVERY_MAX_S)  # type: ignore[misc]
            recovered_ms[name] = round((time.monotonic() - cleared) * 1000, 1) if met else None
        _pause(AFTER_MIN_S)
    finally:
        results = runner.stop()
    return Run(results, injected, cleared, recovered_ms)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_fault_under_load_fails_closed_and_recovers(stack: Stack, scenario: Scenario) -> None:
    run = run_scenario(stack, scenario)
    results, injected, cleared = run.results, run.injected, run.cleared
    faulty = [r for r in results if r.sent >= injected + SETTLE_S and r.done <= cleared]
    recovery_ms = first_valid_200_after(results, cleared)
    row: dict[str, Any] = {
        "scenario": scenario.name,
        "requests": len(results),
        "fault_statuses": status_counts(faulty),
        "all_statuses": status_counts(results),
        "recovery_ms": recovery_ms,
        "fault_s": round(cleared - injected, 2),
        **run.recovered_ms,
    }
    stack.table.append(row)

    assert faulty, "no request completed while the fault lasted"
    assert_statuses(results)
    assert None not in run.recovered_ms.values(), f"not recovered: {run.recovered_ms}"
    fresh = {r.status for r in faulty if r.kind == FRESH}
    cached = {r.status for r in faulty if r.kind == CACHED}
    assert fresh <= scenario.fresh_while_faulty, f"fresh valid tokens got {fresh}"
    assert cached <= scenario.cached_while_faulty, f"cached valid tokens got {cached}"
    assert recovery_ms is not None, (
        f"no valid token allowed within {RECOVERY_MAX_S}s of the end; after it: "
        f"{status_counts(r for r in results if r.sent >= cleared)}\n"
        f"envoy:\n{stack.envoy.log_tail(10)}\nserver:\n"
        + "\n".join(stack.authz.current.log_lines()[-10:])  # type: ignore[union-attr]
    )
    after = [r for r in results if r.sent >= cleared + recovery_ms / 1000]
    assert {r.status for r in after if r.kind == FRESH} == {200}, "recovery did not last"
    assert assert_only_valid_identities_upstream(stack.upstream, stack.tokens, scenario.name) > 0
    if scenario.name == "rejects-our-client":
        assert any(
            '"level": "ERROR"' in line and "provider.client_secret" in line
            for line in stack.authz.current.log_lines()  # type: ignore[union-attr]
        )


def test_no_token_or_client_secret_in_logs_or_metrics(stack: Stack) -> None:
    """Runs after the scenarios (file order): every server log line of every run, every
    /metrics scrape and Envoy's access log, searched for any token used and the secret."""
    stack.authz.scrape()
    texts = stack.authz.texts()
    texts["envoy"] = stack.envoy.log_path.read_text(encoding="utf-8", errors="replace")

    assert len(stack.tokens.all_tokens) > 100
    assert find_secrets(texts, client_secret_forms("ext-authz", CLIENT_SECRET)) == []


def test_deployment_envoy_config_fails_closed() -> None:
    config = load_deployment_config(ENVOY_YAML)
    filters = [
        http_filter
        for listener in config["static_resources"]["listeners"]
        for chain in listener["filter_chains"]
        for network_filter in chain["filters"]
        for http_filter in network_filter["typed_config"].get("http_filters", [])
    ]
    (ext_authz,) = [f for f in filters if f["name"] == EXT_AUTHZ_FILTER]

    assert ext_authz["typed_config"]["failure_mode_allow"] is False
    assert ext_authz["typed_config"]["status_on_error"] == {"code": "ServiceUnavailable"}


# Path tricks without a token through the deployed Envoy: (status, what the upstream receives).
ENVOY_PATHS = {
    # Envoy's normalize_path reads `..;` as `..` (as Tomcat does): judged and served as /admin.
    "/public/..;/admin": (401, None),
    "/public/%2e%2e/admin": (401, None),
    "/public/../admin": (401, None),
    "//admin": (401, None),
    "/admin;x": (401, None),
    "/public%2F..%2Fadmin": (400, None),  # escaped slashes: Envoy rejects the request
    "/admin/../public/x": (200, "/public/x"),
    "/public/./x?next=/../admin": (200, "/public/x?next=/../admin"),
}


@pytest.mark.parametrize(("path", "expected"), ENVOY_PATHS.items(), ids=list(ENVOY_PATHS))
def test_path_tricks_through_envoy(
    stack: Stack, path: str, expected: tuple[int, str | None]
) -> None:
    before = len(stack.upstream.requests)
    connection = http.client.HTTPConnection("127.0.0.1", stack.envoy.listen_port, timeout=5)
    try:
        connection.request("GET", path, headers={"Host": "app.example"})
        status = connection.getresponse().status
    finally:
        connection.close()
    reached = [
        r.path for r in stack.upstream.requests[before:] if "public" in r.path or "admin" in r.path
    ]

    assert status == expected[0]
    assert reached == ([] if expected[1] is None else [expected[1]])


def test_path_parameter_on_role_route_through_envoy(stack: Stack) -> None:
    token = stack.tokens.valid_token("fresh")
    connection = http.client.HTTPConnection("127.0.0.1", stack.envoy.listen_port, timeout=5)
    try:
        connection.request(
            "GET", "/admin;x", headers={"Host": "app.example", "Authorization": f"Bearer {token}"}
        )
        status = connection.getresponse().status
    finally:
        connection.close()

    assert status != 200
