"""What the cold path (every Check introspects) adds on top of the provider's own answer time.

The provider stand-in runs in its own process and answers every token as active. In one
run, interleaved round by round, this measures sequentially:
  - the provider alone: an HTTP client in this process POSTing RFC 7662 introspections to
    the stand-in over a kept-alive connection, as our server does;
  - a cold Check: a gRPC Check to our server (its own process, cache TTL 0) with a token it
    has never seen, so it introspects at the stand-in before answering.

    .venv/bin/python -m bench.cold_path [--calls 2000] [--rounds 3]

The median difference is the cold path's cost: gRPC transport, our decision path and our
HTTP client together.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import grpc

from bench.check_bodies import introspection_document
from extauthz_server._proto.envoy.service.auth.v3 import external_auth_pb2
from tests.support.authz_process import AuthzProcess
from tests.support.check_requests import CHECK_METHOD, check_request
from tests.support.configs import DEMO_CLIENT_SECRET, seed_config_text
from tests.support.keycloak_standin import KeycloakStandIn

_BASIC = "Basic " + base64.b64encode(f"ext-authz:{DEMO_CLIENT_SECRET}".encode()).decode()


class _EveryTokenActive(dict[str, dict[str, object]]):
    """The stand-in's token table, answering every token as an active manager."""

    def get(self, key: str, default: object = None) -> dict[str, object]:
        return introspection_document()


def serve_standin(port_file: Path) -> None:
    """Child process: the stand-in until killed."""
    loop = asyncio.new_event_loop()
    standin = KeycloakStandIn(documents=_EveryTokenActive())
    loop.run_until_complete(standin.start())
    port_file.write_text(str(standin.port))
    loop.run_forever()


def _token() -> str:
    return f"eyJhbGciOiJSUzI1NiJ9.{secrets.token_urlsafe(600)}.sig"


async def _provider_alone(endpoint: str, calls: int) -> list[float]:
    samples = []
    headers = {"Authorization": _BASIC, "Accept": "application/json"}
    async with aiohttp.ClientSession() as session:
        for index in range(calls + 100):
            form = {"token": _token(), "token_type_hint": "access_token"}
            started = time.perf_counter_ns()
            async with session.post(endpoint, data=form, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise SystemExit(f"the stand-in answered {response.status}")
            if index >= 100:
                samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


def _cold_checks(port: int, calls: int) -> list[float]:
    samples = []
    headers = {f"x-header-{i}": "v" * 20 for i in range(10)}
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        check = channel.unary_unary(
            CHECK_METHOD,
            request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
            response_deserializer=external_auth_pb2.CheckResponse.FromString,
        )
        for index in range(calls + 100):
            request = check_request("/api/forms/1", token=_token(), headers=headers)
            started = time.perf_counter_ns()
            reply = check(request, timeout=2)
            if index >= 100:
                samples.append((time.perf_counter_ns() - started) / 1000)
            if not reply.HasField("ok_response"):
                raise SystemExit(f"the cold Check was not allowed: {reply}")
    return samples


def _start_standin(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port_file = workdir / "standin.port"
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.cold_path", "--serve-standin", str(port_file)]
    )
    deadline = time.monotonic() + 10
    while not port_file.exists() or not port_file.read_text():
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit("the stand-in did not start")
        time.sleep(0.05)
    return process, int(port_file.read_text())


def _summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p90, p99 = ordered[int(len(ordered) * 0.9)], ordered[int(len(ordered) * 0.99)]
    return f"{name:<34} median {statistics.median(ordered):6.0f} µs  p90 {p90:6.0f}  p99 {p99:6.0f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve-standin", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_standin is not None:
        serve_standin(args.serve_standin)
        return
    provider: list[float] = []
    cold: dict[str, list[float]] = {"asyncio": [], "uvloop": []}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        standin, port = _start_standin(workdir)
        issuer = f"http://127.0.0.1:{port}/realms/demo"
        servers: dict[str, AuthzProcess] = {}
        for event_loop in cold:
            (workdir / event_loop).mkdir()
            config = seed_config_text(
                issuer,
                ttl_seconds=0,
                timeout_ms=1000,
                logging={"audit": False},
                server={"event_loop": event_loop},
            )
            servers[event_loop] = AuthzProcess.start(config, workdir / event_loop)
        endpoint = f"{issuer}/protocol/openid-connect/token/introspect"
        try:
            for _ in range(args.rounds):
                provider += asyncio.run(_provider_alone(endpoint, args.calls))
                for event_loop, server in servers.items():
                    cold[event_loop] += _cold_checks(server.grpc_port, args.calls)
        finally:
            for server in servers.values():
                server.stop()
            standin.terminate()
            standin.wait(10)
    print(f"sequential calls, {args.rounds} x {args.calls} each, every token new")
    print(_summary("provider alone (introspection)", provider))
    for event_loop, samples in cold.items():
        print(_summary(f"extauthz-server Check, cold, {event_loop}", samples))
    for event_loop, samples in cold.items():
        added = statistics.median(samples) - statistics.median(provider)
        print(f"the cold path adds {added:.0f} µs on {event_loop} (median difference)")


if __name__ == "__main__":
    main()
