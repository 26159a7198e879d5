"""The small HTTP side: liveness, readiness, metrics, and the back-channel logout endpoint."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from extauthz_server.logout_endpoint import MAX_REQUEST_BYTES, BackchannelLogout
from extauthz_server.metrics import CONTENT_TYPE

LOGOUT_PATH = "/backchannel-logout"


def build_http_app(
    is_ready: Callable[[], bool],
    render_metrics: Callable[[], bytes],
    logout: BackchannelLogout | None = None,
) -> web.Application:
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

    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if logout is not None:
        app.router.add_post(LOGOUT_PATH, logout.handle)
    return app
