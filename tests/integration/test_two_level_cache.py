"""L1 + Redis L2 across server instances, coalescing, bounded provider load, stale-if-error,
invalidation across processes, and Redis failures that degrade instead of failing checks."""

from __future__ import annotations

import asyncio
import hashlib
import math
import time

import pytest
import redis.asyncio as aioredis

from extauthz_server.cache.entries import CacheEntry, EntrySeal, encode_entry, seal_key
from extauthz_server.cache.local_cache import Invalidation
from extauthz_server.core.identity import EXPIRY_SKEW_SECONDS, Identity
from extauthz_server.core.secret import Secret
from tests.integration.conftest import RunningAuthz, StartAuthz
from tests.support.check_requests import call_check, check_request, upstream_headers
from tests.support.configs import DEMO_CLIENT_SECRET
from tests.support.keycloak_standin import Fault, KeycloakStandIn, active_document
from tests.support.redis_server import RedisCluster, RedisServer

GRPC_OK = 0


async def allowed(authz: RunningAuthz, token: str, path: str = "/api/forms") -> bool:
    response = await call_check(authz.channel, check_request(path, token=token))
    return response.status.code == GRPC_OK


async def status_of(authz: RunningAuthz, token: str, path: str = "/api/forms") -> int:
    response = await call_check(authz.channel, check_request(path, token=token))
    return 200 if response.status.code == GRPC_OK else response.denied_response.status.code


def with_redis(url: str, **cache: object) -> dict[str, object]:
    """Cache settings with Redis; a generous timeout unless a test is about slow answers,
    so a busy machine cannot turn an expected L2 hit into a provider call."""
    return {"redis_url": url, "redis_timeout_ms": 1000, **cache}


async def test_second_replica_answers_from_redis_without_asking_the_provider(
    start_authz: StartAuthz, standin: KeycloakStandIn, redis_server: RedisServer
) -> None:
    standin.documents["bob"] = active_document("bob", ["manager"], sid="s-bob")
    first = await start_authz(cache=with_redis(redis_server.url))
    second = await start_authz(cache=with_redis(redis_server.url))

    assert await allowed(first, "bob")
    await first.redis_settled()
    response = await call_check(second.channel, check_request("/api/forms", token="bob"))

    assert upstream_headers(response)["x-auth-roles"] == "creator"
    assert len(standin.calls) == 1
    assert second.server.resolver is not None
    assert second.server.resolver.stats.l2_hits == 1


async def test_redis_holds_only_the_derived_identity_under_a_digest_key(
    authz_with_redis: RunningAuthz, standin: KeycloakStandIn, redis_server: RedisServer
) -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.secret-token-body.sig"
    standin.documents[token] = active_document("bob", ["manager"], sid="s-bob")

    assert await allowed(authz_with_redis, token)
    await authz_with_redis.redis_settled()

    client = aioredis.from_url(redis_server.url)
    try:
        keys = sorted(k.decode() if isinstance(k, bytes) else k for k in await client.keys("*"))
        values = [await client.get(key) for key in keys if ":id:" in key]
    finally:
        await client.aclose()
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert f"extauthz:id:{digest}" in keys
    assert "extauthz:sid:s-bob" in keys
    assert all(token not in key for key in keys)
    [value] = values
    assert value is not None
    assert b"secret-token-body" not in value
    assert b"realm_access" not in value
    assert b'"manager"' in value


ADMIN = Identity(
    subject="mallory",
    username="mallory",
    email=None,
    client_id="web-app",
    scopes=frozenset(),
    provider_roles=frozenset({"admin", "manager"}),
    expires_at=None,
)


async def write_entry(redis_url: str, token: str, data: bytes) -> None:
    client = aioredis.from_url(redis_url)
    try:
        digest = hashlib.sha256(token.encode()).hexdigest()
        await client.set(f"extauthz:id:{digest}", data, px=60_000)
    finally:
        await client.aclose()


def forged_entry(token: str, seal: EntrySeal) -> bytes:
    now = time.time()
    payload = encode_entry(CacheEntry(ADMIN, now + 60, now + 60))
    return seal.seal(hashlib.sha256(token.encode()).digest(), payload)


@pytest.mark.parametrize(
    "seal",
    [
        EntrySeal(None, "extauthz"),
        EntrySeal(seal_key(Secret("a-key-that-is-not-the-servers-0123")), "extauthz"),
        EntrySeal(seal_key(Secret(DEMO_CLIENT_SECRET)), "extauthz:other"),
    ],
    ids=["unsealed", "sealed-with-another-key", "sealed-for-another-namespace"],
)
async def test_an_identity_written_into_redis_without_the_key_grants_nothing(
    authz_with_redis: RunningAuthz,
    standin: KeycloakStandIn,
    redis_server: RedisServer,
    seal: EntrySeal,
) -> None:
    await write_entry(redis_server.url, "made-up-token", forged_entry("made-up-token", seal))

    # The stand-in does not know the token: only the forged entry could make it an admin.
    assert await status_of(authz_with_redis, "made-up-token", "/admin") == 401
    assert len(standin.calls) == 1
    assert authz_with_redis.server.shared_cache is not None
    assert authz_with_redis.server.shared_cache.unreadable_entries == 1


