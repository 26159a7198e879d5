"""What the HTTP edge keeps to answer a request again: a key over every input the decision
reads, holding no token, and only for requests small enough to keep."""

from __future__ import annotations

import pytest

from extauthz_server.config.model import Config, authorizer_settings
from extauthz_server.core.authorizer import Authorizer
from extauthz_server.core.decision import Denials
from extauthz_server.edges.checking import Checking
from extauthz_server.edges.http_authz import MAX_KEPT_KEY_TEXT, HttpAuthzService
from extauthz_server.edges.http_server import HttpRequest
from extauthz_server.ops.logs import Auditor
from extauthz_server.ops.metrics import CheckMetrics
from tests.unit.test_repeated_requests import BOB, HeldSource

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
    assert source.resolved == [TOKEN]


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
    await service.handle(envoy_request("/envoy/api/forms/1"))
    target = changed.pop("target", "/envoy/api/forms/1")

    await service.handle(envoy_request(target, **changed))

    assert len(source.resolved) == 2


async def test_what_is_kept_holds_no_token(service: HttpAuthzService) -> None:
    await service.handle(envoy_request("/envoy/api/forms/1"))
    authorizer = service._checking.authorizer

    keys = [repr(key) for key in authorizer._state.repeats]

    assert len(keys) == 1
    assert "/envoy/api/forms/1" in keys[0]
    assert TOKEN not in keys[0]


async def test_a_request_too_long_to_keep_is_answered_and_decided_each_time(
    service: HttpAuthzService, source: HeldSource
) -> None:
    long_target = "/envoy/api/forms/1?q=" + "a" * MAX_KEPT_KEY_TEXT

    answers = [await service.handle(envoy_request(long_target)) for _ in range(2)]

    assert [answer.status for answer in answers] == [200, 200]
    assert source.resolved == [TOKEN, TOKEN]
