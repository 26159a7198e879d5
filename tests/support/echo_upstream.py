"""An aiohttp upstream that answers every request 200 with what it received, and records it.

Response body (JSON):
    {"method": "GET", "path": "/a?b=c", "headers": {"x-user": "alice", ...},
     "raw_headers": [["x-user", "alice"], ...]}

`path` is the raw request target, query included, exactly as Envoy sent it. `headers` keys
are lower-cased; a repeated header's values are joined with ", " in arrival order, as RFC 9110
§5.3 allows. `raw_headers` keeps every line separately, for tests that must tell one header
carrying a comma from two headers (header smuggling).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

from aiohttp import web

from tests.support.net import serve_on_loopback

LOOPBACK = "127.0.0.1"
_START_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class EchoedRequest:
    method: str
    path: str
    headers: dict[str, str]
    raw_headers: tuple[tuple[str, str], ...]

    def as_json(self) -> dict[str, object]:
        return {
            "method": self.method,
            "path": self.path,
            "headers": self.headers,
            "raw_headers": [list(pair) for pair in self.raw_headers],
        }


def _echoed(request: web.BaseRequest) -> EchoedRequest:
    raw = tuple(
        (name.decode("latin-1").lower(), value.decode("latin-1"))
        for name, value in request.raw_headers
    )
    headers: dict[str, str] = {}
    for name, value in raw:
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return EchoedRequest(
        method=request.method, path=request.raw_path, headers=headers, raw_headers=raw
    )


class EchoUpstream:
    """Async lifecycle: `await start()` binds 127.0.0.1 on a kernel-chosen port."""

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._lock = threading.Lock()
        self._received: list[EchoedRequest] = []
        self.port = 0

    @property
    def requests(self) -> tuple[EchoedRequest, ...]:
        """Every request received so far, oldest first (safe to read from another thread)."""
        with self._lock:
            return tuple(self._received)

    def url(self, path: str = "/") -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        echoed = _echoed(request)
        with self._lock:
            self._received.append(echoed)
        return web.json_response(echoed.as_json())

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self.port = await serve_on_loopback(app)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class BackgroundEchoUpstream(EchoUpstream):
    """The same server on its own event loop in a daemon thread, for sync tests and fixtures."""

    def __init__(self) -> None:
        super().__init__()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    def start_in_thread(self) -> None:
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._serve(),), name="echo-upstream", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_S):
            raise TimeoutError(f"echo upstream not started after {_START_TIMEOUT_S:.0f}s")
        if self._failure is not None:
            raise RuntimeError("echo upstream failed to start") from self._failure

    def stop_thread(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop_requested is not None:
            self._loop.call_soon_threadsafe(self._stop_requested.set)
        self._thread.join(_START_TIMEOUT_S)
        self._thread = None

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        try:
            await self.start()
        except BaseException as exc:
            # Handed to start_in_thread() to re-raise; an exception escaping the thread
            # would only reach threading.excepthook.
            self._failure = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop_requested.wait()
        finally:
            await self.stop()