async def test_replicas_with_different_signing_keys_do_not_use_each_others_entries(
    start_authz: StartAuthz, standin: KeycloakStandIn, redis_server: RedisServer
) -> None:
    standin.documents["bob"] = active_document("bob", ["manager"])
    first = await start_authz(cache=with_redis(redis_server.url, redis_signing_key="a" * 32))
    same = await start_authz(cache=with_redis(redis_server.url, redis_signing_key="a" * 32))
    other = await start_authz(cache=with_redis(redis_server.url, redis_signing_key="b" * 32))

    assert await allowed(first, "bob")
    await first.redis_settled()
    assert await allowed(same, "bob")
    assert len(standin.calls) == 1
    assert await allowed(other, "bob")
    assert len(standin.calls) == 2


@pytest.fixture
async def authz_with_redis(start_authz: StartAuthz, redis_server: RedisServer) -> RunningAuthz:
    return await start_authz(cache=with_redis(redis_server.url))


async def test_inactive_token_costs_the_provider_one_call_per_negative_ttl(
    authz_with_redis: RunningAuthz, standin: KeycloakStandIn
) -> None:
    for _ in range(20):
        assert await status_of(authz_with_redis, "garbage") == 401

    assert len(standin.calls) == 1


async def test_500_concurrent_checks_of_one_fresh_token_make_one_introspection(
    start_authz: StartAuthz, standin: KeycloakStandIn
) -> None:
    authz = await start_authz(timeout_ms=3000)
    standin.documents["fresh"] = active_document("bob", ["manager"])
    standin.fault, standin.delay_s = Fault.SLOW, 0.3

    statuses = await asyncio.gather(*(status_of(authz, "fresh") for _ in range(500)))

    assert set(statuses) == {200}
    assert len(standin.calls) == 1


async def test_introspections_beyond_max_concurrency_wait_then_get_503(
    start_authz: StartAuthz, standin: KeycloakStandIn
) -> None:
    authz = await start_authz(timeout_ms=200, provider={"max_concurrency": 2})
    standin.fault, standin.delay_s = Fault.SLOW, 1.0

    started = time.monotonic()
    statuses = await asyncio.gather(*(status_of(authz, f"token-{i}") for i in range(10)))

    assert statuses == [503] * 10
    assert time.monotonic() - started < 1.0
    assert authz.server.resolver is not None
    stats = authz.server.resolver.stats
    # Counted on our side: the stand-in still works on calls we gave up, so a later check
    # that got a freed slot may overlap them there.
    assert stats.max_in_flight == 2
    assert standin.max_in_flight >= 2
    # Checks that started a little later may still get a freed slot within their deadline.
    assert stats.saturated + stats.lookups == 10
    assert stats.saturated >= 4


async def test_checks_go_on_when_redis_is_killed_and_use_it_again_after_restart(
    authz_with_redis: RunningAuthz, standin: KeycloakStandIn, redis_server: RedisServer
) -> None:
    for name in ["a", "b", *(f"c{i}" for i in range(50))]:
        standin.documents[name] = active_document(name, ["manager"])
    assert await allowed(authz_with_redis, "a")

    redis_server.kill()
    assert await allowed(authz_with_redis, "a")  # L1
    assert await allowed(authz_with_redis, "b")  # provider, Redis skipped
    shared = authz_with_redis.server.shared_cache
    assert shared is not None
    assert shared.errors >= 1
    assert not shared.available

    redis_server.restart()
    # Recovery is noticed on the next cache miss after the retry interval: new tokens miss.
    deadline = time.monotonic() + 5
    fresh_tokens = iter(f"c{i}" for i in range(50))
    while not shared.available and time.monotonic() < deadline:
        assert await allowed(authz_with_redis, next(fresh_tokens))
        await asyncio.sleep(0.1)
    assert shared.available


async def test_a_stalled_redis_costs_a_bounded_wait_not_a_failed_check(
    start_authz: StartAuthz, standin: KeycloakStandIn, redis_server: RedisServer
) -> None:
    authz = await start_authz(
        timeout_ms=1000, cache=with_redis(redis_server.url, redis_timeout_ms=50)
    )
    standin.documents["a"] = active_document("a", ["manager"])
    # CLIENT PAUSE holds every client's commands, as a stalled or overloaded server would.
    redis_server.command("CLIENT", "PAUSE", "1500", "ALL")

    started = time.monotonic()
    assert await allowed(authz, "a")
    assert time.monotonic() - started < 0.5


async def test_stale_identity_is_served_while_the_provider_is_down_if_configured(
    start_authz: StartAuthz, standin: KeycloakStandIn
) -> None:
    authz = await start_authz(ttl_seconds=0.2, cache={"stale_if_error_seconds": 60})
    strict = await start_authz(ttl_seconds=0.2)
    standin.documents["bob"] = active_document("bob", ["manager"], sid="s-bob")
    assert await allowed(authz, "bob")
    assert await allowed(strict, "bob")
    await asyncio.sleep(0.3)  # past the fresh period
    standin.fault = Fault.SERVER_ERROR

    assert await status_of(authz, "bob") == 200
    assert await status_of(strict, "bob") == 503


