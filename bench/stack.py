"""The processes under test: the provider stand-in (a thread of this process), our server in
its own process with a given cache set-up, the no-op Check server, and what they report
(their Prometheus counters, their CPU time)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from bench.check_bodies import check_request, introspection_document
from extauthz_server._proto.envoy.service.auth.v3 import external_auth_pb2
from tests.support.authz_process import AuthzProcess
from tests.support.check_requests import CHECK_METHOD
from tests.support.configs import seed_config_text
from tests.support.keycloak_standin import KeycloakStandIn

_START_TIMEOUT_S = 10.0
_SAMPLE = re.compile(r"^(\w+)(?:\{([^}]*)\})? ([0-9.e+-]+|NaN|[+-]Inf)$")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class StackError(RuntimeError):
    pass


def start_standin(tokens: list[str]) -> KeycloakStandIn:
    """The Keycloak stand-in on its own event loop in a daemon thread, knowing every token."""
    standin = KeycloakStandIn()
    document = introspection_document()
    for token in tokens:
        standin.documents[token] = document
    started = threading.Event()

    def run() -> None:
        loop = asyncio.new_event_loop()
        loop.run_until_complete(standin.start())
        started.set()
        loop.run_forever()

    threading.Thread(target=run, name="keycloak-standin", daemon=True).start()
    if not started.wait(_START_TIMEOUT_S):
        raise StackError("the provider stand-in did not start")
    return standin


def server_config_text(
    issuer: str,
    *,
    ttl_seconds: float,
    cache: dict[str, Any] | None = None,
    event_loop: str = "asyncio",
    provider: dict[str, Any] | None = None,
    audit: bool = False,
) -> str:
    """Our server's configuration in the benchmark: one worker, its HTTP authorization
    listener on, audit lines off unless `audit` (the "audit on" row measures their cost)."""
    return seed_config_text(
        issuer,
        ttl_seconds=ttl_seconds,
        server={"workers": 1, "event_loop": event_loop, "http_authz_listen": "127.0.0.1:0"},
        cache=cache,
        provider=provider,
        logging={"audit": audit},
    )


def start_server(
    issuer: str,
    workdir: Path,
    *,
    ttl_seconds: float,
    cache: dict[str, Any] | None = None,
    event_loop: str = "asyncio",
    provider: dict[str, Any] | None = None,
    audit: bool = False,
) -> AuthzProcess:
    """Our server with the configuration of `server_config_text`."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = server_config_text(
        issuer,
        ttl_seconds=ttl_seconds,
        cache=cache,
        event_loop=event_loop,
        provider=provider,
        audit=audit,
    )
    return AuthzProcess.start(config, workdir)


def _check_stub(
    channel: grpc.Channel,
) -> grpc.UnaryUnaryMultiCallable[external_auth_pb2.CheckRequest, external_auth_pb2.CheckResponse]:
    return channel.unary_unary(
        CHECK_METHOD,
        request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
        response_deserializer=external_auth_pb2.CheckResponse.FromString,
    )


def sequential_checks(
    port: int,
    request_for: Callable[[int], external_auth_pb2.CheckRequest],
    calls: int,
    *,
    warmup: int,
    timeout_s: float = 1.0,
) -> list[float]:
    """Latencies in µs of `calls` sequential Checks (`request_for(i)` is the i-th, built
    before its timing starts) after `warmup` untimed ones; every Check must be allowed."""
    samples = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        check = _check_stub(channel)
        for index in range(warmup + calls):
            request = request_for(index)
            started = time.perf_counter_ns()
            reply = check(request, timeout=timeout_s)
            if index >= warmup:
                samples.append((time.perf_counter_ns() - started) / 1000)
            if not reply.HasField("ok_response"):
                raise StackError(f"the Check was not allowed: {reply}")
    return samples


def spawn_with_port_file(
    python_argv: list[str], port_file: Path, what: str
) -> tuple[subprocess.Popen[bytes], int]:
    """A Python child process that writes the port it listens on to `port_file`, once it
    has; raises StackError if it exits or takes too long first."""
    process = subprocess.Popen([sys.executable, *python_argv])
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not port_file.exists() or not port_file.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise StackError(f"{what} did not start")
        time.sleep(0.05)
    return process, int(port_file.read_text())


