"""A small permissions API on a loopback port: `GET /users/{sub}/permissions` (and `POST
/permissions` with a JSON body) answer `{"permissions": [...]}` from a table, with switches
for failures and a record of every request."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

from aiohttp import web

from tests.support.net import serve_on_loopback


class Fault(enum.Enum):
    NONE = "none"
    SERVER_ERROR = "server_error"  # 500
    SLOW = "slow"  # sleeps `delay_s`, then answers normally
    MALFORMED = "malformed"  # 200 with broken JSON
    WRONG_SHAPE = "wrong_shape"  # 200 with JSON that has no list at "permissions"
    NOT_FOUND = "not_found"  # 404 for every subject


@dataclass(frozen=True, slots=True)
class PermissionsCall:
    method: str
    raw_path: str
    subject: str | None  # decoded from the path, or the body's "sub" for POST
    authorization: str | None
    body: object = None


@dataclass
class PermissionsApi:
    # subject → permission names; a subject not here gets 404.
    permissions: dict[str, list[str]] = field(default_factory=dict)
    fault: Fault = Fault.NONE
    delay_s: float = 1.0
    # Decides whether an Authorization header value is accepted (401 if not); None: any.
    authorize: Callable[[str | None], bool] | None = None
    calls: list[PermissionsCall] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    # Set at the first request.
    received: asyncio.Event = field(default_factory=asyncio.Event)
    # Set on stop: slow answers end then, so stopping never waits out `delay_s`.
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url_template(self) -> str:
        return self.base_url + "/users/{sub}/permissions"

    @property
    def post_url(self) -> str:
        return self.base_url + "/permissions"

    @property
    def request_count(self) -> int:
        return len(self.calls)

    async def start(self) -> None:
        app = web.Application()
        # A catch-all route: the test reads the raw path itself, so it sees exactly what
        # the client sent (e.g. %2F inside a segment).
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self.port = await serve_on_loopback(app, self.port)

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        subject, body = None, None
        segments = request.raw_path.split("?", 1)[0].split("/")
        if request.method == "GET" and len(segments) == 4 and segments[1] == "users":
            subject = unquote(segments[2])
        elif request.method == "POST" and request.raw_path == "/permissions":
            body = await request.json()
            subject = body.get("sub") if isinstance(body, dict) else None
        authorization = request.headers.get("Authorization")
        self.calls.append(
            PermissionsCall(request.method, request.raw_path, subject, authorization, body)
        )
        self.received.set()
        if self.authorize is not None and not self.authorize(authorization):
            return web.json_response({"error": "invalid_token"}, status=401)
        fault = self.fault
        if fault is Fault.SLOW:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.delay_s):
                    await self._stopping.wait()
        elif fault is Fault.SERVER_ERROR:
            return web.Response(status=500, text="<html>oops</html>", content_type="text/html")
        elif fault is Fault.MALFORMED:
            return web.Response(text='{"permissions": [', content_type="application/json")
        elif fault is Fault.WRONG_SHAPE:
            return web.json_response({"permissions": {"Manager for Europe": True}})
        if fault is Fault.NOT_FOUND or subject is None or subject not in self.permissions:
            return web.Response(status=404, text=json.dumps({"error": "not_found"}))
        return web.json_response({"permissions": self.permissions[subject]})
