"""The whole stack on loopback: Keycloak → our server ← Envoy → echo upstream, all real."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import pytest

from tests.support.authz_process import AuthzProcess
from tests.support.configs import seed_config_text
from tests.support.envoy import ENVOY_HTTP_YAML, EnvoyProcess
from tests.support.envoy_fixture import EnvoyFactory
from tests.support.keycloak import Keycloak
from tests.support.net import free_port

# Our server also listens for Envoy's HTTP ext_authz (envoy/envoy-http.yaml).
HTTP_AUTHZ = {"http_authz_listen": "127.0.0.1:0"}
# Short enough that the logout scenario sees the cache expire within a bounded poll.
E2E_CACHE_TTL_S = 2


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        document = json.loads(self.body)
        assert isinstance(document, dict)
        return document

    @property
    def upstream_headers(self) -> dict[str, str]:
        """What the echo upstream says it received (only for requests that reached it)."""
        headers = self.json()["headers"]
        assert isinstance(headers, dict)
        return headers


class Proxy(Protocol):
    """Envoy, nginx or Caddy as the tests run them: something with a URL for a path."""

    def url(self, path: str = "/") -> str: ...


def http_get(
    envoy: Proxy,
    path: str,
    *,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    request = urllib.request.Request(envoy.url(path), method="GET")  # noqa: S310 - loopback
    request.add_header("Host", "app.example")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return Reply(
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as error:
        return Reply(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())


def access_token(keycloak: Keycloak, username: str) -> str:
    return str(keycloak.password_grant(username)["access_token"])


def warm_up(keycloak: Keycloak) -> None:
    """A fresh JVM answers its first introspections in seconds, far past Envoy's 250 ms budget;
    a deployed Keycloak is warm, so the scenarios run against a warm one too."""
    token = keycloak.password_grant("bob")["access_token"]
    for _ in range(30):
        keycloak.introspect(token)


@pytest.fixture(scope="session")
def authz_process(
    keycloak: Keycloak, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuthzProcess]:
    warm_up(keycloak)
    text = seed_config_text(
        keycloak.issuer, ttl_seconds=E2E_CACHE_TTL_S, timeout_ms=200, server=HTTP_AUTHZ
    )
    process = AuthzProcess.start(text, tmp_path_factory.mktemp("authz"))
    yield process
    process.stop()


@pytest.fixture(scope="session")
def envoy(authz_process: AuthzProcess, envoy_factory: EnvoyFactory) -> EnvoyProcess:
    return envoy_factory(authz_process.grpc_port)


@pytest.fixture(scope="session")
def envoy_over_http(authz_process: AuthzProcess, envoy_factory: EnvoyFactory) -> EnvoyProcess:
    """The same server asked by Envoy's HTTP ext_authz (envoy/envoy-http.yaml)."""
    return envoy_factory(authz_process.http_authz_port, source=ENVOY_HTTP_YAML)


@pytest.fixture(scope="session")
def envoy_without_provider(
    envoy_factory: EnvoyFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EnvoyProcess]:
    """Our server configured against a Keycloak address where nothing listens."""
    process = without_provider(tmp_path_factory)
    yield envoy_factory(process.grpc_port)
    process.stop()


@pytest.fixture(scope="session")
def envoy_over_http_without_provider(
    envoy_factory: EnvoyFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EnvoyProcess]:
    process = without_provider(tmp_path_factory)
    yield envoy_factory(process.http_authz_port, source=ENVOY_HTTP_YAML)
    process.stop()


def without_provider(tmp_path_factory: pytest.TempPathFactory) -> AuthzProcess:
    """Our server configured against a Keycloak address where nothing listens."""
    dead = f"http://127.0.0.1:{free_port()}/realms/demo"
    text = seed_config_text(
        dead,
        introspection_endpoint=dead + "/protocol/openid-connect/token/introspect",
        server=HTTP_AUTHZ,
    )
    return AuthzProcess.start(text, tmp_path_factory.mktemp("authz-dead"))
