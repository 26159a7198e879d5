"""A cold Keycloak Authorization Services decision beside Keycloak's own answer time, on the
real Keycloak the tests use (started here, realm `facts`): sequential UMA decision calls
straight at Keycloak against sequential in-process Checks of a `permission` route whose
answer is never kept (every Check asks), on one kept-alive connection each.

    .venv/bin/python -m bench.cold_decision [--calls 200] [--rounds 5] [--base-url URL]

Rounds alternate the two; the figures are medians of the rounds' medians, in ms. The
identity step is a fixed caller here, so what differs is our decision path. `--base-url`
measures a Keycloak already running with the facts realm instead of starting one.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import time
import urllib.parse
import urllib.request

import aiohttp

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
from extauthz_server.metadata.uma_grant import UMA_GRANT
from tests.support.keycloak import (
    AUTHZ_EXT_AUTHZ_SECRET,
    AUTHZ_PASSWORD,
    AUTHZ_REALM,
    EXT_AUTHZ_CLIENT_ID,
    WEB_APP_CLIENT_ID,
    Keycloak,
    KeycloakSettings,
)

CONFIG = """\
provider:
  issuer: "{issuer}"
  client_id: ext-authz
  client_secret: s3cret
  authorization_services: {{audience: forms-api}}
routes:
  - name: asked
    path_template: "/api/regions/{{region}}/forms/{{rest=**}}"
    permission: {{resource: "region-{{region}}", scope: read}}
"""
CALLER = Identity("u-bob", "bob", None, "web-app", frozenset(), frozenset(), None)


class OneCaller:
    async def resolve(
        self, token: str, timeout_s: float, provider: str | None = None
    ) -> Identity | Inactive:
        return CALLER


def bob_token(base_url: str) -> str:
    form = urllib.parse.urlencode(
        {
            "grant_type": "password",
            "client_id": WEB_APP_CLIENT_ID,
            "username": "bob",
            "password": AUTHZ_PASSWORD,
        }
    ).encode()
    url = f"{base_url}/realms/{AUTHZ_REALM}/protocol/openid-connect/token"
    with urllib.request.urlopen(url, form, timeout=30) as response:  # noqa: S310 - loopback
        return str(json.load(response)["access_token"])


async def measure(base_url: str, calls: int, rounds: int) -> None:
    issuer = f"{base_url}/realms/{AUTHZ_REALM}"
    token_endpoint = f"{issuer}/protocol/openid-connect/token"
    token = bob_token(base_url)
    basic = base64.b64encode(f"{EXT_AUTHZ_CLIENT_ID}:{AUTHZ_EXT_AUTHZ_SECRET}".encode()).decode()
    form = {
        "grant_type": UMA_GRANT,
        "audience": "forms-api",
        "permission": "region-europe#read",
        "response_mode": "decision",
        "subject_token": token,
    }
    connector = aiohttp.TCPConnector(limit=1)
    async with (
        aiohttp.ClientSession(connector=connector) as direct,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as ours,
    ):

        async def keycloak_alone() -> None:
            headers = {"Authorization": f"Basic {basic}"}
            async with direct.post(token_endpoint, data=form, headers=headers) as response:
                body = await response.read()
                if response.status != 200:
                    raise SystemExit(f"Keycloak answered {response.status}: {body[:200]!r}")

        decisions = UmaDecisions(
            ours,
            EndpointSource(ours, issuer, None, None),
            ClientCredentials(
                EXT_AUTHZ_CLIENT_ID,
                Secret(AUTHZ_EXT_AUTHZ_SECRET),
                ClientAuthMethod.CLIENT_SECRET_BASIC,
            ),
            AuthorizationServicesSettings("forms-api", timeout_s=5.0),
            # Nothing kept: every Check asks Keycloak.
            DecisionCachePolicy(ttl_s=0, denied_ttl_s=0, max_entries=1),
        )
        settings = authorizer_settings(parse_config(CONFIG.format(issuer=issuer), {}))
        checks = Authorizer(settings, OneCaller(), permissions=decisions)
        request = AuthRequest(
            "GET", "h", "/api/regions/europe/forms/1", {"authorization": f"Bearer {token}"}
        )

        async def cold_check() -> None:
            decision = await checks.check(request, 5.0)
            if not decision.allowed:
                raise SystemExit(f"not allowed: {decision.reason}")

        runs = {"Keycloak alone (UMA decision)": keycloak_alone, "cold Check": cold_check}
        for run in runs.values():  # warm-up: JIT, connections, discovery
            for _ in range(30):
                await run()
        medians: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(rounds):
            for name, run in runs.items():
                times = []
                for _ in range(calls):
                    started = time.perf_counter_ns()
                    await run()
                    times.append((time.perf_counter_ns() - started) / 1e6)
                medians[name].append(statistics.median(times))
    figures = {name: statistics.median(values) for name, values in medians.items()}
    for name, value in figures.items():
        print(f"{name:<32} {value:7.3f} ms")
    alone, cold = figures.values()
    print(f"{'added by our decision path':<32} {cold - alone:7.3f} ms ({cold / alone:.2f}x)")
    print(f"UMA calls by the Checks: {decisions.calls}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--base-url", help="a running Keycloak with the facts realm")
    args = parser.parse_args()
    if args.base_url:
        asyncio.run(measure(args.base_url.rstrip("/"), args.calls, args.rounds))
        return
    keycloak = Keycloak.start(KeycloakSettings.from_environ(os.environ), print)
    try:
        asyncio.run(measure(keycloak.base_url, args.calls, args.rounds))
    finally:
        keycloak.stop()


if __name__ == "__main__":
    main()
