"""The real gRPC adapter in front of an Authorizer with a typed fake IdentitySource.

Hostile-input tests build CheckRequests with extauthz_server._proto, turn them into
AuthRequests with grpc_service.to_auth_request and decide them with Authorizer.check: the
same path a Check takes in the server, minus the network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from extauthz_server._proto.envoy.config.core.v3 import base_pb2
from extauthz_server._proto.envoy.service.auth.v3 import external_auth_pb2
from extauthz_server.config.model import Config, authorizer_settings
from extauthz_server.core.authorizer import Authorizer
from extauthz_server.core.decision import Decision
from extauthz_server.core.identity import Identity, Inactive
from extauthz_server.core.request import AuthRequest
from extauthz_server.edges.grpc_service import to_auth_request
from extauthz_server.errors import ProviderRejectedClient, ProviderUnavailable
from tests.support.configs import seed_config


def _identity(subject: str, *roles: str, username: str | None = None) -> Identity:
    return Identity(
        subject=subject,
        username=username or subject,
        email=f"{subject}@example.com",
        client_id="web-app",
        scopes=frozenset({"openid"}),
        provider_roles=frozenset(roles),
        expires_at=None,
    )


# Token → what the provider says about it. Provider roles map (seed config) admin → admin,
# manager → creator, org manager → platformAdmin.
IDENTITIES: Mapping[str, Identity] = {
    "tok-admin": _identity("sub-admin", "admin"),
    "tok-creator": _identity("sub-creator", "manager"),
    "tok-orgman": _identity("sub-orgman", "org manager"),
    "tok-noroles": _identity("sub-noroles"),
    # Provider-controlled strings carrying a header injection: must never reach a header.
    "tok-evil": _identity("sub-evil\r\nx-auth-roles: admin", "manager", username="e\x00vil"),
}
INACTIVE_TOKENS = ("tok-inactive", "tok-expired")
PROVIDER_DOWN_TOKEN = "tok-down"
PROVIDER_REFUSES_US_TOKEN = "tok-refused"
ALL_TOKENS = (*IDENTITIES, *INACTIVE_TOKENS, PROVIDER_DOWN_TOKEN, PROVIDER_REFUSES_US_TOKEN)
IDENTITY_HEADERS = (
    "x-auth-subject",
    "x-auth-username",
    "x-auth-email",
    "x-auth-roles",
    "x-auth-client",
)
PUBLIC_ROUTES = frozenset({"health", "public"})


@dataclass
class FakeSource:
    """A typed in-memory IdentitySource that remembers every token it was asked about."""

    asked: list[str] = field(default_factory=list)

    async def resolve(
        self, token: str, timeout_s: float, provider: str | None = None
    ) -> Identity | Inactive:
        self.asked.append(token)
        if token == PROVIDER_DOWN_TOKEN:
            raise ProviderUnavailable("stand-in outage")
        if token == PROVIDER_REFUSES_US_TOKEN:
            raise ProviderRejectedClient("stand-in refuses our client")
        if token == "tok-expired":
            return Inactive.EXPIRED
        return IDENTITIES.get(token, Inactive.NOT_ACTIVE)


def hardening_config() -> Config:
    return seed_config("http://127.0.0.1:9/realms/demo")


@dataclass
class Harness:
    config: Config
    source: FakeSource
    authorizer: Authorizer

    @classmethod
    def create(cls, config: Config | None = None) -> Harness:
        config = config or hardening_config()
        source = FakeSource()
        return cls(config, source, Authorizer(authorizer_settings(config), source))

    def decide_auth(self, request: AuthRequest) -> Decision:
        return asyncio.run(self.authorizer.check(request, 0.1))

    def decide(self, request: external_auth_pb2.CheckRequest) -> Decision:
        """Through the adapter exactly as the servicer does it (to_auth_request, then check)."""
        return self.decide_auth(to_auth_request(request))


def check_request(
    path: str,
    *,
    method: str = "GET",
    host: str = "app.example",
    headers: Mapping[str, str] | None = None,
    header_map: Iterable[tuple[str, str | bytes]] | None = None,
) -> external_auth_pb2.CheckRequest:
    """A CheckRequest with either the `headers` map or (encode_raw_headers) the `header_map`;
    a bytes value goes into `raw_value`, as Envoy sends it."""
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.id = "hardening"
    http.method = method
    http.host = host
    http.path = path
    http.scheme = "http"
    http.protocol = "HTTP/1.1"
    if header_map is not None:
        entries = [(":authority", host), (":method", method), (":path", path), *header_map]
        for key, value in entries:
            if isinstance(value, bytes):
                http.header_map.headers.append(base_pb2.HeaderValue(key=key, raw_value=value))
            else:
                http.header_map.headers.append(base_pb2.HeaderValue(key=key, value=value))
    else:
        http.headers.update({":authority": host, ":method": method, ":path": path})
        http.headers.update(headers or {})
    return request


def comparable(decision: Decision) -> tuple[object, ...]:
    """Everything Envoy acts on, plus reason and route (the request id is not in a Decision)."""
    return (
        decision.allowed,
        decision.status,
        decision.reason,
        decision.route,
        decision.upstream_headers,
        decision.headers_to_remove,
        decision.response_headers,
        decision.body,
        dict(decision.metadata),
    )


def assert_safe(decision: Decision, source: FakeSource) -> None:
    """What holds for any input: a decision, and an allow only with a vouched-for identity.

    An allow on a route that is not public needs an Identity from the source, whose subject
    is what the upstream is told; on a public route without one, no identity header is set.
    Either way every configured identity header is set by us or removed.
    """
    assert decision.allowed is (decision.status == 200)
    if not decision.allowed:
        assert decision.upstream_headers == ()
        assert decision.status in (400, 401, 403, 503)
        return
    names = {name for name, _ in decision.upstream_headers}
    assert names | set(decision.headers_to_remove) >= set(IDENTITY_HEADERS)
    assert names.isdisjoint(decision.headers_to_remove)
    for name, value in decision.upstream_headers:
        assert not any((ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F for ch in value), name
    vouched = [IDENTITIES[t] for t in source.asked if t in IDENTITIES]
    set_subject = dict(decision.upstream_headers).get("x-auth-subject")
    if decision.route not in PUBLIC_ROUTES:
        assert vouched, f"allow on protected route {decision.route} without an identity"
    if set_subject is not None:
        assert set_subject in {identity.subject for identity in vouched}
    if not vouched:
        assert decision.upstream_headers == ()
