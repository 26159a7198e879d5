"""Pytest plugin: a session-wide echo upstream and a factory for Envoys in front of it.

Enable with `pytest_plugins = ["tests.support.envoy_fixture"]` in tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from tests.support.echo_upstream import BackgroundEchoUpstream
from tests.support.envoy import ENVOY_YAML, EnvoyProcess, start_envoy


class EnvoyFactory(Protocol):
    def __call__(
        self, ext_authz_port: int, *, timeout_s: float | None = None, source: Path = ENVOY_YAML
    ) -> EnvoyProcess:
        """Start Envoy (envoy/envoy.yaml, or `source`, on loopback) routing to the echo
        upstream."""
        ...


@pytest.fixture(scope="session")
def echo_upstream() -> Iterator[BackgroundEchoUpstream]:
    upstream = BackgroundEchoUpstream()
    upstream.start_in_thread()
    try:
        yield upstream
    finally:
        upstream.stop_thread()


@pytest.fixture(scope="session")
def envoy_factory(
    echo_upstream: BackgroundEchoUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EnvoyFactory]:
    """Each call starts a new Envoy; all of them are stopped at the end of the session."""
    started: list[EnvoyProcess] = []

    def start(
        ext_authz_port: int, *, timeout_s: float | None = None, source: Path = ENVOY_YAML
    ) -> EnvoyProcess:
        envoy = start_envoy(
            ext_authz_port=ext_authz_port,
            upstream_port=echo_upstream.port,
            workdir=tmp_path_factory.mktemp("envoy"),
            timeout_s=timeout_s,
            source=source,
        )
        started.append(envoy)
        return envoy

    try:
        yield start
    finally:
        for envoy in started:
            envoy.stop()