@dataclass(frozen=True, slots=True)
class GrpcTarget:
    """One gRPC row: what h2load posts to which server, and how it is read."""

    section: str
    row: str
    port: int
    bodies: list[Path]  # one h2load client per body
    pid: int  # whose CPU time is the row's srv CPU
    # Our server, whose counters say where the identity came from and what was decided.
    server: AuthzProcess | None = None
    # Server and load generator on separate CPUs (bench/peer/cpus.py).
    pinned: bool = False


@dataclass(slots=True)
class NoopProcess:
    process: subprocess.Popen[bytes]
    # The port of its one listener: gRPC Check, or (`over_http`) HTTP authorization.
    grpc_port: int

    @classmethod
    def start(
        cls,
        workdir: Path,
        event_loop: str = "asyncio",
        *,
        over_http: bool = False,
        http_stack: str = "ours",
    ) -> NoopProcess:
        workdir.mkdir(parents=True, exist_ok=True)
        port_file = workdir / "noop.port"
        module = "bench.noop_http_server" if over_http else "bench.noop_server"
        argv = ["-m", module, str(port_file), event_loop]
        if over_http:
            argv.append(http_stack)
        return cls(*spawn_with_port_file(argv, port_file, f"the no-op server ({module})"))

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout_s`."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout_s)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, all its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based, proc(5)).
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def scrape(http_port: int) -> dict[str, float]:
    """The server's counters as `name{labels}` → value (summed samples of /metrics)."""
    url = f"http://127.0.0.1:{http_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or not match.group(1).endswith("_total"):
            continue
        name, labels, value = match.groups()
        key = f"{name}{{{labels or ''}}}"
        samples[key] = samples.get(key, 0.0) + float(value)
    return samples


def served_by(before: dict[str, float], after: dict[str, float]) -> tuple[str, int, int]:
    """Where the Checks between two scrapes found their identity, and (allowed, denied)."""
    delta = {key: value - before.get(key, 0.0) for key, value in after.items()}
    allowed = denied = 0
    for key, value in delta.items():
        if key.startswith("extauthz_checks_total{"):
            if 'outcome="allowed"' in key:
                allowed += int(value)
            else:
                denied += int(value)
    lookups = "extauthz_cache_lookups_total"
    levels = {
        "L1": delta.get(f'{lookups}{{level="l1",result="hit"}}', 0.0),
        "L2": delta.get(f'{lookups}{{level="l2",result="hit"}}', 0.0),
        "provider": delta.get(f'{lookups}{{level="all",result="miss"}}', 0.0),
    }
    checks = allowed + denied
    # A Check that joined another's lookup of the same token is counted at no level; and a
    # Check still in flight at the last scrape (h2load stops without waiting for its last
    # answers) is counted at a level but not yet as a decision, so shares are of the larger.
    looked_up = sum(levels.values())
    levels["joined"] = max(0.0, checks - looked_up)
    total = max(checks, looked_up)
    shares = [
        f"{name} {100 * n / total:.0f}%"
        for name, n in levels.items()
        if total and n / total >= 0.005
    ]
    if redis_errors := delta.get("extauthz_redis_errors_total{}", 0.0):
        shares.append(f"redis errors {redis_errors:.0f}")
    return ", ".join(shares), allowed, denied


def assert_allowed(port: int, token: str, roles: str | None = None) -> None:
    """One Check with the grpc client: the answer must be an OK response, and when `roles` is
    given it must set `x-auth-roles` to it."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        check = _check_stub(channel)
        response: external_auth_pb2.CheckResponse = check(check_request(token), timeout=5)
    if not response.HasField("ok_response") or response.status.code != 0:
        raise StackError(f"Check on port {port} was not allowed: {response}")
    if roles is not None:
        upstream = {o.header.key: o.header.value for o in response.ok_response.headers}
        if upstream.get("x-auth-roles") != roles:
            raise StackError(f"Check on port {port} set roles {upstream.get('x-auth-roles')!r}")


def error_lines(log_lines: list[str]) -> list[str]:
    """The ERROR and CRITICAL lines of a server log (JSON lines)."""
    return [line for line in log_lines if '"level": "ERROR"' in line or '"CRITICAL"' in line]
