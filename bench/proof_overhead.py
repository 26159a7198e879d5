"""What a DPoP proof adds to a Check: the in-process Authorizer on an L1-hit allow of a Bearer
token, against the same caller presenting a DPoP-bound token with a fresh proof each time
(signature, claims, thumbprint and the in-process replay check), per proof algorithm.

    .venv/bin/python -m bench.proof_overhead [--calls 2000] [--rounds 7]

Proofs are signed before each round (signing is the client's cost, not ours); rounds
alternate the rows; the figures are medians of the rounds, in µs per Check.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from extauthz_server.config.model import authorizer_settings, parse_config
from extauthz_server.core.authorizer import Authorizer
from extauthz_server.core.identity import Confirmation, Identity, Inactive
from extauthz_server.core.request import AuthRequest
from tests.support.dpop import DpopKey

CONFIG = """\
provider:
  issuer: "https://sso.example.com/realms/demo"
  client_id: ext-authz
  client_secret: s3cret
roles: {mapping: {manager: [creator]}}
routes:
  - {name: forms, path_prefix: /api/forms, any_of: [creator]}
"""
TOKEN = "eyJhbGciOiJSUzI1NiJ9." + "a" * 800 + ".sig"
HOST = "api.example.com"
PATH = "/api/forms/1"
KEYS = {"ES256": DpopKey(), "PS256": DpopKey.rsa(), "EdDSA": DpopKey.ed25519()}
GOAL_US = 150.0


def caller(key: DpopKey | None) -> Identity:
    bound = Confirmation(jkt=key.thumbprint) if key is not None else None
    return Identity(
        "u-1",
        "bob",
        None,
        "dpop-app",
        frozenset(),
        frozenset({"manager"}),
        None,
        confirmation=bound,
    )


class OneCaller:
    def __init__(self, identity: Identity) -> None:
        self._identity = identity

    async def resolve(
        self, token: str, timeout_s: float, provider: str | None = None
    ) -> Identity | Inactive:
        return self._identity


def requests_for(key: DpopKey | None, calls: int) -> list[AuthRequest]:
    if key is None:
        bearer = {"authorization": f"Bearer {TOKEN}"}
        return [AuthRequest("GET", HOST, PATH, bearer, scheme="https")] * calls
    url = f"https://{HOST}{PATH}"
    return [
        AuthRequest(
            "GET",
            HOST,
            PATH,
            {"authorization": f"DPoP {TOKEN}", "dpop": key.proof("GET", url, TOKEN)},
            scheme="https",
        )
        for _ in range(calls)
    ]


async def measure(calls: int, rounds: int) -> None:
    settings = authorizer_settings(parse_config(CONFIG, {}))
    rows: dict[str, DpopKey | None] = {"Bearer, L1 hit": None}
    rows.update({f"DPoP {alg} proof, L1 hit": key for alg, key in KEYS.items()})
    checks = {name: Authorizer(settings, OneCaller(caller(key))) for name, key in rows.items()}
    timings: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(rounds):
        for name, key in rows.items():
            batch = requests_for(key, calls)
            authorizer = checks[name]
            started = time.perf_counter_ns()
            for request in batch:
                decision = await authorizer.check(request, 2.0)
            elapsed = time.perf_counter_ns() - started
            if not decision.allowed:
                raise SystemExit(f"{name}: {decision.reason} {dict(decision.metadata)}")
            timings[name].append(elapsed / calls / 1000)
    figures = {name: statistics.median(values) for name, values in timings.items()}
    base = figures["Bearer, L1 hit"]
    print(f"{'row':<28} {'µs/check':>9} {'added':>8}")
    for name, value in figures.items():
        print(f"{name:<28} {value:9.2f} {value - base:8.2f}")
    worst = max(value - base for value in figures.values())
    verdict = "met" if worst <= GOAL_US else "NOT met"
    print(f"goal: a proof adds at most {GOAL_US:.0f} µs to an L1 hit: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(measure(args.calls, args.rounds))


if __name__ == "__main__":
    main()
