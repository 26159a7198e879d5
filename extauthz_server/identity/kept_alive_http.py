"""A lean HTTP/1.1 client that POSTs small bodies over kept-alive connections, pooled per
origin under one bound: the transport of token introspection, our hottest outbound call,
where a general client costs more CPU than the decision it serves."""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import quote, urlsplit

import httptools

from extauthz_server.identity.provider_http import (
    SERVER_CLOSED,
    TLS_FAILED,
    connect_failure_reason,
)

NOT_HTTP = "the answer is not HTTP"
HEAD_TOO_LONG = "the answer's headers are too long"
NOT_HTTP_URL = "not an http(s) URL"
CLIENT_CLOSED = "the client is closed"

MAX_HEAD_BYTES = 64 * 1024
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_IDLE_TIMEOUT_S = 30.0
# How long close() waits for the connections to finish closing (TLS close_notify).
CLOSE_WAIT_S = 1.0
# What aiohttp's `content_type` gives when the header is absent or not a media type.
_DEFAULT_MEDIA_TYPE = "application/octet-stream"
# RFC 3986 pchar and "/": kept as they are; anything else in a path is percent-encoded.
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"

_Origin = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    # The media type alone, lower-cased, as aiohttp's `content_type` gives it.
    content_type: str
    # At most max_body_bytes + 1 bytes: one past the bound says the answer was longer.
    body: bytes


