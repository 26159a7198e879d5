"""DPoP proofs are single-use: per process without Redis, across every replica with it, and
refused (never let through) when the shared store cannot answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from extauthz_server.cache.redis_cache import RedisCache, connect
from extauthz_server.cache.shared_replay import SharedReplayGuard
from extauthz_server.core.replay import LocalReplayGuard
from extauthz_server.errors import ReplayCheckUnavailable
from tests.support.redis_server import RedisServer

NOW = 1_767_225_700.0
WINDOW_S = 40.0
KEY = bytes(range(32))


def replica(client: Any) -> SharedReplayGuard:
    return SharedReplayGuard(RedisCache(client, "extauthz", 1.0, horizon_s=120))


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Any]:
    redis = connect(redis_server.url, cluster=False, timeout_s=1.0, max_connections=8)
    yield redis
    await redis.aclose()


async def test_in_one_process_a_key_is_accepted_once_per_window() -> None:
    guard = LocalReplayGuard()
    assert await guard.first_use(KEY, NOW, WINDOW_S)
    assert not await guard.first_use(KEY, NOW + WINDOW_S - 1, WINDOW_S)
    # Past the window the proof's iat turns it away anyway; the key may be forgotten.
    assert await guard.first_use(KEY, NOW + WINDOW_S, WINDOW_S)


async def test_a_full_in_process_store_refuses_rather_than_forgets() -> None:
    guard = LocalReplayGuard(max_entries=2)
    assert await guard.first_use(b"a", NOW, WINDOW_S)
    assert await guard.first_use(b"b", NOW, WINDOW_S)
    with pytest.raises(ReplayCheckUnavailable):
        await guard.first_use(b"c", NOW, WINDOW_S)
    assert not await guard.first_use(b"a", NOW + 1, WINDOW_S)
    # Expired keys make room again.
    assert await guard.first_use(b"c", NOW + WINDOW_S, WINDOW_S)


async def test_a_proof_used_at_one_replica_is_a_replay_at_another(
    client: Any, redis_server: RedisServer
) -> None:
    other = connect(redis_server.url, cluster=False, timeout_s=1.0, max_connections=8)
    try:
        first, second = replica(client), replica(other)
        assert await first.first_use(KEY, NOW, WINDOW_S)
        assert not await second.first_use(KEY, NOW, WINDOW_S)
        assert not await first.first_use(KEY, NOW, WINDOW_S)
        assert await second.first_use(bytes(32), NOW, WINDOW_S)
    finally:
        await other.aclose()


async def test_the_shared_key_expires_with_the_window(client: Any) -> None:
    assert await replica(client).first_use(KEY, NOW, WINDOW_S)
    ttl_ms = await client.pttl(f"extauthz:dpop:{KEY.hex()}")
    assert 0 < ttl_ms <= WINDOW_S * 1000


async def test_redis_down_fails_closed(client: Any, redis_server: RedisServer) -> None:
    guard = replica(client)
    redis_server.kill()
    for _ in range(3):
        with pytest.raises(ReplayCheckUnavailable):
            await guard.first_use(KEY, NOW, WINDOW_S)
