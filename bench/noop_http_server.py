"""Limit H of the benchmark: an HTTP authorization server on the same stack as our HTTP
listener (aiohttp's low-level server, one process) that answers every request 200 with the
identity headers an allow carries, and does nothing else.

    python -m bench.noop_http_server PORT_FILE [asyncio|uvloop]
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from aiohttp import web

_ALLOW_HEADERS = {
    "x-auth-subject": "sub-bob",
    "x-auth-username": "bob",
    "x-auth-email": "bob@example.com",
    "x-auth-roles": "creator",
    "x-auth-client": "web-app",
}


async def allow(request: web.BaseRequest) -> web.StreamResponse:
    return web.Response(status=200, headers=_ALLOW_HEADERS)


async def serve(port_file: Path) -> None:
    runner = web.ServerRunner(web.Server(allow, access_log=None))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    await asyncio.to_thread(port_file.write_text, str(runner.addresses[0][1]))
    await asyncio.Event().wait()


if __name__ == "__main__":
    loop_factory = None
    if sys.argv[2:] == ["uvloop"]:
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(Path(sys.argv[1])))
