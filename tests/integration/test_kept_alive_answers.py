"""KeptAliveHttp against a raw loopback server: every shape of HTTP/1.1 answer is read whole,
what it keeps is bounded, answers that end the connection are not reused, and what is not
HTTP becomes a reason in words."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from extauthz_server.identity.kept_alive_http import (
    HEAD_TOO_LONG,
    NOT_HTTP,
    HttpRequestFailed,
    KeptAliveHttp,
)
from extauthz_server.identity.provider_http import SERVER_CLOSED
from tests.support.scripted_http import OK, Reply, ScriptedServer, answer, chunked

Serve = Callable[..., Awaitable[ScriptedServer]]
DOCUMENT = b'{"active": true, "sub": "sub-bob"}'
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
async def client() -> AsyncIterator[KeptAliveHttp]:
    http = KeptAliveHttp()
    yield http
    await http.close()


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[ScriptedServer] = []

    async def start(*script: Reply) -> ScriptedServer:
        server = ScriptedServer(list(script))
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


async def post(client: KeptAliveHttp, server: ScriptedServer, max_body_bytes: int = 1024) -> bytes:
    answer = await client.post(server.url(), b"token=abc", FORM, max_body_bytes)
    assert answer.status == 200
    return answer.body


async def problem(client: KeptAliveHttp, server: ScriptedServer) -> str:
    with pytest.raises(HttpRequestFailed) as caught:
        await client.post(server.url(), b"token=abc", FORM, 1024)
    return caught.value.reason


async def test_the_request_carries_host_length_and_the_given_headers(
    client: KeptAliveHttp, serve: Serve
) -> None:
    server = await serve(OK)

    url = f"http://127.0.0.1:{server.port}/realms/demo/introspect?x=1"
    await client.post(url, b"token=abc", {"Authorization": "Basic eA==", "Accept": "a/b"}, 1024)

    [request] = server.requests
    lines = request.head.decode().split("\r\n")
    assert lines[0] == "POST /realms/demo/introspect?x=1 HTTP/1.1"
    assert set(lines[1:]) == {
        f"Host: 127.0.0.1:{server.port}",
        "Authorization: Basic eA==",
        "Accept: a/b",
        "Content-Length: 9",
        "",
    }
    assert request.body == b"token=abc"


async def test_a_header_value_with_a_line_break_is_refused_before_anything_is_sent(
    client: KeptAliveHttp, serve: Serve
) -> None:
    server = await serve(OK)

    with pytest.raises(ValueError, match="line break"):
        await client.post(server.url(), b"", {"X": "a\r\nInjected: 1"}, 10)

    assert server.connections == 0


KEEP_ALIVE_ANSWERS = [
    ("content-length", answer(DOCUMENT), DOCUMENT),
    ("chunked", chunked(DOCUMENT[:5], DOCUMENT[5:]), DOCUMENT),
    ("no content", b"HTTP/1.1 204 No Content\r\n\r\n", b""),
    ("after an interim 100", b"HTTP/1.1 100 Continue\r\n\r\n" + answer(DOCUMENT), DOCUMENT),
]


@pytest.mark.parametrize(
    ("data", "body"),
    [(data, body) for _, data, body in KEEP_ALIVE_ANSWERS],
    ids=[name for name, _, _ in KEEP_ALIVE_ANSWERS],
)
async def test_an_answer_is_read_whole_and_its_connection_kept(
    client: KeptAliveHttp, serve: Serve, data: bytes, body: bytes
) -> None:
    server = await serve(Reply(data))

    first = await client.post(server.url(), b"token=abc", FORM, 1024)
    second = await client.post(server.url(), b"token=abc", FORM, 1024)

    assert first.body == second.body == body
    assert server.connections == 1


CLOSING_ANSWERS = [
    (
        "close-delimited",
        Reply(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + DOCUMENT, close=True),
    ),
    ("connection: close", Reply(answer(DOCUMENT, headers=("Connection: close",)))),
    ("http/1.0", Reply(answer(DOCUMENT, version="HTTP/1.0"))),
    (
        "http/1.0 keep-alive",
        Reply(answer(DOCUMENT, version="HTTP/1.0", headers=("Connection: keep-alive",))),
    ),
]


@pytest.mark.parametrize(
    "reply", [reply for _, reply in CLOSING_ANSWERS], ids=[name for name, _ in CLOSING_ANSWERS]
)
async def test_an_answer_that_ends_its_connection_is_read_whole_and_not_reused(
    client: KeptAliveHttp, serve: Serve, reply: Reply
) -> None:
    server = await serve(reply)

    assert await post(client, server) == DOCUMENT
    assert await post(client, server) == DOCUMENT

    assert [r.connection for r in server.requests] == [0, 1]


LONG = b"x" * 100
LONG_ANSWERS = [
    ("content-length", Reply(answer(LONG))),
    ("chunked", Reply(chunked(LONG[:50], LONG[50:]))),
    ("close-delimited", Reply(b"HTTP/1.1 200 OK\r\n\r\n" + LONG, close=True)),
]


@pytest.mark.parametrize(
    "reply", [reply for _, reply in LONG_ANSWERS], ids=[name for name, _ in LONG_ANSWERS]
)
async def test_a_body_past_the_bound_is_cut_one_byte_past_it_and_its_connection_closed(
    client: KeptAliveHttp, serve: Serve, reply: Reply
) -> None:
    server = await serve(reply)

    assert await post(client, server, max_body_bytes=10) == LONG[:11]
    assert await post(client, server, max_body_bytes=100) == LONG

    assert [r.connection for r in server.requests] == [0, 1]


CONTENT_TYPES = [
    None,
    "application/json",
    "Application/JSON; charset=UTF-8",
    " application/json ;x=y",
    "text/html",
    "",
    "json",
    "a/b/c",
    "application/json;",
]


@pytest.mark.parametrize("content_type", CONTENT_TYPES, ids=repr)
async def test_the_content_type_is_the_media_type_as_aiohttp_reads_it(
    client: KeptAliveHttp, serve: Serve, content_type: str | None
) -> None:
    server = await serve(Reply(answer(DOCUMENT, content_type=content_type)))
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.url(), data=b"token=abc") as response,
    ):
        expected = response.content_type

    ours = await client.post(server.url(), b"token=abc", FORM, 1024)

    assert ours.content_type == expected


GARBAGE = [
    ("not http at all", Reply(b"SSH-2.0-OpenSSH_9.6\r\n", close=True)),
    ("a status that is not a number", Reply(b"HTTP/1.1 abc OK\r\n\r\n", close=True)),
    (
        "a chunk size that is not hex",
        Reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", close=True),
    ),
    ("two lengths", Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")),
    ("an upgrade", Reply(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n")),
]


@pytest.mark.parametrize(
    "reply", [reply for _, reply in GARBAGE], ids=[name for name, _ in GARBAGE]
)
async def test_an_answer_that_is_not_http_fails_in_words(
    client: KeptAliveHttp, serve: Serve, reply: Reply
) -> None:
    server = await serve(reply, OK)

    assert await problem(client, server) == NOT_HTTP
    assert await post(client, server) == OK.data.partition(b"\r\n\r\n")[2]
    assert server.connections == 2


async def test_headers_that_never_end_are_cut_off(client: KeptAliveHttp, serve: Serve) -> None:
    endless = b"HTTP/1.1 200 OK\r\n" + b"X-Padding: " + b"a" * 100_000

    server = await serve(Reply(endless))

    assert await problem(client, server) == HEAD_TOO_LONG


async def test_an_answer_cut_short_by_a_close_fails_in_words(
    client: KeptAliveHttp, serve: Serve
) -> None:
    server = await serve(Reply(answer(LONG)[:-50], close=True))

    assert await problem(client, server) == SERVER_CLOSED


async def test_bytes_sent_between_answers_end_the_connection(
    client: KeptAliveHttp, serve: Serve
) -> None:
    server = await serve(Reply(answer(DOCUMENT) + b"HTTP/1.1 408 Request Timeout\r\n\r\n"), OK)

    await post(client, server)
    await post(client, server)

    assert [r.connection for r in server.requests] == [0, 1]
