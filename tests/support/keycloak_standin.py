"""A Keycloak stand-in for what the real server cannot do on cue: outages, slowness, bad bodies.

It speaks the same endpoints as Keycloak (discovery and token introspection, shapes from
shared/keycloak/) and answers from a table of token → introspection document.
"""

from __future__ import annotations

import asyncio
import enum
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiohttp import web

from tests.support.net import serve_on_loopback


def active_document(
    username: str,
    roles: Iterable[str],
    *,
    subject: str | None = None,
    lifetime_s: int = 300,
    **extra: object,
) -> dict[str, object]:
    """What Keycloak answers for an active access token of `username` with these realm roles
    (its default roles beside them); `sub` is `sub-<username>` unless given."""
    return {
        "active": True,
        "token_type": "Bearer",
        "sub": subject or f"sub-{username}",
        "preferred_username": username,
        "username": username,
        "email": f"{username}@example.com",
        "client_id": "web-app",
        "exp": int(time.time()) + lifetime_s,
        "scope": "openid email profile",
        "realm_access": {"roles": ["default-roles-demo", "offline_access", *roles]},
        **extra,
    }


class Fault(enum.Enum):
    NONE = "none"
    SLOW = "slow"  # sleeps `delay_s` before answering
    SERVER_ERROR = "server_error"  # 500 with an HTML body
    SERVER_ERROR_ONCE = "server_error_once"  # 502 once, then normal
    HTML = "html"  # 200 with text/html, as a misrouted proxy would
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    REJECT_CLIENT_OLD = "reject_client_old"  # Keycloak <= 26.6: 401 invalid_request
    REJECT_CLIENT_NEW = "reject_client_new"  # Keycloak >= 26.7: 401 invalid_client
    CLIENT_NOT_ALLOWED = "client_not_allowed"  # 403 for a public client
    RESET = "reset"  # drops the connection without an answer
    CHUNKED = "chunked"  # a correct answer, sent in two chunks with a pause between them


@dataclass
class IntrospectionCall:
    form: dict[str, str]
    authorization: str | None
    traceparent: str | None = None


@dataclass
class KeycloakStandIn:
    documents: dict[str, dict[str, object]] = field(default_factory=dict)
    fault: Fault = Fault.NONE
    delay_s: float = 1.0
    calls: list[IntrospectionCall] = field(default_factory=list)
    realm: str = "demo"
    port: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/realms/{self.realm}"

    @property
    def introspection_endpoint(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/token/introspect"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(
            f"/realms/{self.realm}/.well-known/openid-configuration", self._discovery
        )
        app.router.add_post(
            f"/realms/{self.realm}/protocol/openid-connect/token/introspect", self._introspect
        )
        self._runner, self.port = await serve_on_loopback(app, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _discovery(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "introspection_endpoint": self.introspection_endpoint,
                "token_endpoint": f"{self.issuer}/protocol/openid-connect/token",
                "introspection_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
            }
        )

    async def _introspect(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        form = {key: str(value) for key, value in (await request.post()).items()}
        self.calls.append(
            IntrospectionCall(
                form, request.headers.get("Authorization"), request.headers.get("traceparent")
            )
        )
        fault = self.fault
        if fault is Fault.SLOW:
            await asyncio.sleep(self.delay_s)
        elif fault is Fault.SERVER_ERROR:
            return web.Response(
                status=500, text="<html>Internal error</html>", content_type="text/html"
            )
        elif fault is Fault.SERVER_ERROR_ONCE:
            self.fault = Fault.NONE
            return web.Response(
                status=502, text="<html>Bad gateway</html>", content_type="text/html"
            )
        elif fault is Fault.HTML:
            return web.Response(text="<html><body>Login</body></html>", content_type="text/html")
        elif fault is Fault.MALFORMED_JSON:
            return web.Response(text='{"active": tru', content_type="application/json")
        elif fault is Fault.NOT_AN_OBJECT:
            return web.Response(text='["active", true]', content_type="application/json")
        elif fault is Fault.REJECT_CLIENT_OLD:
            return _error(401, "invalid_request", "Authentication failed.")
        elif fault is Fault.REJECT_CLIENT_NEW:
            return _error(401, "invalid_client", "Invalid client or Invalid client credentials")
        elif fault is Fault.CLIENT_NOT_ALLOWED:
            return _error(403, "invalid_request", "Client not allowed.")
        elif fault is Fault.RESET:
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        document = self.documents.get(form.get("token", ""), {"active": False})
        if fault is Fault.CHUNKED:
            return await in_two_chunks(request, json.dumps(document).encode())
        return web.json_response(document)


async def in_two_chunks(request: web.Request, body: bytes) -> web.StreamResponse:
    """A JSON answer sent in two chunks with a pause between them."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    await asyncio.sleep(0.05)
    await response.write(body[len(body) // 2 :])
    await response.write_eof()
    return response


def _error(status: int, error: str, description: str) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": error, "error_description": description}),
        content_type="application/json",
    )
