"""Instant revocation with the real Keycloak: its signed back-channel logout token reaches
process A, and process B (sharing only Redis) denies the token within a second."""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import grpc
import pytest

from extauthz_server._proto.envoy.service.auth.v3 import external_auth_pb2
from tests.support.authz_process import AuthzProcess
from tests.support.check_requests import CHECK_METHOD, check_request
from tests.support.configs import seed_config_text
from tests.support.keycloak import Keycloak
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.keycloak


def check_status(process: AuthzProcess, token: str) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{process.grpc_port}") as channel:
        check = channel.unary_unary(
            CHECK_METHOD,
            request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
            response_deserializer=external_auth_pb2.CheckResponse.FromString,
        )
        reply = check(check_request("/api/orders", token=token), timeout=5)
    return 200 if reply.HasField("ok_response") else reply.denied_response.status.code


def http_status(process: AuthzProcess, token: str) -> int:
    """The HTTP authorization listener's answer, asked as Envoy's `http_service` asks."""
    connection = http.client.HTTPConnection("127.0.0.1", process.http_authz_port, timeout=5)
    try:
        connection.request("GET", "/envoy/api/orders", headers={"authorization": f"Bearer {token}"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def denied_within_a_second(status: Callable[[], int]) -> tuple[int, float]:
    """Ask until the answer is not 200 or a second has passed: (the last status, seconds)."""
    started = time.monotonic()
    statuses = [status()]
    while statuses[-1] == 200 and time.monotonic() - started < 1.0:
        time.sleep(0.02)
        statuses.append(status())
    return statuses[-1], time.monotonic() - started


@pytest.fixture
def two_replicas(
    keycloak: Keycloak, redis_server: RedisServer, tmp_path: Path
) -> Iterator[tuple[AuthzProcess, AuthzProcess]]:
    # A cache TTL of an hour: only the logout path can explain a denial within a second.
    text = seed_config_text(
        keycloak.issuer,
        ttl_seconds=3600,
        timeout_ms=1000,
        provider={"logout_audiences": ["web-app"]},
        cache={"redis_url": redis_server.url},
        server={"http_authz_listen": "127.0.0.1:0"},
    )
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = AuthzProcess.start(text, tmp_path / "a")
    second = AuthzProcess.start(text, tmp_path / "b")
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


@pytest.fixture
def logout_url_on(
    keycloak: Keycloak, two_replicas: tuple[AuthzProcess, AuthzProcess]
) -> Iterator[str]:
    """Point web-app's back-channel logout URL at replica A, and restore it afterwards."""
    original = keycloak.client_representation("web-app")
    url = f"http://127.0.0.1:{two_replicas[0].http_port}/backchannel-logout"
    changed = dict(original)
    changed["frontchannelLogout"] = False
    changed["attributes"] = {
        **original.get("attributes", {}),
        "backchannel.logout.url": url,
        "backchannel.logout.session.required": "true",
    }
    keycloak.update_client(changed)
    try:
        yield url
    finally:
        keycloak.update_client(original)


def test_logout_in_keycloak_denies_the_token_on_another_replica_within_a_second(
    keycloak: Keycloak, two_replicas: tuple[AuthzProcess, AuthzProcess], logout_url_on: str
) -> None:
    first, second = two_replicas
    token = keycloak.password_grant("dave")["access_token"]
    assert check_status(first, token) == 200
    assert check_status(second, token) == 200  # from Redis, now in B's L1 too

    keycloak.logout_user("dave")
    status, elapsed = denied_within_a_second(partial(check_status, second, token))

    assert status == 401, f"still {status} {elapsed:.2f}s after the logout"
    print(f"back-channel logout → denial on the other replica: {elapsed * 1000:.0f} ms")
    log = "\n".join(first.log_lines())
    assert '"message": "back-channel logout"' in log
    assert token not in log
    assert token not in "\n".join(second.log_lines())


def test_logout_in_keycloak_ends_the_answers_repeated_over_http_on_every_replica(
    keycloak: Keycloak, two_replicas: tuple[AuthzProcess, AuthzProcess], logout_url_on: str
) -> None:
    # Asked three times, each replica answers the third request from the allow it kept.
    token = keycloak.password_grant("dave")["access_token"]
    for replica in two_replicas:
        assert [http_status(replica, token) for _ in range(3)] == [200, 200, 200]

    keycloak.logout_user("dave")
    outcomes = [denied_within_a_second(partial(http_status, r, token)) for r in two_replicas]

    for status, elapsed in outcomes:
        assert status == 401, f"still {status} {elapsed:.2f}s after the logout"
