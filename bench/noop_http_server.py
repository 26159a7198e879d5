"""A no-op HTTP authorization server: answers every request 200 with the identity headers an
allow carries, and does nothing else. Limit H of `bench.run` runs it on the stack of our
listener (`http_server.HttpServer`); `bench.http_servers` also runs it on aiohttp's low-level
server, to compare the two.

    python -m bench.noop_http_server PORT_FILE [asyncio|uvloop] [ours|aiohttp]
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from aiohttp import web

from extauthz_server.edges.http_server import HttpAnswer, HttpRequest, HttpServer

_ALLOW_HEADERS = (
    ("x-auth-subject", "sub-bob"),
    ("x-auth-username", "bob"),
    ("x-auth-email", "bob@example.com"),
    ("x-auth-roles", "creator"),
    ("x-auth-client", "web-app"),
)
_ALLOW = HttpAnswer(200, _ALLOW_HEADERS)


async def _allow(request: HttpRequest) -> HttpAnswer:
    return _ALLOW


async def _allow_aiohttp(request: web.BaseRequest) -> web.StreamResponse:
    return web.Response(status=200, headers=_ALLOW_HEADERS)


async def serve(port_file: Path, stack: str) -> None:
    if stack == "aiohttp":
        runner = web.ServerRunner(web.Server(_allow_aiohttp, access_log=None))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = int(runner.addresses[0][1])
    else:
        port = await HttpServer(_allow).start("127.0.0.1", 0)
    await asyncio.to_thread(port_file.write_text, str(port))
    await asyncio.Event().wait()


if __name__ == "__main__":
    loop_factory = None
    if sys.argv[2:3] == ["uvloop"]:
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(Path(sys.argv[1]), sys.argv[3] if len(sys.argv) > 3 else "ours"))
