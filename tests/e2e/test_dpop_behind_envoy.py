"""DPoP (RFC 9449) as deployed: a dpop-app token from the real Keycloak, bound to the key of its
token request, used through real Envoy (asking over gRPC and over HTTP); then two replicas
sharing Redis, on a provider that requires DPoP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from tests.e2e.conftest import HTTP_AUTHZ, Reply, access_token, http_get, warm_up
from tests.support.authz_process import AuthzProcess
from tests.support.configs import seed_config_text
from tests.support.dpop import DpopKey
from tests.support.envoy import EnvoyProcess
from tests.support.envoy_fixture import EnvoyFactory
from tests.support.keycloak import Keycloak
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.keycloak, pytest.mark.envoy]

# http_get sends `Host: app.example` to Envoy's plain-HTTP listener: the URI the client
# addressed, as Envoy reports it to us.
ORIGIN = "http://app.example"


@pytest.fixture(params=["grpc", "http"])
def envoy(
    request: pytest.FixtureRequest, envoy: EnvoyProcess, envoy_over_http: EnvoyProcess
) -> EnvoyProcess:
    return envoy if request.param == "grpc" else envoy_over_http


class DpopClient:
    """bob on dpop-app: a key, and an access token Keycloak bound to it."""

    def __init__(self, keycloak: Keycloak, username: str = "bob") -> None:
        self.key = DpopKey()
        grant = keycloak.dpop_password_grant(username, lambda m, u: self.key.proof(m, u))
        assert grant["token_type"] == "DPoP"
        self.token = str(grant["access_token"])

    def proof(self, path: str, method: str = "GET", **changes: object) -> str:
        return self.key.proof(method, ORIGIN + path, self.token, **changes)  # type: ignore[arg-type]

    def get(self, proxy: EnvoyProcess, path: str, proof: str | None) -> Reply:
        headers = {"Authorization": f"DPoP {self.token}"}
        if proof is not None:
            headers["DPoP"] = proof
        return http_get(proxy, path, headers=headers)


@pytest.fixture(scope="module")
def client(keycloak: Keycloak) -> DpopClient:
    return DpopClient(keycloak)


def assert_dpop_refusal(reply: Reply, error: str = "invalid_dpop_proof") -> None:
    assert reply.status == 401, reply.body
    challenge = reply.headers["www-authenticate"]
    assert challenge.startswith('DPoP algs="ES256 '), challenge
    assert f'error="{error}"' in challenge


def test_keycloak_binds_the_token_to_the_proof_key(client: DpopClient) -> None:
    claims = jwt.decode(client.token, options={"verify_signature": False})
    assert claims["typ"] == "DPoP"
    assert claims["cnf"]["jkt"] == client.key.thumbprint


def test_a_fresh_proof_passes_and_the_upstream_sees_the_caller(
    envoy: EnvoyProcess, client: DpopClient
) -> None:
    reply = client.get(envoy, "/api/forms/1", client.proof("/api/forms/1"))

    assert reply.status == 200, reply.body
    seen = reply.upstream_headers
    assert seen["x-auth-username"] == "bob"
    assert seen["x-auth-client"] == "dpop-app"
    assert seen["x-auth-roles"] == "creator"


def test_the_same_proof_twice_is_refused(envoy: EnvoyProcess, client: DpopClient) -> None:
    proof = client.proof("/api/forms/2")
    assert client.get(envoy, "/api/forms/2", proof).status == 200

    assert_dpop_refusal(client.get(envoy, "/api/forms/2", proof))


@pytest.mark.parametrize(
    "changes",
    [
        {"method": "POST"},
        {"path": "/api/forms/other"},
        {"key": "another"},
        {"drop": ("ath",)},
        {"iat": "old"},
        {"proof": None},
    ],
    ids=["another-method", "another-uri", "another-key", "no-ath", "too-old", "no-proof"],
)
def test_a_proof_that_does_not_fit_the_request_is_refused(
    envoy: EnvoyProcess, client: DpopClient, changes: dict[str, object]
) -> None:
    path = "/api/forms/3"
    if "proof" in changes:
        proof = None
    elif changes.get("key") == "another":
        proof = DpopKey().proof("GET", ORIGIN + path, client.token)
    elif changes.get("iat") == "old":
        proof = client.proof(path, iat=time.time() - 120)
    else:
        method = str(changes.get("method", "GET"))
        proof = client.proof(str(changes.get("path", path)), method, drop=changes.get("drop", ()))

    assert_dpop_refusal(client.get(envoy, path, proof))


def test_the_dpop_token_sent_as_bearer_is_refused(envoy: EnvoyProcess, client: DpopClient) -> None:
    reply = http_get(envoy, "/api/forms/4", token=client.token)

    assert_dpop_refusal(reply, error="invalid_token")


def test_plain_bearer_tokens_still_pass_where_dpop_is_allowed(
    envoy: EnvoyProcess, keycloak: Keycloak
) -> None:
    assert http_get(envoy, "/api/forms/5", token=access_token(keycloak, "bob")).status == 200


# Two replicas sharing Redis, on a provider that requires DPoP, each behind its own Envoy.


class Replicas:
    processes: list[AuthzProcess]

    def __init__(self, keycloak: Keycloak, redis: RedisServer, workdir: Path) -> None:
        text = seed_config_text(
            keycloak.issuer,
            ttl_seconds=2,
            # Not about timing: a fresh replica's first call to Keycloak may be slow here.
            timeout_ms=2000,
            server=HTTP_AUTHZ,
            provider={"dpop": "required"},
            cache={"redis_url": redis.url},
        )
        self.processes = []
        for index in range(2):
            directory = workdir / f"replica-{index}"
            directory.mkdir()
            self.processes.append(AuthzProcess.start(text, directory))

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer.start(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def replicas(
    keycloak: Keycloak, redis: RedisServer, tmp_path: Path, envoy_factory: EnvoyFactory
) -> Iterator[tuple[EnvoyProcess, EnvoyProcess]]:
    warm_up(keycloak)
    started = Replicas(keycloak, redis, tmp_path)
    try:
        yield (
            envoy_factory(started.processes[0].grpc_port, timeout_s=3),
            envoy_factory(started.processes[1].grpc_port, timeout_s=3),
        )
    finally:
        started.stop()


def test_a_proof_used_at_one_replica_is_refused_at_the_other(
    replicas: tuple[EnvoyProcess, EnvoyProcess], client: DpopClient
) -> None:
    first, second = replicas
    proof = client.proof("/api/forms/6")

    assert client.get(first, "/api/forms/6", proof).status == 200
    assert_dpop_refusal(client.get(second, "/api/forms/6", proof))
    assert client.get(second, "/api/forms/6", client.proof("/api/forms/6")).status == 200


def test_a_provider_that_requires_dpop_refuses_bearer_tokens(
    replicas: tuple[EnvoyProcess, EnvoyProcess], keycloak: Keycloak
) -> None:
    reply = http_get(replicas[0], "/api/forms/7", token=access_token(keycloak, "bob"))

    assert_dpop_refusal(reply, error="invalid_token")
    no_token = http_get(replicas[0], "/api/forms/7")
    assert no_token.status == 401
    assert no_token.headers["www-authenticate"].startswith("DPoP ")


def test_with_redis_down_a_dpop_request_is_never_allowed(
    replicas: tuple[EnvoyProcess, EnvoyProcess], client: DpopClient, redis: RedisServer
) -> None:
    first, _ = replicas
    assert client.get(first, "/api/forms/8", client.proof("/api/forms/8")).status == 200
    redis.kill()

    for _ in range(5):
        reply = client.get(first, "/api/forms/8", client.proof("/api/forms/8"))
        assert reply.status in (401, 503), reply.body