class HttpRequestFailed(Exception):
    """No answer came; `reason` says why, in words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _ClosedBeforeAnswer(HttpRequestFailed):
    """The connection closed before a byte of the answer arrived."""


@dataclass(frozen=True, slots=True)
class _Target:
    origin: _Origin
    # The request line and the Host header.
    head: str


class KeptAliveHttp:
    """POSTs over kept-alive HTTP/1.1 connections: at most `max_connections` open in all,
    idle ones reused most recent first and closed after `idle_timeout_s`. A caller finding
    every connection busy waits for one; it bounds that wait with its own timeout."""

    def __init__(
        self,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        tls: ssl.SSLContext | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_connections = max_connections
        self._idle_timeout_s = idle_timeout_s
        self._tls = tls
        self._now = now
        self._targets: dict[str, _Target] = {}
        self._open: set[_Connection] = set()
        self._connecting = 0
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def open_connections(self) -> int:
        """Connections open or being opened, busy or idle."""
        return len(self._open) + self._connecting

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], max_body_bytes: int
    ) -> HttpAnswer:
        """POST `body` with `headers` (Host and Content-Length are added) and read the answer.

        A request on a reused connection that the server closed before answering (it closed
        the idle connection as we sent: the keep-alive race) is sent once more on a fresh
        connection, so only requests without side effects belong here.
        Raises HttpRequestFailed.
        """
        target = self._target(url)
        request = _request(target, body, headers)
        connection, reused = await self._acquire(target.origin, fresh=False)
        try:
            return await self._exchange(connection, request, max_body_bytes)
        except _ClosedBeforeAnswer:
            if not reused:
                raise
        connection, _ = await self._acquire(target.origin, fresh=True)
        return await self._exchange(connection, request, max_body_bytes)

    async def close(self) -> None:
        """Close every connection; later requests fail."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        connections = list(self._open)
        for connection in connections:
            connection.close()
        if connections:
            await asyncio.wait([c.lost for c in connections], timeout=CLOSE_WAIT_S)
        for connection in connections:
            if not connection.lost.done():
                connection.abort()

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            target = _parse_target(url)
            if len(self._targets) >= 64:
                self._targets.clear()
            self._targets[url] = target
        return target

    async def _exchange(
        self, connection: _Connection, request: bytes, max_body_bytes: int
    ) -> HttpAnswer:
        try:
            answer = await connection.exchange(request, max_body_bytes)
        except BaseException:
            # Cancelled or failed mid-way: what is left on the wire is unknown.
            connection.abort()
            raise
        if connection.reusable and not self._closed:
            self._release(connection)
        else:
            connection.close()
        return answer

    async def _acquire(self, origin: _Origin, *, fresh: bool) -> tuple[_Connection, bool]:
        """A connection to `origin` and whether it was idle; `fresh`: a new one."""
        first_turn = True
        while True:
            if self._closed:
                raise HttpRequestFailed(CLIENT_CLOSED)
            if not fresh:
                idle = self._take_idle(origin)
                if idle is not None:
                    return idle, True
            if self.open_connections < self._max_connections or self._evict_idle():
                return await self._connect(origin), False
            await self._wait_turn(first_turn)
            first_turn = False

    def _take_idle(self, origin: _Origin) -> _Connection | None:
        stack = self._idle.get(origin)
        while stack:
            connection = stack.pop()
            connection.idle = False
            if self._now() - connection.idle_since < self._idle_timeout_s:
                return connection
            connection.close()
        return None

    def _evict_idle(self) -> bool:
        """Close the longest idle connection, of any origin, to make room for a new one."""
        stacks = [stack for stack in self._idle.values() if stack]
        if not stacks:
            return False
        min(stacks, key=lambda stack: stack[0].idle_since)[0].close()
        return True

    async def _wait_turn(self, first_turn: bool) -> None:
        waiter = asyncio.get_running_loop().create_future()
        # One woken but beaten to the connection by a newcomer keeps its place in line.
        if first_turn:
            self._waiters.append(waiter)
        else:
            self._waiters.appendleft(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._wake_one()  # the turn given to us goes to the next in line
            raise

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _connect(self, origin: _Origin) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = self._tls_context() if scheme == "https" else None
        self._connecting += 1
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(origin, self._forget, loop),
                host,
                port,
                ssl=tls,
                # SNI and the hostname check are on the URL's host.
                server_hostname=host if tls is not None else None,
            )
        except OSError as exc:
            self._wake_one()
            raise HttpRequestFailed(connect_failure_reason(exc)) from exc
        except BaseException:
            self._wake_one()
            raise
        finally:
            self._connecting -= 1
        if connection.closed:
            raise HttpRequestFailed(SERVER_CLOSED)
        self._open.add(connection)
        if self._closed:
            connection.close()
            raise HttpRequestFailed(CLIENT_CLOSED)
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            # Made once: loading the trusted CAs (SSL_CERT_FILE, SSL_CERT_DIR or the
            # system's) takes milliseconds.
            self._tls = ssl.create_default_context()
        return self._tls

    def _release(self, connection: _Connection) -> None:
        connection.idle = True
        connection.idle_since = self._now()
        self._idle.setdefault(connection.origin, []).append(connection)
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(
                self._idle_timeout_s, self._close_expired
            )
        self._wake_one()

    def _close_expired(self) -> None:
        """Close the connections idle too long; again when the next one will be."""
        self._sweep = None
        now = self._now()
        next_expiry: float | None = None
        for stack in self._idle.values():
            # Oldest at the bottom: reuse takes from the top.
            while stack and now - stack[0].idle_since >= self._idle_timeout_s:
                stack[0].close()
            if stack:
                expiry = stack[0].idle_since + self._idle_timeout_s
                next_expiry = expiry if next_expiry is None else min(next_expiry, expiry)
        if next_expiry is not None:
            self._sweep = asyncio.get_running_loop().call_later(
                max(next_expiry - now, 0.01), self._close_expired
            )

    def _forget(self, connection: _Connection) -> None:
        """`connection` closed (by either side): its place in the bound is free."""
        self._open.discard(connection)
        if connection.idle:
            connection.idle = False
            self._idle[connection.origin].remove(connection)
        self._wake_one()


