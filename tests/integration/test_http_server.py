"""The HTTP/1.1 server under the authorization listener, spoken to over raw sockets: keep-alive,
pipelining in order, the bounds (head, body, waiting, unfinished requests), malformed input,
and the graceful stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from extauthz_server.edges import http_server
from extauthz_server.edges.http_server import HttpAnswer, HttpRequest, HttpServer

READ_TIMEOUT_S = 10.0


class Handler:
    """Answers 200 naming the request; `/slow` waits until released."""

    def __init__(self) -> None:
        self.seen: list[HttpRequest] = []
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def __call__(self, request: HttpRequest) -> HttpAnswer:
        self.seen.append(request)
        if request.target.startswith("/slow"):
            self.started.set()
            await self.release.wait()
        if request.target == "/fail":
            raise RuntimeError("handler bug")
        if request.target == "/split":
            return HttpAnswer(200, (("x-auth-roles", "admin\r\nx-evil: 1"),))
        body = f"{request.method} {request.target}".encode()
        return HttpAnswer(200, (("x-seen", request.headers.get("x-test", "")),), body)


@pytest.fixture
async def served() -> AsyncIterator[tuple[HttpServer, Handler, int]]:
    handler = Handler()
    server = HttpServer(handler)
    port = await server.start("127.0.0.1", 0)
    yield server, handler, port
    handler.release.set()
    await server.stop(1.0)


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    async with asyncio.timeout(READ_TIMEOUT_S):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = dict(line.split(": ", 1) for line in lines[1:] if line)
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    async with asyncio.timeout(READ_TIMEOUT_S):
        return await reader.read() == b""


def get(target: str, *extra: str) -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: app.example", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_keep_alive_answers_several_requests_on_one_connection(
    served: tuple[HttpServer, Handler, int],
) -> None:
    _, handler, port = served
    reader, writer = await connect(port)

    answers = []
    for target in ("/a", "/b?x=1"):
        writer.write(get(target, "X-Test: t", "X-Test: u"))
        answers.append(await read_answer(reader))

    assert [(status, body) for status, _, body in answers] == [
        (200, b"GET /a"),
        (200, b"GET /b?x=1"),
    ]
    assert answers[0][1]["x-seen"] == "t,u"  # repeated headers joined, names lower-cased
    assert handler.seen[0].headers["host"] == "app.example"
    writer.close()


async def test_pipelined_requests_are_answered_in_order(
    served: tuple[HttpServer, Handler, int],
) -> None:
    _, handler, port = served
    reader, writer = await connect(port)

    writer.write(get("/slow") + get("/second") + get("/third"))
    await handler.started.wait()
    handler.release.set()
    bodies = [(await read_answer(reader))[2] for _ in range(3)]

    assert bodies == [b"GET /slow", b"GET /second", b"GET /third"]
    writer.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n", 400),
        (get("/", "X-Big: " + "a" * (http_server.MAX_HEAD_BYTES + 1)), 431),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: "
            + str(http_server.MAX_BODY_BYTES + 1).encode()
            + b"\r\n\r\n"
            + b"x" * (http_server.MAX_BODY_BYTES + 1),
            413,
        ),
        (get("/", "Connection: Upgrade", "Upgrade: websocket"), 400),
    ],
    ids=["garbage", "bad-header", "head-too-large", "body-too-large", "upgrade"],
)
async def test_a_request_we_will_not_read_is_refused_and_the_connection_closed(
    served: tuple[HttpServer, Handler, int], request_bytes: bytes, status: int
) -> None:
    _, handler, port = served
    reader, writer = await connect(port)

    writer.write(request_bytes)
    answer = await read_answer(reader)

    assert answer[0] == status
    assert answer[1]["connection"] == "close"
    assert await closed_by_server(reader)
    assert handler.seen == []
    writer.close()


async def test_a_small_body_is_read_and_ignored(served: tuple[HttpServer, Handler, int]) -> None:
    _, _, port = served
    reader, writer = await connect(port)

    writer.write(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" + get("/next"))

    assert (await read_answer(reader))[2] == b"POST /p"
    assert (await read_answer(reader))[2] == b"GET /next"
    writer.close()


async def test_connection_close_and_http_1_0_are_answered_then_closed(
    served: tuple[HttpServer, Handler, int],
) -> None:
    _, _, port = served
    for request in (get("/c", "Connection: close"), b"GET /old HTTP/1.0\r\n\r\n"):
        reader, writer = await connect(port)
        writer.write(request)

        status, headers, _ = await read_answer(reader)

        assert (status, headers["connection"]) == (200, "close")
        assert await closed_by_server(reader)
        writer.close()


async def test_head_gets_the_headers_without_a_body(
    served: tuple[HttpServer, Handler, int],
) -> None:
    _, _, port = served
    reader, writer = await connect(port)

    writer.write(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n" + get("/after"))
    async with asyncio.timeout(READ_TIMEOUT_S):
        head = await reader.readuntil(b"\r\n\r\n")
    status, _, body = await read_answer(reader)

    assert b"content-length: 7" in head  # the length of "HEAD /h", not sent
    assert (status, body) == (200, b"GET /after")
    writer.close()


async def test_a_handler_that_fails_or_answers_a_split_header_gives_503(
    served: tuple[HttpServer, Handler, int],
) -> None:
    _, _, port = served
    reader, writer = await connect(port)

    writer.write(get("/fail") + get("/split"))
    failed = await read_answer(reader)
    split = await read_answer(reader)

    assert (failed[0], split[0]) == (503, 503)
    assert "x-evil" not in split[1]
    writer.close()


async def test_an_unfinished_request_gets_408_and_an_idle_connection_is_closed(
    served: tuple[HttpServer, Handler, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, port = served
    monkeypatch.setattr(http_server, "REQUEST_TIMEOUT_S", 0.2)
    monkeypatch.setattr(http_server, "IDLE_TIMEOUT_S", 0.2)
    trickling_reader, trickling = await connect(port)
    idle_reader, idle = await connect(port)
    idle.write(get("/once"))
    await read_answer(idle_reader)

    trickling.write(b"GET /never-finished HTTP/1.1\r\nHost: a\r\n")

    assert (await read_answer(trickling_reader))[0] == 408
    assert await closed_by_server(trickling_reader)
    assert await closed_by_server(idle_reader)
    trickling.close()
    idle.close()


async def test_stopping_lets_an_answer_under_way_finish_then_closes(
    served: tuple[HttpServer, Handler, int],
) -> None:
    server, handler, port = served
    busy_reader, busy = await connect(port)
    idle_reader, idle = await connect(port)
    busy.write(get("/slow"))
    await handler.started.wait()

    stopping = asyncio.create_task(server.stop(5.0))
    await asyncio.sleep(0)
    handler.release.set()
    status, headers, body = await read_answer(busy_reader)
    await stopping

    assert (status, body, headers["connection"]) == (200, b"GET /slow", "close")
    assert await closed_by_server(busy_reader)
    assert await closed_by_server(idle_reader)
    assert server.connections == 0
    with pytest.raises(ConnectionRefusedError):
        await connect(port)
    busy.close()
    idle.close()


async def test_a_request_left_unfinished_behind_a_busy_answer_still_times_out(
    served: tuple[HttpServer, Handler, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, handler, port = served
    monkeypatch.setattr(http_server, "REQUEST_TIMEOUT_S", 0.2)
    reader, writer = await connect(port)
    writer.write(get("/slow") + b"GET /never-finished HTTP/1.1\r\nHost: a\r\n")
    await handler.started.wait()
    await asyncio.sleep(0.3)  # past the unfinished request's time, while /slow is answered

    handler.release.set()

    assert (await read_answer(reader))[0] == 200
    assert (await read_answer(reader))[0] == 408
    assert await closed_by_server(reader)
    writer.close()


async def test_an_answer_handed_back_again_is_sent_the_same_and_a_new_one_as_itself() -> None:
    kept = HttpAnswer(200, (("x-auth-roles", "creator"),), b"kept")
    answers = [kept, kept, HttpAnswer(200, (("x-auth-roles", "admin"),), b"new"), kept]

    async def handler(request: HttpRequest) -> HttpAnswer:
        return answers.pop(0)

    server = HttpServer(handler)
    port = await server.start("127.0.0.1", 0)
    reader, writer = await connect(port)
    try:
        writer.write(get("/1") + get("/2") + get("/3") + get("/4", "Connection: close"))
        seen = [await read_answer(reader) for _ in range(4)]
    finally:
        writer.close()
        await server.stop(1.0)

    assert [(h["x-auth-roles"], body) for _, h, body in seen] == [
        ("creator", b"kept"),
        ("creator", b"kept"),
        ("admin", b"new"),
        ("creator", b"kept"),
    ]
    assert "connection" not in seen[1][1]
    assert seen[3][1]["connection"] == "close"
