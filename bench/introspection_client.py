"""What one token introspection costs our process, through aiohttp (as introspection went
before) and through KeptAliveHttp (as it goes now).

The same sequential RFC 7662 introspections, every token new, go through IntrospectionClient
over each transport to the Keycloak stand-in in its own process (it answers every token as
active), rounds interleaved, each client first every other round. The aiohttp session is
set up as the server sets up its own (a pool of 100, 30 s keep-alive, no total timeout).
For each transport this reports the median wall time of a call, and the CPU time this
process's thread spent per call (`time.thread_time`): the client's own cost, the
stand-in's is not in it. Both share IntrospectionClient's own work (the form, the JSON),
so the difference is the transport's.

    .venv/bin/python -m bench.introspection_client [--calls 2000] [--rounds 3]
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.results import latency_summary
from bench.standin_process import sequential_args, standin_process
from extauthz_server.core.secret import Secret
from extauthz_server.identity.discovery import EndpointSource
from extauthz_server.identity.introspection import (
    ClientAuthMethod,
    ClientCredentials,
    HttpTransport,
    IntrospectionClient,
    SessionTransport,
)
from extauthz_server.identity.kept_alive_http import KeptAliveHttp
from tests.support.configs import DEMO_CLIENT_SECRET

AIOHTTP = "aiohttp"
KEPT_ALIVE = "KeptAliveHttp"
WARMUP_CALLS = 100
CREDENTIALS = ClientCredentials(
    "ext-authz", Secret(DEMO_CLIENT_SECRET), ClientAuthMethod.CLIENT_SECRET_BASIC
)


@dataclass
class Measured:
    wall_us: list[float] = field(default_factory=list)  # every timed call
    cpu_us_per_call: list[float] = field(default_factory=list)  # one per round


def _tokens(count: int) -> list[str]:
    """JWT-shaped tokens of Keycloak's size, made before the clock starts."""
    return [f"eyJhbGciOiJSUzI1NiJ9.{secrets.token_urlsafe(600)}.sig" for _ in range(count)]


async def _round(transport: str, issuer: str, calls: int, into: Measured) -> None:
    endpoint = f"{issuer}/protocol/openid-connect/token/introspect"
    tokens = _tokens(WARMUP_CALLS + calls)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=30),
        timeout=aiohttp.ClientTimeout(total=None),
    ) as session:
        kept_alive = KeptAliveHttp()
        http: HttpTransport = kept_alive if transport == KEPT_ALIVE else SessionTransport(session)
        client = IntrospectionClient(
            http, EndpointSource(session, issuer, endpoint), CREDENTIALS, timeout_s=2.0
        )
        try:
            for token in tokens[:WARMUP_CALLS]:
                await _introspect(client, token)
            cpu_started = time.thread_time()
            for token in tokens[WARMUP_CALLS:]:
                started = time.perf_counter_ns()
                await _introspect(client, token)
                into.wall_us.append((time.perf_counter_ns() - started) / 1000)
            into.cpu_us_per_call.append((time.thread_time() - cpu_started) / calls * 1e6)
        finally:
            await kept_alive.close()


async def _introspect(client: IntrospectionClient, token: str) -> None:
    document = await client.introspect(token)
    if document.get("active") is not True:
        raise SystemExit("the stand-in did not answer the token as active")


def main() -> None:
    args = sequential_args()
    measured = {AIOHTTP: Measured(), KEPT_ALIVE: Measured()}
    with (
        tempfile.TemporaryDirectory() as tmp,
        standin_process("bench.introspection_client", Path(tmp)) as issuer,
    ):
        for round_index in range(args.rounds):
            order = list(measured.items())
            # Each goes first every other round, so a drift of the machine favours neither.
            for transport, into in order if round_index % 2 == 0 else order[::-1]:
                asyncio.run(_round(transport, issuer, args.calls, into))
    print(f"sequential introspections, {args.rounds} x {args.calls} per client, every token new")
    wall = {t: statistics.median(m.wall_us) for t, m in measured.items()}
    cpu = {t: statistics.median(m.cpu_us_per_call) for t, m in measured.items()}
    for transport, figures in measured.items():
        summary = latency_summary(transport, figures.wall_us, width=14)
        print(f"{summary}  client CPU {cpu[transport]:4.0f} µs/call")
    print(
        f"aiohttp / KeptAliveHttp: wall {wall[AIOHTTP] / wall[KEPT_ALIVE]:.2f}x, "
        f"client CPU {cpu[AIOHTTP] / cpu[KEPT_ALIVE]:.2f}x "
        f"({cpu[AIOHTTP] - cpu[KEPT_ALIVE]:.0f} µs less per introspection)"
    )


if __name__ == "__main__":
    main()
