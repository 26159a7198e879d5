"""With the authorizer unreachable or silent, Envoy answers 503 and the upstream sees nothing."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from tests.support.echo_upstream import BackgroundEchoUpstream
from tests.support.envoy import LOOPBACK
from tests.support.envoy_fixture import EnvoyFactory
from tests.support.net import free_port

pytestmark = pytest.mark.envoy


def _status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback test URL
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def silent_authorizer_port() -> Iterator[int]:
    """A port whose kernel completes the TCP handshake but where nothing ever answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


def test_unreachable_authorizer_gives_503_and_nothing_reaches_upstream(
    envoy_factory: EnvoyFactory, echo_upstream: BackgroundEchoUpstream
) -> None:
    envoy = envoy_factory(free_port())
    path = f"/unreachable/{uuid.uuid4().hex}"

    assert _status_of(envoy.url(path)) == 503
    assert [r for r in echo_upstream.requests if r.path == path] == []


def test_silent_authorizer_times_out_to_503_and_nothing_reaches_upstream(
    envoy_factory: EnvoyFactory, echo_upstream: BackgroundEchoUpstream, silent_authorizer_port: int
) -> None:
    envoy = envoy_factory(silent_authorizer_port)
    path = f"/silent/{uuid.uuid4().hex}"

    assert _status_of(envoy.url(path)) == 503
    assert [r for r in echo_upstream.requests if r.path == path] == []


def test_echo_upstream_reports_what_it_received(echo_upstream: BackgroundEchoUpstream) -> None:
    # Guards the negative assertions above: the upstream does record what reaches it.
    url = echo_upstream.url("/probe?q=1")
    request = urllib.request.Request(url, headers={"X-Probe": "yes"})  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - loopback test URL
        assert resp.status == 200
    (received,) = [r for r in echo_upstream.requests if r.path == "/probe?q=1"]
    assert received.method == "GET"
    assert received.headers["x-probe"] == "yes"
