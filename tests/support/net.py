"""Loopback helpers: free ports, small aiohttp servers, and bounded waits for a server to
come up."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from aiohttp import web


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _ClosingRunner(web.AppRunner):
    """An AppRunner whose cleanup also closes the connections aiohttp accepted while it was
    shutting down. aiohttp leaves those open, and when a stand-in is stopped under load
    (the fault tests) their ResourceWarning fails whichever test is running when they are
    collected."""

    def __init__(self, app: web.Application) -> None:
        super().__init__(app, access_log=None)
        self._transports: set[asyncio.BaseTransport] = set()

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        accept = server.connection_made

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            if len(self._transports) > 256:
                self._transports = {t for t in self._transports if not t.is_closing()}
            self._transports.add(transport)
            accept(handler, transport)

        server.connection_made = connection_made  # type: ignore[method-assign]
        return server

    async def cleanup(self) -> None:
        await super().cleanup()
        for _ in range(3):
            await asyncio.sleep(0)  # let accepts already under way finish
        for transport in self._transports:
            if not transport.is_closing():
                transport.close()
        self._transports.clear()


async def serve_on_loopback(app: web.Application, port: int = 0) -> tuple[web.AppRunner, int]:
    """Serve `app` on 127.0.0.1 (`port`, or a free one); the runner, to clean up, and the port."""
    runner = _ClosingRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, int(runner.addresses[0][1])


def wait_for_http(url: str, *, timeout_s: float, expect_status: int = 200) -> None:
    """Poll `url` until it answers `expect_status`; raise TimeoutError naming the last failure."""
    deadline = time.monotonic() + timeout_s
    last_problem = "no attempt made"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback test URL
                if resp.status == expect_status:
                    return
                last_problem = f"status {resp.status}"
        except urllib.error.HTTPError as exc:
            last_problem = f"status {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last_problem = repr(exc)
        time.sleep(0.25)
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f}s: {last_problem}")


def _accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class TcpForwarder:
    """Relays TCP connections from a loopback port to another. Closing it is the service
    behind it stopping, as its clients see it: connections dropped, new ones refused."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            writer.close()
            return
        self._writers.update((writer, upstream_writer))
        await asyncio.gather(
            self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


def wait_until_serving(process: subprocess.Popen[bytes], port: int, timeout_s: float) -> bool:
    """True once something accepts connections on 127.0.0.1:`port`; False if `process` exits
    first or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if _accepts_connections("127.0.0.1", port):
            return True
        time.sleep(0.05)
    return False


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout_s`; idempotent."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)


def start_on_a_free_port(
    launch: Callable[[int], subprocess.Popen[bytes]], timeout_s: float, attempts: int = 3
) -> tuple[subprocess.Popen[bytes], int] | None:
    """For a server that cannot report the port it bound: choose a free port, `launch` the
    server on it and wait until it listens. The port may be taken between the choice and the
    bind, so a server that exits or never listens is stopped and tried on another port.
    None when every attempt failed."""
    for _ in range(attempts):
        port = free_port()
        process = launch(port)
        if wait_until_serving(process, port, timeout_s):
            return process, port
        stop_process(process)
    return None