class _Connection(asyncio.Protocol):
    """One connection, reading one answer at a time with httptools."""

    def __init__(
        self,
        origin: _Origin,
        on_close: Callable[[_Connection], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.origin = origin
        self.closed = False
        self.idle = False
        self.idle_since = 0.0
        self.reusable = False
        self.lost: asyncio.Future[None] = loop.create_future()
        self._on_close = on_close
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[HttpAnswer] | None = None
        self._max_body = 0
        self._began = False
        self._start_answer()

    def _start_answer(self) -> None:
        self._head_bytes = 0
        self._headers_done = False
        self._status = 0
        self._content_type: bytes | None = None
        # Content-Length or chunked: the answer's end is known without a close.
        self._delimited = False
        self._body: list[bytes] = []
        self._received = 0

    async def exchange(self, request: bytes, max_body_bytes: int) -> HttpAnswer:
        transport = self._transport
        if transport is None or self.closed:
            raise _ClosedBeforeAnswer(SERVER_CLOSED)
        self._start_answer()
        self._max_body = max_body_bytes
        self._began = False
        self.reusable = False
        answer: asyncio.Future[HttpAnswer] = self._loop.create_future()
        self._answer = answer
        # A request is a few kilobytes: the transport buffers it, no need to wait for drain.
        transport.write(request)
        return await answer

    def close(self) -> None:
        """Close after what was written is sent (and TLS says goodbye)."""
        if self._mark_closed() and self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Close at once, unsent bytes dropped; also ends a close still under way."""
        self._mark_closed()
        if self._transport is not None and not self.lost.done():
            self._transport.abort()

    def _mark_closed(self) -> bool:
        """Tell the pool, once, that this connection is gone; False if it knew."""
        if self.closed:
            return False
        self.closed = True
        self._on_close(self)
        return True

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._answer is None:
            # Nothing was asked: bytes out of turn (a 408 before an idle close, or the rest
            # of an answer cut at the body bound) end the connection.
            self.reusable = False
            self.abort()
            return
        self._began = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._fail(HttpRequestFailed(NOT_HTTP))
            return
        if not self._headers_done:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._fail(HttpRequestFailed(HEAD_TOO_LONG))

    def eof_received(self) -> bool | None:
        return None  # close; connection_lost tells whether the answer was whole

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self._mark_closed()
        if self._answer is not None:
            if exc is None and self._headers_done and not self._delimited:
                # A body without a length ends where the connection does (RFC 9112 §6.3).
                self._finish(reusable=False)
            elif isinstance(exc, ssl.SSLError):
                self._fail(HttpRequestFailed(TLS_FAILED))
            elif self._began:
                self._fail(HttpRequestFailed(SERVER_CLOSED))
            else:
                self._fail(_ClosedBeforeAnswer(SERVER_CLOSED))

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._answer is None:
            self.reusable = False  # more after the answer: not a connection to reuse

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-type":
            if self._content_type is None:
                self._content_type = value
        elif name == b"content-length" or (
            name == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            self._delimited = True

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._status = self._parser.get_status_code()

    def on_body(self, chunk: bytes) -> None:
        if self._answer is None:
            return
        self._body.append(chunk)
        self._received += len(chunk)
        if self._received > self._max_body:
            self._finish(reusable=False)  # the rest is never read: the connection closes

    def on_message_complete(self) -> None:
        if self._answer is None:
            return
        if self._status < 200:
            self._start_answer()  # an interim (1xx) answer: the final one follows
            return
        parser = self._parser
        self._finish(reusable=parser.should_keep_alive() and parser.get_http_version() == "1.1")

    def _finish(self, *, reusable: bool) -> None:
        answer, self._answer = self._answer, None
        self.reusable = reusable
        if answer is not None and not answer.done():
            body = b"".join(self._body)[: self._max_body + 1]
            answer.set_result(HttpAnswer(self._status, _media_type(self._content_type), body))

    def _fail(self, error: HttpRequestFailed) -> None:
        answer, self._answer = self._answer, None
        self.reusable = False
        if answer is not None and not answer.done():
            answer.set_exception(error)
        self.abort()


def _parse_target(url: str) -> _Target:
    try:
        parts = urlsplit(url)
        port = parts.port
        host = (parts.hostname or "").encode("idna").decode("ascii")
    except ValueError as exc:  # UnicodeError included
        raise HttpRequestFailed(NOT_HTTP_URL) from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not host:
        raise HttpRequestFailed(NOT_HTTP_URL)
    default_port = 443 if scheme == "https" else 80
    authority = f"[{host}]" if ":" in host else host
    if port is not None and port != default_port:
        authority = f"{authority}:{port}"
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        path = f"{path}?{quote(parts.query, safe=_PATH_SAFE + '?')}"
    return _Target(
        (scheme, host, port or default_port), f"POST {path} HTTP/1.1\r\nHost: {authority}\r\n"
    )


def _request(target: _Target, body: bytes, headers: Mapping[str, str]) -> bytes:
    fields = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    # Each field brings exactly one CR and one LF: any other would split a header in two.
    if fields.count("\r") != len(headers) or fields.count("\n") != len(headers):
        raise ValueError("a header name or value holds a line break")
    head = f"{target.head}{fields}Content-Length: {len(body)}\r\n\r\n"
    return head.encode("latin-1") + body


def _media_type(raw: bytes | None) -> str:
    """`type/subtype` of a Content-Type value, lower-cased, parameters dropped."""
    if raw is None:
        return _DEFAULT_MEDIA_TYPE
    media_type = raw.decode("latin-1").lower().partition(";")[0].strip()
    return media_type if media_type.count("/") == 1 else _DEFAULT_MEDIA_TYPE
