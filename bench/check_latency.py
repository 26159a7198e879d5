"""Latency of one Check on a cache hit (L1, and L2 in Redis), as Envoy sees it: our server in
its own process, one gRPC client calling sequentially over loopback, the provider a local
stand-in; and the same for a no-op Check server on the same stack (the limit), in one run.

    .venv/bin/python -m bench.check_latency [--calls 5000] [--rounds 3]

Prints medians, p90 and p99 in microseconds. The full harness (h2load, Envoy, limits) is
issue #7; this is the single-figure measurement quoted in the README.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench.results import latency_summary
from bench.stack import NoopProcess, sequential_checks, start_standin
from tests.support.authz_process import AuthzProcess
from tests.support.check_requests import check_request
from tests.support.configs import seed_config_text
from tests.support.redis_server import RedisServer

TOKENS = tuple(f"eyJhbGciOiJSUzI1NiJ9.{letter * 800}.sig" for letter in "ab")


def _measure(port: int, calls: int, tokens: tuple[str, ...] = TOKENS[:1]) -> list[float]:
    """Latencies in µs of `calls` sequential Checks, after a warm-up; all must be allowed.
    Several tokens are used in turn."""
    headers = {f"x-header-{i}": "v" * 20 for i in range(10)}
    requests = [check_request("/api/forms/1", token=t, headers=headers) for t in tokens]
    return sequential_checks(port, lambda i: requests[i % len(requests)], calls, warmup=200)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    standin = start_standin(list(TOKENS))
    l1: list[float] = []
    l2: list[float] = []
    limit: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "l1").mkdir()
        (workdir / "l2").mkdir()
        redis = RedisServer.start(workdir / "redis")
        quiet = {"audit": False}
        l1_server = AuthzProcess.start(
            seed_config_text(standin.issuer, ttl_seconds=3600, logging=quiet), workdir / "l1"
        )
        # An L1 of one entry and two tokens in turn: every Check misses L1 and hits Redis.
        l2_config = {"redis_url": redis.url, "max_entries": 1}
        l2_server = AuthzProcess.start(
            seed_config_text(standin.issuer, ttl_seconds=3600, cache=l2_config, logging=quiet),
            workdir / "l2",
        )
        noop = NoopProcess.start(workdir / "noop")
        try:
            # Interleave the servers so drift in the machine's load hits all of them alike.
            for _ in range(args.rounds):
                limit += _measure(noop.grpc_port, args.calls)
                l1 += _measure(l1_server.grpc_port, args.calls)
                l2 += _measure(l2_server.grpc_port, args.calls, TOKENS)
        finally:
            l1_server.stop()
            l2_server.stop()
            redis.stop()
            noop.stop()
    print(f"sequential Checks over loopback gRPC, {args.rounds} x {args.calls} calls each")
    print(latency_summary("no-op server (limit)", limit, 28))
    print(latency_summary("extauthz-server, L1 hit", l1, 28))
    print(latency_summary("extauthz-server, L2 hit", l2, 28))
    for name, samples in (("L1", l1), ("L2", l2)):
        added = statistics.median(samples) - statistics.median(limit)
        print(f"added over the limit on an {name} hit: {added:.0f} µs (median difference)")


if __name__ == "__main__":
    main()
