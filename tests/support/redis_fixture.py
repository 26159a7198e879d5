"""Pytest plugin: a fresh `redis-server` per test and one three-master Redis Cluster per session.

Enable with `pytest_plugins = ["tests.support.redis_fixture"]` in tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis_server import RedisCluster, RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A new empty server per test (tens of milliseconds to start), stopped afterwards."""
    server = RedisServer.start(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """Shared by the whole session: use distinct keys, or call `flushall()` first."""
    cluster = RedisCluster.start(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()