async def test_stale_identity_is_never_served_for_a_revoked_session(
    start_authz: StartAuthz, standin: KeycloakStandIn
) -> None:
    authz = await start_authz(ttl_seconds=0.2, cache={"stale_if_error_seconds": 60})
    standin.documents["bob"] = active_document("bob", ["manager"], sid="s-bob")
    assert await allowed(authz, "bob")
    assert authz.server.resolver is not None
    await authz.server.resolver.invalidate(Invalidation(session_id="s-bob"))
    standin.fault = Fault.SERVER_ERROR

    assert await status_of(authz, "bob") == 503


async def test_stale_identity_is_never_served_past_the_token_exp(
    start_authz: StartAuthz, standin: KeycloakStandIn
) -> None:
    authz = await start_authz(ttl_seconds=60, cache={"stale_if_error_seconds": 60})
    # Usable (exp less the skew) for two to three more seconds: room for a slow first Check.
    exp = math.ceil(time.time()) + int(EXPIRY_SKEW_SECONDS) + 2
    standin.documents["bob"] = active_document("bob", ["manager"], exp=exp)
    assert await allowed(authz, "bob")
    await asyncio.sleep(max(0.0, exp - EXPIRY_SKEW_SECONDS - time.time()) + 0.2)
    standin.fault = Fault.SERVER_ERROR

    assert await status_of(authz, "bob") == 503


async def two_replicas_caching_a_logged_out_session(
    start_authz: StartAuthz, standin: KeycloakStandIn, redis_server: RedisServer
) -> tuple[RunningAuthz, RunningAuthz]:
    """Two replicas that both hold bob's session "s-bob" in L1, which Keycloak has since
    ended: only an invalidation can make them refuse it before the hour-long TTL."""
    standin.documents["bob"] = active_document("bob", ["manager"], sid="s-bob")
    first = await start_authz(ttl_seconds=3600, cache=with_redis(redis_server.url))
    second = await start_authz(ttl_seconds=3600, cache=with_redis(redis_server.url))
    assert await allowed(first, "bob")
    assert await allowed(second, "bob")
    del standin.documents["bob"]
    return first, second


async def test_invalidation_on_one_replica_empties_the_other_replicas_cache(
    start_authz: StartAuthz, standin: KeycloakStandIn, redis_server: RedisServer
) -> None:
    first, second = await two_replicas_caching_a_logged_out_session(
        start_authz, standin, redis_server
    )

    assert first.server.resolver is not None
    started = time.monotonic()
    await first.server.resolver.invalidate(Invalidation(session_id="s-bob"))
    while await allowed(second, "bob"):
        assert time.monotonic() - started < 1.0, "the second replica still allows after 1 s"
        await asyncio.sleep(0.02)

    assert await status_of(second, "bob") == 401


async def test_a_logout_published_while_a_replica_was_unsubscribed_still_reaches_it(
    start_authz: StartAuthz, standin: KeycloakStandIn, redis_server: RedisServer
) -> None:
    first, second = await two_replicas_caching_a_logged_out_session(
        start_authz, standin, redis_server
    )
    shared = second.server.shared_cache
    assert shared is not None
    resubscriptions = shared.resubscriptions

    # Cut every subscriber off, then log out while nobody listens: the message is lost.
    redis_server.command("CLIENT", "KILL", "TYPE", "pubsub")
    assert redis_server.command("PUBSUB", "NUMSUB", shared.channel)[1] == 0  # type: ignore[index]
    assert first.server.resolver is not None
    await first.server.resolver.invalidate(Invalidation(session_id="s-bob"))

    started = time.monotonic()
    while shared.resubscriptions == resubscriptions:
        assert time.monotonic() - started < 5.0, "the second replica did not subscribe again"
        await asyncio.sleep(0.02)
    assert await status_of(second, "bob") == 401


async def test_redis_cluster_is_shared_between_replicas(
    start_authz: StartAuthz, standin: KeycloakStandIn, redis_cluster: RedisCluster
) -> None:
    redis_cluster.flushall()
    cache = with_redis(redis_cluster.url, redis_cluster=True)
    first = await start_authz(cache=cache)
    second = await start_authz(cache=cache)
    for i in range(5):
        standin.documents[f"t{i}"] = active_document(f"user{i}", ["manager"], sid=f"s{i}")
        assert await allowed(first, f"t{i}")
        # The first replica writes to Redis in the background: the second reads it once written.
        await first.redis_settled()
        assert await allowed(second, f"t{i}")

    assert len(standin.calls) == 5
    assert second.server.resolver is not None
    assert second.server.resolver.stats.l2_hits == 5

    await second.server.resolver.invalidate(Invalidation(session_id="s3"))
    del standin.documents["t3"]
    deadline = time.monotonic() + 1.0
    while await allowed(first, "t3"):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
