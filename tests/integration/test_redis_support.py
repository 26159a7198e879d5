"""The Redis launchers give real servers that crash, restart and cluster as the cache tests need."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.support.redis_server import RedisCluster, RedisServer

_WAIT_S = 5.0


def _client(server: RedisServer) -> aioredis.Redis:
    # No retries: a killed server must surface as an error at once, not after backoff.
    return aioredis.Redis.from_url(
        server.url, retry=Retry(NoBackoff(), 0), socket_timeout=_WAIT_S, decode_responses=True
    )


async def test_set_and_get_through_asyncio_client(redis_server: RedisServer) -> None:
    client = _client(redis_server)
    try:
        await client.set("greeting", "hello", ex=60)
        assert await client.get("greeting") == "hello"
        assert await client.config_get("save") == {"save": ""}
    finally:
        await client.aclose()


async def test_kill_fails_commands_and_restart_comes_back_empty_on_same_port(
    redis_server: RedisServer,
) -> None:
    port = redis_server.port
    client = _client(redis_server)
    try:
        await client.set("survivor", "1")
        redis_server.kill()
        assert not redis_server.running
        with pytest.raises(RedisConnectionError):
            await client.get("survivor")

        redis_server.restart()
        assert redis_server.port == port
        assert await client.get("survivor") is None
        assert await client.dbsize() == 0
    finally:
        await client.aclose()


def test_stop_is_idempotent(redis_server: RedisServer) -> None:
    redis_server.stop()
    redis_server.stop()
    assert not redis_server.running


async def test_cluster_spreads_keys_over_every_master(redis_cluster: RedisCluster) -> None:
    host, port = redis_cluster.startup_nodes[0]
    client = AsyncRedisCluster(host=host, port=port, decode_responses=True)
    try:
        await client.initialize()
        owners: dict[int, str] = {}
        for index in range(100):
            key = f"spread:{index}"
            owner = client.get_node_from_key(key)
            assert owner is not None
            owner_port = int(owner.port)
            if owner_port not in owners:
                owners[owner_port] = key
                await client.set(key, str(owner_port), ex=60)
            if len(owners) == len(redis_cluster.nodes):
                break
        assert sorted(owners) == sorted(node.port for node in redis_cluster.nodes)
        for owner_port, key in owners.items():
            assert await client.get(key) == str(owner_port)
        slots = {client.keyslot(key) for key in owners.values()}
        assert len(slots) == len(owners)
    finally:
        await client.aclose()

    # Each key really lives on the node the client routed it to.
    by_port = {node.port: node for node in redis_cluster.nodes}
    for owner_port, key in owners.items():
        assert by_port[owner_port].command("GET", key) == str(owner_port)


async def test_cluster_publish_reaches_subscriber_on_another_node(
    redis_cluster: RedisCluster,
) -> None:
    publisher_node, subscriber_node = redis_cluster.nodes[0], redis_cluster.nodes[1]
    publisher = _client(publisher_node)
    subscriber = _client(subscriber_node)
    try:
        async with subscriber.pubsub() as pubsub:
            await pubsub.subscribe("revocations")
            async with asyncio.timeout(_WAIT_S):
                confirmation = await pubsub.get_message(timeout=_WAIT_S)
            assert confirmation is not None
            assert confirmation["type"] == "subscribe"

            # PUBLISH (not SPUBLISH) is broadcast over the cluster bus to every node.
            await publisher.publish("revocations", "token-digest")
            async with asyncio.timeout(_WAIT_S):
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=_WAIT_S)
            assert message is not None
            assert (message["channel"], message["data"]) == ("revocations", "token-digest")
    finally:
        await subscriber.aclose()
        await publisher.aclose()
