"""Two replicas behind real Envoy (envoy/envoy.yaml: gRPC health checks and outlier
detection), one killed under load: the clients barely notice, and no request without an
identity is ever let through."""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.e2e.conftest import access_token, warm_up
from tests.support.authz_process import AuthzProcess
from tests.support.configs import seed_config_text
from tests.support.echo_upstream import BackgroundEchoUpstream
from tests.support.envoy import (
    EnvoyProcess,
    point_cluster_at_loopback,
    render_loopback_config,
    run_envoy,
)
from tests.support.keycloak import Keycloak

pytestmark = [pytest.mark.keycloak, pytest.mark.envoy]

CLIENTS = 4
BEFORE_KILL_S = 2.0
AFTER_KILL_S = 4.0
# Every tenth request carries no token: it must be refused, whatever happens to the replicas.
ANONYMOUS_EVERY = 10


@dataclass
class Tally:
    with_token: Counter[int] = field(default_factory=Counter)
    without_token: Counter[int] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, anonymous: bool, status: int) -> None:
        with self.lock:
            (self.without_token if anonymous else self.with_token)[status] += 1


@pytest.fixture
def replicas(
    keycloak: Keycloak, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[AuthzProcess]]:
    warm_up(keycloak)
    text = seed_config_text(keycloak.issuer, ttl_seconds=60, timeout_ms=200)
    started = [AuthzProcess.start(text, tmp_path_factory.mktemp(f"replica{i}")) for i in (0, 1)]
    yield started
    for replica in started:
        replica.stop()


@pytest.fixture
def envoy(
    replicas: list[AuthzProcess],
    echo_upstream: BackgroundEchoUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EnvoyProcess]:
    config = render_loopback_config(
        ext_authz_port=replicas[0].grpc_port, upstream_port=echo_upstream.port
    )
    (cluster,) = [c for c in config["static_resources"]["clusters"] if c["name"] == "extauthz"]
    point_cluster_at_loopback(cluster, *(r.grpc_port for r in replicas))
    process = run_envoy(config, tmp_path_factory.mktemp("envoy-two-replicas"))
    yield process
    process.stop()


def client(envoy: EnvoyProcess, token: str, tally: Tally, stop: threading.Event) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", envoy.listen_port, timeout=10)
    sent = 0
    try:
        while not stop.is_set():
            sent += 1
            anonymous = sent % ANONYMOUS_EVERY == 0
            headers = {"Host": "app.example"}
            if not anonymous:
                headers["Authorization"] = f"Bearer {token}"
            try:
                connection.request("GET", "/api/forms", headers=headers)
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                status = 0  # the connection to Envoy itself failed
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", envoy.listen_port, timeout=10)
            tally.add(anonymous, status)
    finally:
        connection.close()


def test_killing_one_of_two_replicas_under_load_fails_at_most_one_percent(
    replicas: list[AuthzProcess], envoy: EnvoyProcess, keycloak: Keycloak
) -> None:
    token = access_token(keycloak, "bob")
    tally, stop = Tally(), threading.Event()
    threads = [
        threading.Thread(target=client, args=(envoy, token, tally, stop), daemon=True)
        for _ in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()

    time.sleep(BEFORE_KILL_S)
    replicas[0].process.kill()
    time.sleep(AFTER_KILL_S)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)

    allowed = tally.with_token[200]
    failed = sum(tally.with_token.values()) - allowed
    assert allowed > 100, tally  # the load was real
    assert failed <= 0.01 * sum(tally.with_token.values()), tally
    assert tally.without_token[200] == 0, tally
    assert sum(tally.without_token.values()) > 10, tally
