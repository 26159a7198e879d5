"""What the cold path (every Check introspects) adds on top of the provider's own answer time.

The provider stand-in runs in its own process and answers every token as active. In one
run, interleaved round by round, this measures sequentially:
  - the provider alone: an HTTP client in this process POSTing RFC 7662 introspections to
    the stand-in over a kept-alive connection, as our server does;
  - a cold Check: a gRPC Check to our server (its own process, cache TTL 0) with a token it
    has never seen, so it introspects at the stand-in before answering;
  - the same with Redis as L2 (cache TTL 60 s): the check also misses in Redis first, and
    its answer is written to both levels.

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
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.check_bodies import introspection_document
from bench.results import latency_summary
from bench.stack import sequential_checks, spawn_with_port_file
from extauthz_server._proto.envoy.service.auth.v3 import external_auth_pb2
from tests.support.authz_process import AuthzProcess
from tests.support.check_requests import check_request
from tests.support.configs import DEMO_CLIENT_SECRET, seed_config_text
from tests.support.keycloak_standin import KeycloakStandIn
from tests.support.redis_server import RedisServer

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
    headers = {f"x-header-{i}": "v" * 20 for i in range(10)}

    def new_token_request(_index: int) -> external_auth_pb2.CheckRequest:
        return check_request("/api/forms/1", token=_token(), headers=headers)

    return sequential_checks(port, new_token_request, calls, warmup=100, timeout_s=2.0)


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
    cold: dict[str, list[float]] = {"asyncio": [], "uvloop": [], "asyncio, with Redis": []}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        port_file = workdir / "standin.port"
        argv = ["-m", "bench.cold_path", "--serve-standin", str(port_file)]
        standin, port = spawn_with_port_file(argv, port_file, "the stand-in")
        redis = RedisServer.start(workdir / "redis")
        issuer = f"http://127.0.0.1:{port}/realms/demo"
        servers: dict[str, AuthzProcess] = {}
        for index, row in enumerate(cold):
            with_redis = row.endswith("with Redis")
            config = seed_config_text(
                issuer,
                ttl_seconds=60 if with_redis else 0,
                timeout_ms=1000,
                logging={"audit": False},
                server={"event_loop": row.split(",")[0]},
                cache={"redis_url": redis.url} if with_redis else None,
            )
            (workdir / f"server{index}").mkdir()
            servers[row] = AuthzProcess.start(config, workdir / f"server{index}")
        endpoint = f"{issuer}/protocol/openid-connect/token/introspect"
        try:
            for _ in range(args.rounds):
                provider += asyncio.run(_provider_alone(endpoint, args.calls))
                for row, server in servers.items():
                    cold[row] += _cold_checks(server.grpc_port, args.calls)
        finally:
            for server in servers.values():
                server.stop()
            redis.stop()
            standin.terminate()
            standin.wait(10)
    print(f"sequential calls, {args.rounds} x {args.calls} each, every token new")
    print(latency_summary("provider alone (introspection)", provider))
    for row, samples in cold.items():
        print(latency_summary(f"extauthz-server Check, cold, {row}", samples))
    for row, samples in cold.items():
        added = statistics.median(samples) - statistics.median(provider)
        print(f"the cold path adds {added:.0f} µs on {row} (median difference)")


if __name__ == "__main__":
    main()
