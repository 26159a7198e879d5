"""A provider that cannot answer is described by where and why: the URL (no credentials), a
plain reason, and the usual cause; and it is logged once per kind of failure, not per Check."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from extauthz_server.config.model import authorizer_settings
from extauthz_server.core.authorizer import Authorizer
from extauthz_server.core.identity import Identity, Inactive
from extauthz_server.core.request import AuthRequest
from extauthz_server.errors import ProviderUnavailable
from extauthz_server.identity.provider_http import fetch_json, shown_url
from tests.support.configs import seed_config
from tests.support.net import free_port, serve_on_loopback


@pytest.fixture
async def wrong_realm() -> AsyncIterator[int]:
    """A provider that knows no such realm: every document is a 404."""

    async def not_found(request: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{tail:.*}", not_found)
    runner, port = await serve_on_loopback(app)
    yield port
    await runner.cleanup()


async def fetch_problem(session: aiohttp.ClientSession, url: str) -> str:
    with pytest.raises(ProviderUnavailable) as caught:
        await fetch_json(session, url, what="discovery document", max_bytes=1024)
    return str(caught.value)


async def test_a_refused_connection_names_the_url_and_what_it_means(
    session: aiohttp.ClientSession,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/realms/demo/.well-known/openid-configuration"

    problem = await fetch_problem(session, url)

    assert problem == (
        f"discovery document {url}: connection refused (is anything listening at that address?)"
    )


async def test_a_404_says_the_issuer_or_realm_is_probably_wrong(
    session: aiohttp.ClientSession, wrong_realm: int
) -> None:
    url = f"http://127.0.0.1:{wrong_realm}/realms/nope/.well-known/openid-configuration"

    problem = await fetch_problem(session, url)

    hint = "answered 404: not found (is the issuer right, realm included?)"
    assert problem == f"discovery document {url}: {hint}"


async def test_an_unknown_host_is_a_dns_failure(session: aiohttp.ClientSession) -> None:
    problem = await fetch_problem(session, "http://no-such-host.invalid/realms/demo")

    assert problem.endswith(": the host name does not resolve (DNS)")


def test_a_shown_url_carries_no_credentials_or_query() -> None:
    shown = shown_url("https://user:secret@sso.example.com:8443/realms/demo/x?token=abc")

    assert shown == "https://sso.example.com:8443/realms/demo/x"


class Down:
    def __init__(self) -> None:
        self.calls = 0

    async def resolve(
        self, token: str, timeout_s: float, provider: str | None = None
    ) -> Identity | Inactive:
        self.calls += 1
        budget = 0.15 - self.calls / 1000
        raise ProviderUnavailable(f"introspection timed out after {budget:.3f}s")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_an_unavailable_provider_is_logged_once_a_minute_not_per_check(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, source = Clock(), Down()
    settings = authorizer_settings(seed_config("http://127.0.0.1:1/realms/demo"))
    checks = Authorizer(settings, source, clock)
    request = AuthRequest("GET", "app.example", "/api/forms", {"authorization": "Bearer t"})
    caplog.set_level(logging.WARNING, logger="extauthz_server.core.authorizer")

    for _ in range(20):
        assert (await checks.check(request, 1.0)).status == 503
    clock.now += 61
    await checks.check(request, 1.0)

    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("identity provider unavailable: introspection timed out after")
    assert source.calls == 21
