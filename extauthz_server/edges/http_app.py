"""The small HTTP side: liveness, readiness, metrics, the back-channel logout endpoint, and the
public keys of the identity tokens; and the logout endpoint alone, for a listener of its own."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from extauthz_server.core.identity_token import IdentityTokenSettings, jwks_document
from extauthz_server.ops.metrics import CONTENT_TYPE
from extauthz_server.revocation.endpoint import MAX_REQUEST_BYTES, BackchannelLogout

LOGOUT_PATH = "/backchannel-logout"
JWKS_PATH = "/.well-known/jwks.json"
# Upstreams may cache the keys this long; a verifier meeting an unknown `kid` refetches.
JWKS_MAX_AGE_S = 300


def build_http_app(
    is_ready: Callable[[], bool],
    render_metrics: Callable[[], bytes],
    logout: BackchannelLogout | None = None,
    identity_token: Callable[[], IdentityTokenSettings | None] | None = None,
) -> web.Application:
    """`identity_token` gives the settings in force (a reload may change them) or None."""

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        if is_ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "waiting for the identity provider"}, status=503)

    async def metrics(_request: web.Request) -> web.Response:
        response = web.Response(body=render_metrics())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    async def jwks(_request: web.Request) -> web.Response:
        settings = identity_token() if identity_token is not None else None
        if settings is None:
            raise web.HTTPNotFound
        return web.json_response(
            jwks_document(settings),
            headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE_S}"},
        )

    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get(JWKS_PATH, jwks)
    if logout is not None:
        app.router.add_post(LOGOUT_PATH, logout.handle)
    return app


def build_logout_app(logout: BackchannelLogout) -> web.Application:
    """Only the back-channel logout endpoint: what Keycloak must reach, and nothing else."""
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app.router.add_post(LOGOUT_PATH, logout.handle)
    return app
