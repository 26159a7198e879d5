"""Latency of one Check on a cache hit, as Envoy sees it: our server in its own process,
one gRPC client calling sequentially over loopback, the provider a local stand-in.

    .venv/bin/python -m bench.check_latency [--calls 5000]

Prints the median, p90 and p99 in microseconds. The full harness (h2load, Envoy, limits)
is issue #7; this is the single-figure measurement quoted in the README.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path

import grpc

from extauthz_server._proto.envoy.service.auth.v3 import external_auth_pb2
from tests.support.authz_process import AuthzProcess
from tests.support.check_requests import CHECK_METHOD, check_request
from tests.support.configs import seed_config_text
from tests.support.keycloak_standin import KeycloakStandIn

TOKEN = "eyJhbGciOiJSUzI1NiJ9." + "a" * 800 + ".sig"


def _start_standin() -> KeycloakStandIn:
    standin = KeycloakStandIn()
    standin.documents[TOKEN] = {
        "active": True,
        "token_type": "Bearer",
        "sub": "sub-bob",
        "preferred_username": "bob",
        "email": "bob@example.com",
        "client_id": "web-app",
        "exp": int(time.time()) + 3600,
        "realm_access": {"roles": ["manager", "offline_access", "default-roles-demo"]},
    }
    started = threading.Event()

    def run() -> None:
        loop = asyncio.new_event_loop()
        loop.run_until_complete(standin.start())
        started.set()
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    started.wait(10)
    return standin


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    standin = _start_standin()
    with tempfile.TemporaryDirectory() as workdir:
        text = seed_config_text(standin.issuer, ttl_seconds=3600).replace(
            "server: {", "logging: {audit: false}\nserver: {"
        )
        server = AuthzProcess.start(text, Path(workdir))
        try:
            with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
                check = channel.unary_unary(
                    CHECK_METHOD,
                    request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
                    response_deserializer=external_auth_pb2.CheckResponse.FromString,
                )
                headers = {f"x-header-{i}": "v" * 20 for i in range(10)}
                request = check_request("/api/forms/1", token=TOKEN, headers=headers)
                for _ in range(200):
                    check(request, timeout=1)
                samples = []
                for _ in range(args.calls):
                    started = time.perf_counter_ns()
                    reply = check(request, timeout=1)
                    samples.append((time.perf_counter_ns() - started) / 1000)
                if reply.status.code != 0:
                    raise SystemExit(f"the Check was not allowed: {reply}")
        finally:
            server.stop()
    samples.sort()
    p90, p99 = samples[int(len(samples) * 0.9)], samples[int(len(samples) * 0.99)]
    print(
        f"Check, L1 cache hit, sequential over loopback gRPC, {args.calls} calls: "
        f"median {statistics.median(samples):.0f} µs, p90 {p90:.0f} µs, p99 {p99:.0f} µs"
    )


if __name__ == "__main__":
    main()
