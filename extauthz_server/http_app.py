"""The small HTTP side: liveness, readiness, and the back-channel logout endpoint."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from extauthz_server.logout_endpoint import MAX_REQUEST_BYTES, BackchannelLogout

LOGOUT_PATH = "/backchannel-logout"


def build_http_app(
    is_ready: Callable[[], bool], logout: BackchannelLogout | None = None
) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        if is_ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "waiting for the identity provider"}, status=503)

    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if logout is not None:
        app.router.add_post(LOGOUT_PATH, logout.handle)
    return app
