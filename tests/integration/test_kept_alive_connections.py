"""KeptAliveHttp's connections: kept alive and reused most recent first, bounded in number,
closed when idle too long, when a request is cancelled or fails, and on close(); one more try
after the keep-alive race; refused, unresolvable and untrusted servers told in words."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from extauthz_server.identity.kept_alive_http import (
    CLIENT_CLOSED,
    HttpRequestFailed,
    KeptAliveHttp,
)
from extauthz_server.identity.provider_http import (
    NOT_RESOLVED,
    REFUSED,
    SERVER_CLOSED,
    TLS_FAILED,
)
from tests.support.certificates import CertificateAuthority
from tests.support.net import free_port
from tests.support.scripted_http import OK, Reply, ScriptedServer

Serve = Callable[..., Awaitable[ScriptedServer]]
HELD = Reply(OK.data, hold=True)
SHUT = Reply(close=True)  # closes the connection without answering
WAIT_S = 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., KeptAliveHttp]]:
    made: list[KeptAliveHttp] = []

    def make(**options: object) -> KeptAliveHttp:
        made.append(KeptAliveHttp(**options))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for client in made:
        await client.close()


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[ScriptedServer] = []

    async def start(*script: Reply, tls: ssl.SSLContext | None = None) -> ScriptedServer:
        server = ScriptedServer(list(script), tls=tls)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.release()
        await server.close()


async def post(client: KeptAliveHttp, url: str) -> int:
    return (await client.post(url, b"token=abc", {}, 1024)).status


async def problem(client: KeptAliveHttp, url: str) -> str:
    with pytest.raises(HttpRequestFailed) as caught:
        await client.post(url, b"token=abc", {}, 1024)
    return caught.value.reason


def connections_used(server: ScriptedServer) -> list[int]:
    return [request.connection for request in server.requests]


async def closed_by_client(server: ScriptedServer, connection: int) -> None:
    async with asyncio.timeout(WAIT_S):
        await server.client_closed[connection].wait()


# Reuse


async def test_sequential_requests_share_one_connection(
    clients: Callable[..., KeptAliveHttp], serve: Serve
) -> None:
    server, client = await serve(OK), clients()

    for _ in range(20):
        assert await post(client, server.url()) == 200

    assert server.connections == 1
    assert client.open_connections == 1


async def test_the_most_recently_idle_connection_is_reused_first(
    clients: Callable[..., KeptAliveHttp], serve: Serve
) -> None:
    server, client = await serve(HELD, HELD, OK), clients()
    both = asyncio.gather(post(client, server.url()), post(client, server.url()))
    await server.wait_for_requests(2)
    server.release()
    await both

    for _ in range(4):
        await post(client, server.url())

    assert server.connections == 2
    assert len(set(connections_used(server)[2:])) == 1


# The keep-alive race


async def test_a_reused_connection_closed_unanswered_is_tried_once_more_on_a_new_one(
    clients: Callable[..., KeptAliveHttp], serve: Serve
) -> None:
    server, client = await serve(OK, SHUT, OK), clients()
    await post(client, server.url())

    assert await post(client, server.url()) == 200

    assert connections_used(server) == [0, 0, 1]


async def test_the_race_lost_twice_fails_after_one_more_try(
    clients: Callable[..., KeptAliveHttp], serve: Serve
) -> None:
    server, client = await serve(OK, SHUT, SHUT, OK), clients()
    await post(client, server.url())

    assert await problem(client, server.url()) == SERVER_CLOSED

    assert connections_used(server) == [0, 0, 1]


async def test_a_new_connection_closed_unanswered_is_not_tried_again(
    clients: Callable[..., KeptAliveHttp], serve: Serve
) -> None:
    server, client = await serve(SHUT, OK), clients()

    assert await problem(client, server.url()) == SERVER_CLOSED

    assert connections_used(server) == [0]


async def test_a_connection_the_server_closed_while_idle_is_not_in_the_way(
    clients: Callable[..., KeptAliveHttp], serve: Serve
) -> None:
    server, client = await serve(Reply(OK.data, close=True), OK), clients()
    await post(client, server.url())

    assert await post(client, server.url()) == 200

    assert server.connections == 2
    assert len(server.requests) == 2


# Cancellation and idleness


async def test_a_request_cut_off_by_the_callers_timeout_closes_its_connection(
    clients: Callable[..., KeptAliveHttp], serve: Serve
) -> None:
    server, client = await serve(HELD, OK), clients()

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await post(client, server.url())
    server.release()
    await closed_by_client(server, 0)

    assert await post(client, server.url()) == 200
    assert connections_used(server) == [0, 1]
    assert client.open_connections == 1


async def test_a_connection_idle_too_long_is_not_reused(
    clients: Callable[..., KeptAliveHttp], serve: Serve
) -> None:
    clock = Clock()
    server, client = await serve(OK), clients(idle_timeout_s=30.0, now=clock)
    await post(client, server.url())
    clock.now += 29
    await post(client, server.url())

    clock.now += 31
    await post(client, server.url())

    assert connections_used(server) == [0, 0, 1]
    await closed_by_client(server, 0)


async def test_idle_connections_are_closed_without_further_requests(
    clients: Callable[..., KeptAliveHttp], serve: Serve
) -> None:
    server, client = await serve(OK), clients(idle_timeout_s=0.05)
    await post(client, server.url())

    await closed_by_client(server, 0)

    assert client.open_connections == 0


async def test_close_closes_every_connection_and_refuses_later_requests(
    clients: Callable[..., KeptAliveHttp], serve: Serve
) -> None:
    server, client = await serve(OK), clients()
    await post(client, server.url())

    await client.close()

    await closed_by_client(server, 0)
    assert await problem(client, server.url()) == CLIENT_CLOSED


# The bound on open connections


async def test_requests_past_the_bound_wait_for_a_connection(
    clients: Callable[..., KeptAliveHttp], serve: Serve
) -> None:
    server, client = await serve(HELD), clients(max_connections=2)
    calls = asyncio.gather(*(post(client, server.url()) for _ in range(3)))
    await server.wait_for_requests(2)

    assert server.connections == 2
    assert client.open_connections == 2
    server.release()
    assert await calls == [200, 200, 200]
    assert server.connections == 2


async def test_a_caller_waiting_for_a_connection_is_bounded_by_its_own_timeout(
    clients: Callable[..., KeptAliveHttp], serve: Serve
) -> None:
    server, client = await serve(HELD), clients(max_connections=1)
    first = asyncio.create_task(post(client, server.url()))
    await server.wait_for_requests(1)

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await post(client, server.url())
    server.release()

    assert await first == 200
    assert await post(client, server.url()) == 200
    assert server.connections == 1


async def test_an_idle_connection_to_another_origin_gives_way_at_the_bound(
    clients: Callable[..., KeptAliveHttp], serve: Serve
) -> None:
    one, other, client = await serve(OK), await serve(OK), clients(max_connections=1)
    await post(client, one.url())

    assert await post(client, other.url()) == 200

    await closed_by_client(one, 0)
    assert client.open_connections == 1


# Failing to connect


async def test_a_refused_connection_says_so(clients: Callable[..., KeptAliveHttp]) -> None:
    client = clients()

    assert await problem(client, f"http://127.0.0.1:{free_port()}/x") == REFUSED
    assert client.open_connections == 0


async def test_an_unknown_host_is_a_dns_failure(clients: Callable[..., KeptAliveHttp]) -> None:
    assert await problem(clients(), "http://no-such-host.invalid/x") == NOT_RESOLVED


# TLS


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "ca")


def server_tls(ca: CertificateAuthority) -> ssl.SSLContext:
    issued = ca.server("keycloak")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued.cert_file, issued.key_file)
    return context


async def test_https_to_a_server_of_a_trusted_ca_keeps_its_connection(
    clients: Callable[..., KeptAliveHttp], serve: Serve, ca: CertificateAuthority
) -> None:
    server = await serve(OK, tls=server_tls(ca))
    client = clients(tls=ssl.create_default_context(cafile=ca.ca_file))

    for host in ("localhost", "localhost", "127.0.0.1"):
        assert await post(client, f"https://{host}:{server.port}/x") == 200

    assert connections_used(server) == [0, 0, 1]


async def test_https_trusts_the_cas_of_ssl_cert_file(
    clients: Callable[..., KeptAliveHttp],
    serve: Serve,
    ca: CertificateAuthority,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = await serve(OK, tls=server_tls(ca))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))

    assert await post(clients(), server.url()) == 200


async def test_https_to_an_untrusted_certificate_is_a_tls_failure(
    clients: Callable[..., KeptAliveHttp],
    serve: Serve,
    ca: CertificateAuthority,
    tmp_path: Path,
) -> None:
    server = await serve(OK, tls=server_tls(ca))
    stranger = CertificateAuthority(tmp_path / "stranger")
    client = clients(tls=ssl.create_default_context(cafile=stranger.ca_file))

    assert await problem(client, server.url()) == TLS_FAILED
    assert client.open_connections == 0
