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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from bench.stack import start_standin
from extauthz_server._proto.envoy.service.auth.v3 import external_auth_pb2
from tests.support.authz_process import AuthzProcess
from tests.support.check_requests import CHECK_METHOD, check_request
from tests.support.configs import seed_config_text
from tests.support.redis_server import RedisServer

TOKENS = tuple(f"eyJhbGciOiJSUzI1NiJ9.{letter * 800}.sig" for letter in "ab")


def _measure(port: int, calls: int, tokens: tuple[str, ...] = TOKENS[:1]) -> list[float]:
    """Latencies in µs of `calls` sequential Checks, after a warm-up; all must be allowed.
    Several tokens are used in turn."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        check = channel.unary_unary(
            CHECK_METHOD,
            request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
            response_deserializer=external_auth_pb2.CheckResponse.FromString,
        )
        headers = {f"x-header-{i}": "v" * 20 for i in range(10)}
        requests = [check_request("/api/forms/1", token=t, headers=headers) for t in tokens]
        for index in range(200):
            check(requests[index % len(requests)], timeout=1)
        samples = []
        for index in range(calls):
            request = requests[index % len(requests)]
            started = time.perf_counter_ns()
            reply = check(request, timeout=1)
            samples.append((time.perf_counter_ns() - started) / 1000)
            if not reply.HasField("ok_response"):
                raise SystemExit(f"the Check was not allowed: {reply}")
    return sorted(samples)


def _start_noop(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port_file = workdir / "noop.port"
    process = subprocess.Popen([sys.executable, "-m", "bench.noop_server", str(port_file)])
    deadline = time.monotonic() + 10
    while not port_file.exists() or not port_file.read_text():
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit("the no-op server did not start")
        time.sleep(0.05)
    return process, int(port_file.read_text())


def _summary(name: str, samples: list[float]) -> str:
    p90, p99 = samples[int(len(samples) * 0.9)], samples[int(len(samples) * 0.99)]
    return f"{name:<28} median {statistics.median(samples):6.0f} µs  p90 {p90:6.0f}  p99 {p99:6.0f}"


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
        noop, noop_port = _start_noop(workdir)
        try:
            # Interleave the servers so drift in the machine's load hits all of them alike.
            for _ in range(args.rounds):
                limit += _measure(noop_port, args.calls)
                l1 += _measure(l1_server.grpc_port, args.calls)
                l2 += _measure(l2_server.grpc_port, args.calls, TOKENS)
        finally:
            l1_server.stop()
            l2_server.stop()
            redis.stop()
            noop.terminate()
            noop.wait(10)
    for samples in (l1, l2, limit):
        samples.sort()
    print(f"sequential Checks over loopback gRPC, {args.rounds} x {args.calls} calls each")
    print(_summary("no-op server (limit)", limit))
    print(_summary("extauthz-server, L1 hit", l1))
    print(_summary("extauthz-server, L2 hit", l2))
    for name, samples in (("L1", l1), ("L2", l2)):
        added = statistics.median(samples) - statistics.median(limit)
        print(f"added over the limit on an {name} hit: {added:.0f} µs (median difference)")


if __name__ == "__main__":
    main()
