"""What a cached Keycloak Authorization Services decision adds to a Check: the in-process
Authorizer on an L1-hit allow of a plain route, against the same on a route with a
`permission` whose answer is cached (one UMA call at a local stand-in, then none).

    .venv/bin/python -m bench.decision_overhead [--calls 20000] [--rounds 7]

Rounds alternate the two routes; the figures are medians of the rounds, in µs per Check.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import aiohttp
from aiohttp import web

from extauthz_server.config.model import authorizer_settings, parse_config
from extauthz_server.core.authorizer import Authorizer
from extauthz_server.core.identity import Identity, Inactive
from extauthz_server.core.request import AuthRequest
from extauthz_server.core.secret import Secret
from extauthz_server.identity.discovery import EndpointSource
from extauthz_server.identity.introspection import ClientAuthMethod, ClientCredentials
from extauthz_server.metadata.authorization_services import (
    AuthorizationServicesSettings,
    DecisionCachePolicy,
    UmaDecisions,
)
from tests.support.net import serve_on_loopback

CONFIG = """\
provider:
  issuer: "http://127.0.0.1:{port}/realms/facts"
  client_id: ext-authz
  client_secret: s3cret
  authorization_services: {{audience: forms-api}}
roles: {{mapping: {{manager: [creator]}}}}
routes:
  - {{name: plain, path_template: "/plain/{{region}}/forms/{{rest=**}}", any_of: [creator]}}
  - name: asked
    path_template: "/api/regions/{{region}}/forms/{{rest=**}}"
    any_of: [creator]
    permission: {{resource: "region-{{region}}", scope: read}}
"""
TOKEN = "eyJhbGciOiJSUzI1NiJ9." + "a" * 800 + ".sig"
CALLER = Identity("u-1", "bob", None, "web-app", frozenset(), frozenset({"manager"}), None)


class OneCaller:
    async def resolve(
        self, token: str, timeout_s: float, provider: str | None = None
    ) -> Identity | Inactive:
        return CALLER


async def grant(request: web.Request) -> web.Response:
    return web.json_response({"result": True})


async def discovery(request: web.Request) -> web.Response:
    issuer = f"http://{request.host}/realms/facts"
    return web.json_response(
        {"issuer": issuer, "token_endpoint": f"{issuer}/protocol/openid-connect/token"}
    )


async def measure(calls: int, rounds: int) -> None:
    app = web.Application()
    app.router.add_get("/realms/facts/.well-known/openid-configuration", discovery)
    app.router.add_post("/realms/facts/protocol/openid-connect/token", grant)
    runner, port = await serve_on_loopback(app)
    issuer = f"http://127.0.0.1:{port}/realms/facts"
    try:
        async with aiohttp.ClientSession() as session:
            decisions = UmaDecisions(
                session,
                EndpointSource(session, issuer, None, None),
                ClientCredentials(
                    "ext-authz", Secret("s3cret"), ClientAuthMethod.CLIENT_SECRET_BASIC
                ),
                AuthorizationServicesSettings("forms-api", timeout_s=2.0),
                DecisionCachePolicy(ttl_s=3600, denied_ttl_s=10, max_entries=1000),
            )
            settings = authorizer_settings(parse_config(CONFIG.format(port=port), {}))
            checks = Authorizer(settings, OneCaller(), permissions=decisions)
            bearer = {"authorization": f"Bearer {TOKEN}"}
            requests = {
                "plain route, L1 hit": AuthRequest("GET", "h", "/plain/europe/forms/1", bearer),
                "permission route, decision cached": AuthRequest(
                    "GET", "h", "/api/regions/europe/forms/1", bearer
                ),
            }
            for request in requests.values():
                if not (await checks.check(request, 2.0)).allowed:
                    raise SystemExit(f"not allowed: {request.path}")
            medians: dict[str, list[float]] = {name: [] for name in requests}
            for _ in range(rounds):
                for name, request in requests.items():
                    started = time.perf_counter_ns()
                    for _ in range(calls):
                        await checks.check(request, 2.0)
                    medians[name].append((time.perf_counter_ns() - started) / calls / 1000)
    finally:
        await runner.cleanup()
    figures = {name: statistics.median(values) for name, values in medians.items()}
    for name, value in figures.items():
        print(f"{name:<36} {value:8.2f} µs")
    plain, asked = figures.values()
    print(f"{'added by the cached decision':<36} {asked - plain:8.2f} µs")
    print(f"UMA calls: {decisions.calls} (the rest answered from the cache)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(measure(args.calls, args.rounds))


if __name__ == "__main__":
    main()
