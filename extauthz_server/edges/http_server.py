"""A small HTTP/1.1 server for the authorization listener: an asyncio protocol over
`httptools` (llhttp, the parser Node.js uses). Measured here as a no-op it answers about three
times the requests per second of aiohttp's low-level server on one core, and the listener
answers nothing but small requests from a proxy, so it needs no more than this:

- keep-alive and pipelining (answers in request order, one at a time per connection);
- bounds: request line and headers (431 past `MAX_HEAD_BYTES`), a body (read and ignored;
  413 past `MAX_BODY_BYTES`), pipelined requests waiting (reading pauses), an idle
  connection and an unfinished request (closed, 408 for the latter);
- a malformed request or an upgrade is 400 and the connection is closed;
- a graceful stop: stop accepting, let answers under way finish, then close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast

import httptools

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024
MAX_PIPELINED = 16
# Answers handed back again and again (a handler's remembered allows) are serialised once.
MAX_WIRE_CACHE = 1024
IDLE_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    # The request target as sent (path and query, not decoded).
    target: str
    # Lower-cased names; repeated headers joined with commas.
    headers: Mapping[str, str]
    peer: str


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


Handler = Callable[[HttpRequest], Awaitable[HttpAnswer]]


class _RequestTooLarge(Exception):
    """Stops the parser at a bound (`_Connection._over_bound` says which)."""


class HttpServer:
    """Serves `handler` on one listening socket; `stop()` drains and closes."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._none_left = asyncio.Event()
        # id(answer) → (answer, its bytes on a kept-alive connection).
        self._wire: dict[int, tuple[HttpAnswer, bytes]] = {}

    def wire(self, answer: HttpAnswer, *, head: bool, close: bool) -> bytes:
        """The answer as bytes; the common form (a kept-alive GET or POST) is kept."""
        if head or close:
            return _serialise(answer, head=head, close=close)
        kept = self._wire.get(id(answer))
        if kept is not None and kept[0] is answer:
            return kept[1]
        data = _serialise(answer, head=False, close=False)
        if len(self._wire) >= MAX_WIRE_CACHE:
            self._wire.clear()
        self._wire[id(answer)] = (answer, data)
        return data

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def start(
        self,
        host: str,
        port: int,
        *,
        reuse_port: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> int:
        """Listen; with `tls`, over TLS (its context may move a handshake to a newer one)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self._handler, self),
            host,
            port,
            reuse_port=reuse_port or None,
            ssl=tls,
            # A handshake is bounded like a request, so no half-open connection lingers.
            ssl_handshake_timeout=REQUEST_TIMEOUT_S if tls is not None else None,
        )
        return int(self._server.sockets[0].getsockname()[1])

    def opened(self, connection: _Connection) -> None:
        self._connections.add(connection)
        self._none_left.clear()

    def closed(self, connection: _Connection) -> None:
        self._connections.discard(connection)
        if not self._connections:
            self._none_left.set()

    async def stop(self, grace_s: float) -> None:
        """Stop accepting; answers under way may finish within `grace_s`, then all close."""
        if self._server is None:
            return
        self._server.close()
        if not self._connections:
            self._none_left.set()
        for connection in list(self._connections):
            connection.close_when_idle()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                await self._none_left.wait()
        for connection in list(self._connections):
            connection.abort()
        await self._server.wait_closed()
        self._server = None


class _Connection(asyncio.Protocol):
    def __init__(self, handler: Handler, server: HttpServer) -> None:
        self._handler = handler
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._peer = ""
        self._pending: deque[tuple[HttpRequest, bool]] = deque()
        # One task per connection answers its requests in order; it waits on `_ready` while
        # there are none (cheaper than a task per request).
        self._worker: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._busy = False
        # One timer per connection, moved lazily: `_deadline` is when it should act.
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = math.inf
        self._writable = asyncio.Event()
        self._writable.set()
        self._closing = False
        # The status of a bound the request went past (431, 413), once it has.
        self._over_bound: int | None = None
        # Stopping: answer what is under way, then close.
        self._draining = False
        self._reading_paused = False
        self._begin()

    # -- the transport ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass, only alike).
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if isinstance(peer, tuple) else ""
        self._server.opened(self)
        self._arm(IDLE_TIMEOUT_S)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.closed(self)
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        if self._worker is not None:
            self._worker.cancel()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            # Raised from a callback, a bound shows up wrapped as a parser error.
            self._refuse(self._over_bound or HTTPStatus.BAD_REQUEST)
        except httptools.HttpParserUpgrade:
            self._refuse(HTTPStatus.BAD_REQUEST)

    # -- httptools callbacks ---------------------------------------------------------------

    def _begin(self) -> None:
        self._in_message = False
        self._target = bytearray()
        self._headers: dict[str, str] = {}
        self._head_bytes = 0
        self._body_bytes = 0

    def on_message_begin(self) -> None:
        self._begin()
        self._in_message = True
        # A request has this long to arrive whole (no slow trickle holds a connection).
        self._arm(REQUEST_TIMEOUT_S)

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        self._target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value))
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else f"{previous},{text}"

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > MAX_BODY_BYTES:
            self._over_bound = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
            raise _RequestTooLarge

    def on_message_complete(self) -> None:
        request = HttpRequest(
            method=self._parser.get_method().decode("ascii", "replace"),
            target=self._target.decode("latin-1"),
            headers=self._headers,
            peer=self._peer,
        )
        self._pending.append((request, bool(self._parser.should_keep_alive())))
        self._begin()
        self._deadline = math.inf
        if len(self._pending) >= MAX_PIPELINED and self._transport is not None:
            self._transport.pause_reading()
            self._reading_paused = True
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._answer_all())
        elif self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            self._over_bound = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
            raise _RequestTooLarge

    # -- answering ---------------------------------------------------------------------------

    async def _answer_all(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self._closing:
                if not self._pending:
                    self._busy = False
                    if not self._in_message:
                        self._arm(IDLE_TIMEOUT_S)
                    self._ready = loop.create_future()
                    await self._ready
                    continue
                self._busy = True
                request, keep_alive = self._pending.popleft()
                if self._reading_paused and self._transport is not None:
                    self._transport.resume_reading()
                    self._reading_paused = False
                try:
                    answer = await self._handler(request)
                except Exception:
                    log.exception("the HTTP handler failed; answering 503")
                    answer = _UNAVAILABLE
                await self._writable.wait()
                if self._closing:
                    return
                keep_alive = keep_alive and not self._draining
                self._write(answer, request.method == "HEAD", keep_alive)
                if not keep_alive:
                    self._close()
                    return
        finally:
            self._worker = None
            self._busy = False

    def _write(self, answer: HttpAnswer, head: bool, keep_alive: bool) -> None:
        assert self._transport is not None  # noqa: S101 - set in connection_made
        self._transport.write(self._server.wire(answer, head=head, close=not keep_alive))

    def _refuse(self, status: int) -> None:
        """A request we will not read: answer it and close, whatever is still pending."""
        if self._transport is None or self._closing:
            return
        self._pending.clear()
        body = f'{{"error":"invalid_request","error_description":"{HTTPStatus(status).phrase}"}}'
        answer = HttpAnswer(status, (("content-type", "application/json"),), body.encode())
        self._transport.write(_serialise(answer, head=False, close=True))
        self._close()

    def _arm(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + seconds
        if self._timer is None or self._timer.when() > self._deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(self._deadline, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        if self._deadline == math.inf:
            return  # nothing to wait for
        loop = asyncio.get_running_loop()
        if self._busy or loop.time() < self._deadline:
            # Not yet, or an answer under way (the handler bounds its own time): look again.
            self._timer = loop.call_at(max(self._deadline, loop.time() + 1.0), self._timed_out)
            return
        if self._in_message:
            self._refuse(HTTPStatus.REQUEST_TIMEOUT)
        else:
            self._close()

    def close_when_idle(self) -> None:
        """Stopping: close now if idle, else after the answer under way (which says so)."""
        self._draining = True
        if not self._busy:
            self._close()
        else:
            # Requests not yet begun are dropped; the proxy retries them elsewhere.
            self._pending.clear()

    def _close(self) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def abort(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.abort()


_UNAVAILABLE = HttpAnswer(
    HTTPStatus.SERVICE_UNAVAILABLE,
    (("content-type", "application/json"),),
    b'{"error":"temporarily_unavailable","error_description":"Authorization failed; try again"}',
)


def _serialise(answer: HttpAnswer, *, head: bool, close: bool) -> bytes:
    if any(_breaks_lines(name) or _breaks_lines(value) for name, value in answer.headers):
        # The core never builds such a header; if one came, it must not split the answer,
        # and leaving it out could let a client's copy through: refuse instead.
        log.error("an answer held a header with a line break; answering 503")
        answer = _UNAVAILABLE
    try:
        phrase = HTTPStatus(answer.status).phrase
    except ValueError:
        phrase = ""
    lines = [f"HTTP/1.1 {answer.status} {phrase}"]
    lines += [f"{name}: {value}" for name, value in answer.headers]
    lines.append(f"content-length: {len(answer.body)}")
    if close:
        lines.append("connection: close")
    head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
    return head_bytes if head else head_bytes + answer.body


def _breaks_lines(text: str) -> bool:
    return "\r" in text or "\n" in text or "\0" in text
