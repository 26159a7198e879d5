"""Writing entries to a real Redis: in the background, bounded, and never leaving behind
the entry of a session that a logout revoked while it was being written."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from extauthz_server.cache.entries import CacheEntry
from extauthz_server.cache.local_cache import Invalidation
from extauthz_server.cache.redis_cache import MAX_PENDING_WRITES, RedisCache, connect
from extauthz_server.core.identity import Identity
from tests.support.redis_server import RedisServer

BOB = Identity(
    subject="bob",
    username="bob",
    email=None,
    client_id="web-app",
    scopes=frozenset(),
    provider_roles=frozenset({"manager"}),
    expires_at=None,
    session_id="s-bob",
)
DIGEST = bytes(32)


def fresh_entry() -> CacheEntry:
    now = time.time()
    return CacheEntry(BOB, now + 60, now + 60)


def new_cache(client: Any, timeout_s: float = 1.0) -> RedisCache:
    return RedisCache(client, "extauthz", timeout_s, horizon_s=120, seal_key=b"k" * 32)


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Any]:
    redis = connect(redis_server.url, cluster=False, timeout_s=1.0, max_connections=8)
    yield redis
    await redis.aclose()


async def test_a_background_write_is_readable_once_settled(client: Any) -> None:
    cache = new_cache(client)

    cache.put_later(DIGEST, fresh_entry())
    await cache.settle()

    found = await cache.get(DIGEST)
    assert found is not None
    assert found.result == BOB


async def test_writes_past_the_bound_are_dropped_while_redis_stalls(
    client: Any, redis_server: RedisServer
) -> None:
    cache = new_cache(client, timeout_s=0.5)
    redis_server.command("CLIENT", "PAUSE", "1000", "ALL")

    started = time.monotonic()
    for n in range(MAX_PENDING_WRITES + 10):
        cache.put_later(n.to_bytes(32, "big"), fresh_entry())
    queued_in = time.monotonic() - started
    await cache.settle()

    assert cache.writes_dropped == 10
    # Queuing never waits for Redis.
    assert queued_in < 0.5


class MarkerAfterFirstLook:
    """The real client, except that right after the first look at the revoked marker a
    logout lands: the timing of a logout that reads the session index just before the
    entry is written."""

    def __init__(self, client: Any, cache: RedisCache) -> None:
        self._client = client
        self._cache = cache
        self._looked = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def exists(self, *keys: str) -> int:
        found: int = await self._client.exists(*keys)
        if not self._looked:
            self._looked = True
            await self._cache.invalidate(Invalidation(session_id="s-bob"))
        return found


async def test_an_entry_written_while_its_session_is_logged_out_does_not_stay(
    client: Any,
) -> None:
    logout = new_cache(client)
    writer = new_cache(MarkerAfterFirstLook(client, logout))

    await writer.put(DIGEST, fresh_entry())

    assert await logout.get(DIGEST) is None
    assert await client.exists("extauthz:revoked:s-bob") == 1


async def test_closing_waits_briefly_for_writes_under_way(
    client: Any, redis_server: RedisServer
) -> None:
    cache = new_cache(client)
    cache.put_later(DIGEST, fresh_entry())

    await cache.close()

    reader = new_cache(connect(redis_server.url, cluster=False, timeout_s=1.0, max_connections=2))
    try:
        assert await reader.get(DIGEST) is not None
    finally:
        await reader.close()


async def test_pending_writes_do_not_outlive_close(client: Any, redis_server: RedisServer) -> None:
    cache = new_cache(client, timeout_s=5.0)
    redis_server.command("CLIENT", "PAUSE", "3000", "WRITE")
    cache.put_later(DIGEST, fresh_entry())
    await asyncio.sleep(0.05)

    started = time.monotonic()
    await cache.close()

    assert time.monotonic() - started < 2.0
