"""The HTTP edge decides each hostile request of the gRPC corpus as the gRPC edge does.

Each CheckRequest of the corpus is sent the way Envoy's `http_service` would send it over
HTTP/1.1 (the path under `/envoy`, the same headers as header lines, repeated ones as
repeated lines) and turned into an AuthRequest by the HTTP edge's adapter; the Authorizer
must answer exactly what it answers through the gRPC adapter. Requests that HTTP/1.1 cannot
carry (control characters, bytes that are not text, a target that is not a path) never
reach an HTTP server and are left out.
"""

from __future__ import annotations

import pytest

from extauthz_server._proto.envoy.service.auth.v3 import external_auth_pb2
from extauthz_server.core.request import AuthRequest
from extauthz_server.edges import http_authz
from tests.hardening.adapter import Harness, assert_safe, comparable
from tests.hardening.test_hostile_input import CORPUS


def _carriable(text: str) -> bool:
    return all(0x20 <= ord(ch) < 0x7F or ch == "\t" or ord(ch) >= 0x80 for ch in text)


def over_http(request: external_auth_pb2.CheckRequest) -> AuthRequest | None:
    """The HTTP edge's view of the request Envoy would send; None if HTTP cannot carry it."""
    http = request.attributes.request.http
    lines: list[tuple[str, str]] = [("host", http.host)]
    if http.headers:
        lines += [(k, v) for k, v in http.headers.items() if not k.startswith(":")]
    else:
        for header in http.header_map.headers:
            try:
                value = header.raw_value.decode() if header.raw_value else header.value
            except UnicodeDecodeError:
                return None
            if not header.key.startswith(":"):
                lines.append((header.key, value))
    if not all(_carriable(name) and _carriable(value) for name, value in lines):
        return None
    # A request line's target is origin-form here: Envoy puts the prefix before a path
    # that starts with `/` (any other would reach us as a 404, still no allow).
    if not _carriable(http.path) or " " in http.path or not http.path.startswith("/"):
        return None
    headers: dict[str, str] = {}
    for name, value in lines:  # as the HTTP server joins them
        key = name.lower()
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    return http_authz.to_auth_request(http.method, "/envoy" + http.path, headers, "192.0.2.1")


# In Envoy's gRPC `headers` map a capitalised key is some other header; HTTP header names
# are case-insensitive, so over HTTP `Authorization` is the Authorization header.
GRPC_MAP_ONLY = frozenset({"headers-map-capitalised-key"})
CARRIABLE = {
    name: case
    for name, case in CORPUS.items()
    if name not in GRPC_MAP_ONLY and over_http(case.hostile()) is not None
}


def test_most_of_the_corpus_can_be_sent_over_http() -> None:
    assert len(CARRIABLE) >= len(CORPUS) * 2 // 3


@pytest.mark.parametrize("name", CARRIABLE)
def test_the_http_edge_decides_as_the_grpc_edge(name: str) -> None:
    request = CARRIABLE[name].hostile()
    view = over_http(request)
    assert view is not None
    harness = Harness.create()

    over_grpc = Harness.create().decide(request)
    decision = harness.decide_auth(view)

    assert_safe(decision, harness.source)
    assert comparable(decision) == comparable(over_grpc)
