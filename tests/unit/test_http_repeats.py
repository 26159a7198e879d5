"""What the HTTP edge keeps to answer a request again: a digest over every input the decision
reads, never the token, the same size for every request."""

from __future__ import annotations

import httptools
import pytest

from extauthz_server.config.model import Config, authorizer_settings
from extauthz_server.core.authorizer import Authorizer
from extauthz_server.core.decision import Denials
from extauthz_server.edges.checking import Checking
from extauthz_server.edges.http_authz import HttpAuthzService, repeat_key
from extauthz_server.edges.http_server import HttpRequest
from extauthz_server.ops.logs import Auditor
from extauthz_server.ops.metrics import CheckMetrics
from tests.unit.test_authorizer import MANAGER_BOB as BOB
from tests.unit.test_repeated_requests import HeldSource

TOKEN = "bob-" + "x" * 40


@pytest.fixture
def source() -> HeldSource:
    return HeldSource({TOKEN: BOB})


@pytest.fixture
def service(seed_config: Config, source: HeldSource) -> HttpAuthzService:
    authorizer = Authorizer(authorizer_settings(seed_config), source, holding=source.holding)
    checking = Checking(authorizer, Denials("demo"), 1.0, CheckMetrics(), Auditor())
    return HttpAuthzService(checking)


def envoy_request(target: str, **headers: str) -> HttpRequest:
    fields = {"host": "api.example.com", "authorization": f"Bearer {TOKEN}", **headers}
    return HttpRequest("GET", target, fields, "127.0.0.1")


async def test_a_request_asked_again_is_not_decided_again(
    service: HttpAuthzService, source: HeldSource
) -> None:
    request = envoy_request("/envoy/api/forms/1")

    answers = [await service.handle(request) for _ in range(3)]

    assert [answer.status for answer in answers] == [200, 200, 200]
    assert answers[1] is answers[0]
    assert answers[2] is answers[0]
    assert source.resolved == [TOKEN, TOKEN]  # kept the second time, repeated the third


@pytest.mark.parametrize(
    "changed",
    [
        {"target": "/envoy/api/forms/2"},
        {"host": "other.example.com"},
        {"authorization": "Bearer someone-else"},
    ],
    ids=["path", "host", "token"],
)
async def test_another_request_is_decided_on_its_own(
    service: HttpAuthzService, source: HeldSource, changed: dict[str, str]
) -> None:
    for _ in range(2):
        await service.handle(envoy_request("/envoy/api/forms/1"))
    target = changed.pop("target", "/envoy/api/forms/1")

    await service.handle(envoy_request(target, **changed))

    assert len(source.resolved) == 3


async def test_what_is_kept_is_a_digest_holding_no_token_however_long_the_request(
    service: HttpAuthzService, source: HeldSource
) -> None:
    long_target = "/envoy/api/forms/1?q=" + "a" * 60_000
    for _ in range(3):
        assert (await service.handle(envoy_request(long_target))).status == 200
    authorizer = service._checking.authorizer

    keys = list(authorizer._state.repeats)

    assert source.resolved == [TOKEN, TOKEN]  # the third was repeated
    assert len(keys) == 1
    assert isinstance(keys[0], bytes)
    assert len(keys[0]) == 32


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({}, {"x-forwarded-host": ""}),
        ({"x-forwarded-uri": "/api/forms"}, {"x-original-uri": "/api/forms"}),
    ],
    ids=["absent-or-empty", "which-header"],
)
def test_requests_that_differ_only_in_which_header_says_what_get_different_keys(
    first: dict[str, str], second: dict[str, str]
) -> None:
    def key(fields: dict[str, str]) -> bytes:
        headers = {"host": "api.example.com", "authorization": "Bearer t", **fields}
        return repeat_key(HttpRequest("GET", "/forward-auth", headers, ""), "Bearer t", False)

    assert key(first) != key(second)


@pytest.mark.parametrize(
    "head",
    [
        b"GET /a\nb HTTP/1.1\r\n\r\n",
        b"GET /a\rb HTTP/1.1\r\n\r\n",
        b"GET /a\x00b HTTP/1.1\r\n\r\n",
        b"GET /a HTTP/1.1\r\nX-Forwarded-Uri: a\nb\r\n\r\n",
        b"GET /a HTTP/1.1\r\nX-Forwarded-Uri: a\x00b\r\n\r\n",
        b"GET /a HTTP/1.1\r\nX-Forwarded-Uri: a\r\n b\r\n\r\n",
    ],
    ids=["lf-in-target", "cr-in-target", "nul-in-target", "lf-in-value", "nul-in-value", "folded"],
)
def test_the_parser_admits_no_line_feed_or_nul_the_keys_join_on(head: bytes) -> None:
    # repeat_key joins fields with line feeds and writes an absent header as a NUL.
    parser = httptools.HttpRequestParser(_Ignore())

    with pytest.raises(httptools.HttpParserError):
        parser.feed_data(head)


class _Ignore:
    pass
