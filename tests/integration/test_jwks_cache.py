"""JwksCache against a real aiohttp JWKS endpoint on port 0, shaped like Keycloak's
(a `use: sig` RS256 key next to a `use: enc` RSA-OAEP key), with an injected clock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import get_default_algorithms

from extauthz_server.errors import ProviderUnavailable
from extauthz_server.identity.jwks import MAX_JWKS_BYTES, JwksCache
from extauthz_server.identity.signing_keys import KeyNotFound
from extauthz_server.revocation.logout_token import (
    BACKCHANNEL_LOGOUT_EVENT,
    LogoutEvent,
    verify_logout_token,
)
from tests.support.net import serve_on_loopback

INTERVAL_S = 30.0
SIG_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ENC_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ROTATED_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def public_jwk(private_key: Any, **members: object) -> dict[str, object]:
    alg = "ES256" if isinstance(private_key, ec.EllipticCurvePrivateKey) else "RS256"
    jwk = get_default_algorithms()[alg].to_jwk(private_key.public_key(), as_dict=True)
    return {**jwk, **members}


SIG = public_jwk(SIG_KEY, kid="sig-1", alg="RS256", use="sig")
ENC = public_jwk(ENC_KEY, kid="enc-1", alg="RSA-OAEP", use="enc")
ROTATED = public_jwk(ROTATED_KEY, kid="sig-2", alg="RS256", use="sig")


@dataclass
class JwksServer:
    """Serves `body` with `status` and `content_type`; counts requests."""

    body: bytes = b""
    status: int = 200
    content_type: str = "application/json"
    hang: bool = False
    requests: int = 0
    port: int = 0
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    def serve(self, *keys: object) -> None:
        self.body = json.dumps({"keys": list(keys)}).encode()
        self.status = 200
        self.content_type = "application/json"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/realms/demo/protocol/openid-connect/certs"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/realms/demo/protocol/openid-connect/certs", self._certs)
        self._runner, self.port = await serve_on_loopback(app)

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _certs(self, _request: web.Request) -> web.Response:
        self.requests += 1
        if self.hang:
            await self._release.wait()
        return web.Response(status=self.status, body=self.body, content_type=self.content_type)


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def server() -> AsyncIterator[JwksServer]:
    jwks = JwksServer()
    jwks.serve(ENC, SIG)
    await jwks.start()
    yield jwks
    await jwks.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(server: JwksServer, session: aiohttp.ClientSession, clock: FakeClock) -> JwksCache:
    async def jwks_uri(_timeout_s: float) -> str:
        return server.url

    return JwksCache(
        session, jwks_uri, timeout_s=5.0, min_refetch_interval_s=INTERVAL_S, clock=clock
    )


def public_numbers(key: jwt.PyJWK) -> object:
    return key.key.public_numbers()


async def test_signing_key_is_found_with_one_fetch(cache: JwksCache, server: JwksServer) -> None:
    key = await cache.key_for("sig-1", "RS256")
    assert key.key_id == "sig-1"
    assert public_numbers(key) == SIG_KEY.public_key().public_numbers()
    await cache.key_for("sig-1", "RS256")
    assert server.requests == 1


async def test_a_key_is_at_hand_only_once_loaded_and_never_costs_a_fetch(
    cache: JwksCache, server: JwksServer
) -> None:
    assert cache.key_at_hand("sig-1", "RS256") is None
    assert server.requests == 0

    await cache.key_for("sig-1", "RS256")
    at_hand = cache.key_at_hand("sig-1", "RS256")

    assert at_hand is not None
    assert public_numbers(at_hand) == SIG_KEY.public_key().public_numbers()
    assert cache.key_at_hand("unknown-kid", "RS256") is None
    assert cache.key_at_hand("sig-1", "HS256") is None
    assert server.requests == 1


@pytest.mark.parametrize("alg", ["RS256", "RSA-OAEP"])
async def test_encryption_key_is_never_returned(cache: JwksCache, alg: str) -> None:
    with pytest.raises(KeyNotFound):
        await cache.key_for("enc-1", alg)


async def test_use_enc_excludes_a_key_even_with_a_signing_alg(
    cache: JwksCache, server: JwksServer
) -> None:
    server.serve(public_jwk(ENC_KEY, kid="enc-1", alg="RS256", use="enc"), SIG)
    with pytest.raises(KeyNotFound):
        await cache.key_for("enc-1", "RS256")


async def test_key_is_only_returned_for_its_alg(cache: JwksCache, server: JwksServer) -> None:
    with pytest.raises(KeyNotFound):
        await cache.key_for("sig-1", "PS256")
    with pytest.raises(KeyNotFound):
        await cache.key_for("sig-1", "HS256")


async def test_unknown_kid_refetches_once_per_interval(
    cache: JwksCache, server: JwksServer, clock: FakeClock
) -> None:
    await cache.key_for("sig-1", "RS256")
    assert server.requests == 1
    clock.now += INTERVAL_S

    with pytest.raises(KeyNotFound):
        await cache.key_for("forged-1", "RS256")
    assert server.requests == 2

    clock.now += INTERVAL_S - 1
    with pytest.raises(KeyNotFound):
        await cache.key_for("forged-2", "RS256")
    assert server.requests == 2

    clock.now += 1
    with pytest.raises(KeyNotFound):
        await cache.key_for("forged-3", "RS256")
    assert server.requests == 3


async def test_rotated_key_is_found_after_refetch(
    cache: JwksCache, server: JwksServer, clock: FakeClock
) -> None:
    await cache.key_for("sig-1", "RS256")
    server.serve(ENC, ROTATED, SIG)  # Keycloak keeps the old key, now passive
    clock.now += INTERVAL_S

    key = await cache.key_for("sig-2", "RS256")

    assert public_numbers(key) == ROTATED_KEY.public_key().public_numbers()
    assert server.requests == 2
    assert (await cache.key_for("sig-1", "RS256")).key_id == "sig-1"


async def test_key_rotated_right_after_start_up_is_found_at_once(
    cache: JwksCache, server: JwksServer
) -> None:
    await cache.load(timeout_s=5.0)
    server.serve(ENC, ROTATED, SIG)

    key = await cache.key_for("sig-2", "RS256")

    assert public_numbers(key) == ROTATED_KEY.public_key().public_numbers()
    assert server.requests == 2
    # That refetch starts the rate limit: forged kids add no fetch within the interval.
    with pytest.raises(KeyNotFound):
        await cache.key_for("forged-1", "RS256")
    assert server.requests == 2


async def test_concurrent_unknown_kids_share_one_fetch(
    cache: JwksCache, server: JwksServer
) -> None:
    results = await asyncio.gather(
        *(cache.key_for(f"forged-{n}", "RS256") for n in range(10)),
        cache.key_for("sig-1", "RS256"),
        return_exceptions=True,
    )
    assert all(isinstance(result, KeyNotFound) for result in results[:10])
    assert isinstance(results[10], jwt.PyJWK)
    assert server.requests == 1


async def test_key_without_alg_or_use_serves_the_algs_its_shape_allows(
    cache: JwksCache, server: JwksServer
) -> None:
    server.serve(public_jwk(EC_KEY, kid="ec-1"))
    assert (await cache.key_for("ec-1", "ES256")).algorithm_name == "ES256"
    with pytest.raises(KeyNotFound):
        await cache.key_for("ec-1", "ES384")


async def test_token_without_kid_uses_the_only_key_for_its_alg(cache: JwksCache) -> None:
    assert (await cache.key_for(None, "RS256")).key_id == "sig-1"


async def test_token_without_kid_matches_nothing_when_keys_are_ambiguous(
    cache: JwksCache, server: JwksServer
) -> None:
    server.serve(SIG, ROTATED)
    with pytest.raises(KeyNotFound):
        await cache.key_for(None, "RS256")


async def test_unusable_entries_are_skipped(cache: JwksCache, server: JwksServer) -> None:
    server.serve(
        "not an object",
        {"kid": "oct-1", "kty": "oct", "k": "c2VjcmV0", "alg": "HS256", "use": "sig"},
        {"kid": "broken", "kty": "RSA", "alg": "RS256", "n": "!!", "e": "AQAB"},
        {**SIG, "key_ops": ["encrypt"], "kid": "ops-encrypt"},
        SIG,
    )
    assert (await cache.key_for("sig-1", "RS256")).key_id == "sig-1"
    for kid, alg in [("oct-1", "HS256"), ("broken", "RS256"), ("ops-encrypt", "RS256")]:
        with pytest.raises(KeyNotFound):
            await cache.key_for(kid, alg)


def _html_500(server: JwksServer) -> None:
    server.status = 500
    server.content_type = "text/html"
    server.body = b"<html>Internal error</html>"


def _html_200(server: JwksServer) -> None:
    server.content_type = "text/html"
    server.body = b"<html><body>Sign in</body></html>"


def _oversized(server: JwksServer) -> None:
    padding = "x" * MAX_JWKS_BYTES
    server.body = json.dumps({"keys": [SIG], "padding": padding}).encode()


def _no_keys_array(server: JwksServer) -> None:
    server.body = b'{"keys": {"sig-1": {}}}'


def _not_found(server: JwksServer) -> None:
    server.status = 404
    server.body = b'{"error": "Realm does not exist"}'


@pytest.mark.parametrize(
    "break_server",
    [_html_500, _html_200, _oversized, _no_keys_array, _not_found],
    ids=["500_html", "200_html", "oversized", "no_keys_array", "404"],
)
async def test_bad_jwks_response_is_provider_unavailable(
    cache: JwksCache, server: JwksServer, break_server: Any
) -> None:
    break_server(server)
    with pytest.raises(ProviderUnavailable):
        await cache.key_for("sig-1", "RS256")


async def test_failed_fetch_is_remembered_for_the_interval(
    cache: JwksCache, server: JwksServer, clock: FakeClock
) -> None:
    _html_500(server)
    with pytest.raises(ProviderUnavailable):
        await cache.key_for("sig-1", "RS256")
    server.serve(SIG)

    clock.now += INTERVAL_S - 1
    with pytest.raises(ProviderUnavailable):
        await cache.key_for("sig-1", "RS256")
    assert server.requests == 1

    clock.now += 1
    assert (await cache.key_for("sig-1", "RS256")).key_id == "sig-1"
    assert server.requests == 2


async def test_failed_refetch_keeps_known_keys(
    cache: JwksCache, server: JwksServer, clock: FakeClock
) -> None:
    await cache.key_for("sig-1", "RS256")
    _html_500(server)
    clock.now += INTERVAL_S

    with pytest.raises(ProviderUnavailable):
        await cache.key_for("sig-2", "RS256")
    assert (await cache.key_for("sig-1", "RS256")).key_id == "sig-1"
    assert server.requests == 2


async def test_slow_jwks_times_out_as_provider_unavailable(
    server: JwksServer, session: aiohttp.ClientSession
) -> None:
    async def jwks_uri(_timeout_s: float) -> str:
        return server.url

    server.hang = True
    cache = JwksCache(session, jwks_uri, timeout_s=0.2)
    with pytest.raises(ProviderUnavailable):
        await cache.key_for("sig-1", "RS256")


async def test_jwks_uri_failure_propagates(session: aiohttp.ClientSession) -> None:
    async def jwks_uri(_timeout_s: float) -> str:
        raise ProviderUnavailable("discovery answered 503")

    cache = JwksCache(session, jwks_uri, timeout_s=1.0)
    with pytest.raises(ProviderUnavailable):
        await cache.key_for("sig-1", "RS256")


async def test_logout_token_verifies_against_served_keys(cache: JwksCache) -> None:
    now = 1_700_000_000
    issuer = "http://127.0.0.1/realms/demo"
    token = jwt.encode(
        {
            "iss": issuer,
            "aud": "ext-authz",
            "iat": now,
            "exp": now + 120,
            "jti": "j-1",
            "sid": "session-1",
            "sub": "user-1",
            "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
        },
        SIG_KEY,
        algorithm="RS256",
        headers={"kid": "sig-1", "typ": "logout+jwt"},
    )
    event = await verify_logout_token(token, cache, issuer, frozenset({"ext-authz"}), now=now)
    assert event == LogoutEvent(issuer, "user-1", "session-1")
