"""Soak: steady load through Envoy and our server process with a rotating token population.

Nothing may grow without bound: after warm-up the server's RSS stays flat (peak of the
last third within 10% of the peak of the first third), its open file
descriptors and its Redis connections do not grow, and L1 stays within cache.max_entries.

CI runs it for EXTAUTHZ_SOAK_SECONDS (default 60). Ten minutes locally:

    EXTAUTHZ_SOAK_SECONDS=600 .venv/bin/pytest -s tests/hardening/test_soak.py

(`-s` prints the samples summary; it is also written as soak.json under the pytest
temporary directory.)

Warm-up: besides L1, the server keeps up to ALLOWED_MEMO_SIZE allow decisions (and as many
prepared responses) for reuse, outside cache.max_entries and cache.max_bytes: about 1.5 KiB
each, i.e. ~15 MiB plus the responses at 10,000. Before the measured run, the warm-up sends
that many distinct valid tokens straight over gRPC so the memos have filled (and been
cleared) once; otherwise a 20-second run only measures their filling.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
import pytest

from extauthz_server._proto.envoy.service.auth.v3 import external_auth_pb2
from extauthz_server.core.authorizer import ALLOWED_MEMO_SIZE
from tests.hardening.stack import (
    CLIENT_SECRET,
    FRESH,
    INACTIVE,
    KIND_WEIGHTS,
    MALFORMED,
    UNKNOWN,
    AuthzRuns,
    BackgroundStandIn,
    LoadRunner,
    Tokens,
    assert_only_valid_identities_upstream,
    assert_statuses,
    client_secret_forms,
    find_secrets,
    hardening_config_text,
    metric_value,
    status_counts,
)
from tests.support.check_requests import CHECK_METHOD, check_request
from tests.support.echo_upstream import BackgroundEchoUpstream
from tests.support.envoy_fixture import EnvoyFactory
from tests.support.net import free_port
from tests.support.redis_server import RedisServer

SOAK_SECONDS = float(os.environ.get("EXTAUTHZ_SOAK_SECONDS", "60"))
WARM_UP_FRACTION = 0.25
SAMPLE_EVERY_S = 0.5
L1_MAX_ENTRIES = 200
RSS_GROWTH_LIMIT = 0.10
FD_SLACK = 4
REDIS_CLIENT_SLACK = 2

pytestmark = [pytest.mark.envoy, pytest.mark.slow, pytest.mark.timeout(SOAK_SECONDS + 120)]


@dataclass(frozen=True)
class Sample:
    at_s: float
    rss_kib: int
    fds: int
    redis_clients: int
    l1_entries: float


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def redis_clients(redis: RedisServer) -> int:
    info = redis.command("INFO", "clients")
    assert isinstance(info, dict)
    return int(info["connected_clients"])


WARM_UP_IN_FLIGHT = 16
WARM_UP_MAX_S = 90.0


def fill_decision_memos(grpc_port: int, tokens: Tokens, count: int) -> None:
    """Checks with distinct valid tokens straight to the gRPC port until `count` were allowed
    (a few may time out on the stand-in, which shares this process's CPU)."""
    deadline = time.monotonic() + WARM_UP_MAX_S
    allowed = 0
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        rpc = channel.unary_unary(
            CHECK_METHOD,
            request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
            response_deserializer=external_auth_pb2.CheckResponse.FromString,
        )
        while allowed < count and time.monotonic() < deadline:
            calls = [
                rpc.future(
                    check_request("/api/forms/warm-up", token=tokens.valid_token(FRESH)), timeout=5
                )
                for _ in range(WARM_UP_IN_FLIGHT)
            ]
            allowed += sum(call.result().status.code == 0 for call in calls)
    assert allowed >= count, f"only {allowed} of {count} warm-up checks allowed"


@pytest.fixture
def standin() -> Iterator[BackgroundStandIn]:
    background = BackgroundStandIn()
    background.start()
    yield background
    background.stop()


def test_soak_nothing_grows(
    standin: BackgroundStandIn,
    redis_server: RedisServer,
    envoy_factory: EnvoyFactory,
    echo_upstream: BackgroundEchoUpstream,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    authz = AuthzRuns(
        hardening_config_text(
            standin.standin.issuer,
            grpc_port=free_port(),
            redis_url=redis_server.url,
            max_entries=L1_MAX_ENTRIES,
            ttl_seconds=30,
        ),
        tmp_path / "authz",
    )
    process = authz.start()
    try:
        envoy = envoy_factory(process.grpc_port)
        tokens = Tokens(standin.standin, cached_pool=50)
        tokens.make_cached_pool()
        fill_decision_memos(process.grpc_port, tokens, ALLOWED_MEMO_SIZE + 500)
        # Rotating population: a cached core, a stream of new valid tokens, and bad ones.
        weights = dict(KIND_WEIGHTS) | {FRESH: 20, UNKNOWN: 20, INACTIVE: 10, MALFORMED: 5}
        runner = LoadRunner(
            envoy, tokens, "soak", threads=4, max_requests=int(SOAK_SECONDS * 800), kinds=weights
        )
        samples: list[Sample] = []
        pid = process.process.pid
        started = time.monotonic()
        runner.start()
        try:
            tick = threading.Event()
            while (elapsed := time.monotonic() - started) < SOAK_SECONDS:
                metrics = authz.scrape()
                samples.append(
                    Sample(
                        round(elapsed, 2),
                        rss_kib(pid),
                        open_fds(pid),
                        redis_clients(redis_server),
                        metric_value(metrics, "extauthz_cache_l1_entries"),
                    )
                )
                tick.wait(SAMPLE_EVERY_S)
        finally:
            results = runner.stop()
    finally:
        authz.stop()

    steady = [s for s in samples if s.at_s >= SOAK_SECONDS * WARM_UP_FRACTION]
    third = max(1, len(steady) // 3)
    first_rss = statistics.mean(s.rss_kib for s in steady[:third])
    last_rss = statistics.mean(s.rss_kib for s in steady[-third:])
    first_peak = max(s.rss_kib for s in steady[:third])
    last_peak = max(s.rss_kib for s in steady[-third:])
    summary = {
        "seconds": SOAK_SECONDS,
        "requests": len(results),
        "statuses": status_counts(results),
        "rss_kib_first_third": round(first_rss),
        "rss_kib_last_third": round(last_rss),
        "rss_growth": round(last_rss / first_rss - 1, 4),
        "rss_peak_growth": round(last_peak / first_peak - 1, 4),
        "rss_kib_max": max(s.rss_kib for s in samples),
        "fds": [min(s.fds for s in steady), max(s.fds for s in steady)],
        "redis_clients": [
            min(s.redis_clients for s in steady),
            max(s.redis_clients for s in steady),
        ],
        "l1_entries_max": max(s.l1_entries for s in samples),
        "samples": [asdict(s) for s in samples],
    }
    report = tmp_path_factory.mktemp("hardening-soak") / "soak.json"
    report.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(
        "\nsoak:",
        json.dumps({k: v for k, v in summary.items() if k != "samples"}),
        f"\n(written to {report})",
    )

    assert len(results) > SOAK_SECONDS * 20, "the load never got going"
    assert_statuses(results)
    assert assert_only_valid_identities_upstream(echo_upstream, tokens, "soak") > 0
    # Peaks, not means: a bounded structure that fills and is cleared (the memos) makes a
    # sawtooth whose peak stays put, while a leak raises it.
    assert last_peak <= first_peak * (1 + RSS_GROWTH_LIMIT), summary["rss_peak_growth"]
    assert max(s.fds for s in steady[-third:]) <= max(s.fds for s in steady[:third]) + FD_SLACK
    assert (
        max(s.redis_clients for s in steady[-third:])
        <= max(s.redis_clients for s in steady[:third]) + REDIS_CLIENT_SLACK
    )
    assert all(s.l1_entries <= L1_MAX_ENTRIES for s in samples)
    # L1 did fill up, so eviction was exercised.
    assert max(s.l1_entries for s in samples) >= L1_MAX_ENTRIES * 0.9
    # Secrets hygiene: every log line, every scrape and Envoy's access log.
    texts = authz.texts() | {"envoy": envoy.log_path.read_text(encoding="utf-8", errors="replace")}
    assert find_secrets(texts, client_secret_forms("ext-authz", CLIENT_SECRET)) == []
