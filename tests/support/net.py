"""Loopback helpers: free ports, small aiohttp servers, and bounded waits for a server to
come up."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

from aiohttp import web


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def serve_on_loopback(app: web.Application, port: int = 0) -> tuple[web.AppRunner, int]:
    """Serve `app` on 127.0.0.1 (`port`, or a free one); the runner, to clean up, and the port."""
    runner = web.AppRunner(app, access_log=None)
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


def wait_for_port(port: int, *, timeout_s: float, host: str = "127.0.0.1") -> None:
    """Wait until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{host}:{port} not accepting connections after {timeout_s:.0f}s")
