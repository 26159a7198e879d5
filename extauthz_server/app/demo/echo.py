"""The demo's upstream: answers every request 200 with the method, path and headers it got,
so the identity headers extauthz-server injected are visible."""

from __future__ import annotations

from aiohttp import web


async def _echo(request: web.Request) -> web.Response:
    headers = {name.lower(): value for name, value in request.headers.items()}
    return web.json_response(
        {"method": request.method, "path": request.raw_path, "headers": headers}
    )


class EchoUpstream:
    def __init__(self) -> None:
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", _echo)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
