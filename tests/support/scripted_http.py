"""A raw HTTP/1.1 server on loopback that answers each request as scripted (well formed,
chunked, close-delimited, garbage, held back, or not at all) and keeps count of the
connections it accepted and which one carried each request."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Reply:
    """What the server does with one request: write `data`, then close if `close`.
    `hold`: first wait until the test calls `ScriptedServer.release()`."""

    data: bytes = b""
    close: bool = False
    hold: bool = False


def answer(
    body: bytes = b'{"active": true}',
    *,
    status: str = "200 OK",
    content_type: str | None = "application/json",
    headers: tuple[str, ...] = (),
    version: str = "HTTP/1.1",
) -> bytes:
    """An answer with a Content-Length."""
    lines = [f"{version} {status}", f"Content-Length: {len(body)}", *headers]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(*chunks: bytes, content_type: str = "application/json") -> bytes:
    """An answer in chunked transfer coding, one chunk per argument."""
    head = f"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: {content_type}\r\n\r\n"
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks)
    return head.encode("latin-1") + body + b"0\r\n\r\n"


OK = Reply(answer())


@dataclass(frozen=True)
class Request:
    connection: int  # 0 for the first connection the server accepted, 1 for the next...
    head: bytes
    body: bytes


@dataclass
class ScriptedServer:
    """Replies in the order of `script`; past its end the last reply repeats."""

    script: list[Reply] = field(default_factory=lambda: [OK])
    tls: ssl.SSLContext | None = None
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    # Set when the client closed its side of that connection (by index).
    client_closed: list[asyncio.Event] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def connections(self) -> int:
        return len(self.client_closed)

    def url(self, path: str = "/introspect") -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening, drop every connection and let the handlers end."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self._released.set()
        for writer in self._writers:
            writer.transport.abort()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5.0)

    def release(self) -> None:
        """Let the held replies go, and every later one at once."""
        self._released.set()

    async def wait_for_requests(self, count: int) -> None:
        while len(self.requests) < count:
            changed = self._changed
            await changed.wait()

    def _note_change(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        index = len(self.client_closed)
        closed = asyncio.Event()
        self.client_closed.append(closed)
        try:
            while await self._one_request(index, reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            closed.set()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
            self._writers.discard(writer)
            self._handlers.discard(task)
            self._note_change()

    async def _one_request(
        self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Read a request and reply; False once the connection is done with."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            self.client_closed[index].set()
            return False
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length)
        reply = self.script[min(len(self.requests), len(self.script) - 1)]
        self.requests.append(Request(index, head, body))
        self._note_change()
        if reply.hold:
            await self._released.wait()
        writer.write(reply.data)
        await writer.drain()
        return not reply.close
