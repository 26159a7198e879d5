"""A request asked again is answered from the allow decided for it (`Authorizer.repeat`),
and only while everything that allow rested on still holds; anything the key does not cover
is never repeated."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from extauthz_server.config.model import Config, authorizer_settings, parse_config
from extauthz_server.core.authorizer import Authorizer, StillHeld
from extauthz_server.core.decision import Decision
from extauthz_server.core.identity import Identity
from extauthz_server.core.permissions import PermissionAnswer
from extauthz_server.core.request import AuthRequest
from tests.support.signing_keys import ec_key, write_private_key
from tests.unit import test_sender_constrained_tokens as bound
from tests.unit.test_authorizer import MANAGER_BOB as BOB
from tests.unit.test_authorizer import FakeIdentitySource
from tests.unit.test_config import with_routes
from tests.unit.test_route_permissions import PROVIDER, Keycloak

KEY = ("the edge's key for GET /api/forms as bob",)


@dataclass
class HeldSource(FakeIdentitySource):
    """test_authorizer's table of identities, which also says it still holds an identity
    while `holds` is True, and records what it was asked to hold."""

    holds: bool = True
    asked_to_hold: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def resolved(self) -> list[str]:
        return [token for token, _ in self.calls]

    def holding(self, token: str, provider: str | None, identity: Identity) -> StillHeld | None:
        self.asked_to_hold.append((token, provider))
        if self.outcomes.get(token) is not identity:
            return None
        return lambda: self.holds


@dataclass
class Clock:
    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now


def request(path: str = "/api/forms", authorization: str = "Bearer bob") -> AuthRequest:
    return AuthRequest("GET", "api.example.com", path, {"authorization": authorization})


def authorizer_for(
    config: Config, source: HeldSource, clock: Callable[[], float] | None = None, **kwargs: object
) -> Authorizer:
    return Authorizer(
        authorizer_settings(config),
        source,
        clock or Clock(),
        holding=source.holding,
        **kwargs,  # type: ignore[arg-type]
    )


async def allowed(authorizer: Authorizer, req: AuthRequest, key: object = KEY) -> Decision:
    """Checked twice under `key`: a request is kept for repeating when it comes again."""
    first = await authorizer.check(req, 0.1, key)
    again = await authorizer.check(req, 0.1, key)
    assert first.allowed, first.reason
    assert again.allowed, again.reason
    return again


async def test_a_request_asked_again_is_answered_without_asking_for_the_identity(
    seed_config: Config,
) -> None:
    source = HeldSource({"bob": BOB})
    authorizer = authorizer_for(seed_config, source)

    first = await allowed(authorizer, request())

    assert authorizer.repeat(KEY) is first
    assert authorizer.repeat(KEY) is first
    assert source.resolved == ["bob", "bob"]


async def test_a_request_allowed_once_is_not_kept(seed_config: Config) -> None:
    # Requests that never come again (a new path each time) cost no kept entry.
    source = HeldSource({"bob": BOB})
    authorizer = authorizer_for(seed_config, source)

    await authorizer.check(request(), 0.1, KEY)

    assert authorizer.repeat(KEY) is None
    assert source.asked_to_hold == []


async def test_nothing_is_repeated_under_a_key_never_checked(seed_config: Config) -> None:
    authorizer = authorizer_for(seed_config, HeldSource({"bob": BOB}))
    await allowed(authorizer, request())

    assert authorizer.repeat(("another request",)) is None


async def test_a_repeat_ends_when_the_source_no_longer_holds_the_identity(
    seed_config: Config,
) -> None:
    # A logout, a refresh past the cache's TTL or an eviction: the source says so.
    source = HeldSource({"bob": BOB})
    authorizer = authorizer_for(seed_config, source)
    await allowed(authorizer, request())

    source.holds = False
    gone = authorizer.repeat(KEY)
    source.holds = True

    assert gone is None
    assert authorizer.repeat(KEY) is None  # dropped, not only skipped once


async def test_a_reload_ends_every_repeat(seed_config: Config) -> None:
    authorizer = authorizer_for(seed_config, HeldSource({"bob": BOB}))
    await allowed(authorizer, request())

    authorizer.reconfigure(authorizer_settings(seed_config))

    assert authorizer.repeat(KEY) is None


async def test_a_repeat_counts_from_the_check_that_came_from_a_remembered_allow(
    seed_config: Config,
) -> None:
    # The first request of another path gets the allow remembered for the identity: that
    # request is repeatable too, under its own key.
    source = HeldSource({"bob": BOB})
    authorizer = authorizer_for(seed_config, source)
    first = await allowed(authorizer, request("/api/forms/1"), ("form 1",))
    second = await allowed(authorizer, request("/api/forms/2"), ("form 2",))

    assert second is first
    assert authorizer.repeat(("form 2",)) is first


async def test_a_minted_identity_token_is_not_repeated_past_its_reuse_time(
    seed_yaml: str, tmp_path: Path
) -> None:
    write_private_key(tmp_path / "current.pem", ec_key())
    text = seed_yaml + "identity_token: {key_file: current.pem, ttl_seconds: 60}\n"
    config = parse_config(text, {}, base_dir=tmp_path)
    clock = Clock()
    authorizer = authorizer_for(config, HeldSource({"bob": BOB}), clock)
    await allowed(authorizer, request())

    kept = authorizer.repeat(KEY)
    clock.now += 3600
    expired = authorizer.repeat(KEY)

    assert kept is not None
    assert expired is None


def conditional_and_permission_config() -> Config:
    routes = (
        "{name: cond, path_prefix: /cond, any_of: [creator], when: 'request.method == \"GET\"'}",
        "{name: reports, path_prefix: /reports, any_of: [creator],"
        " permission: {resource: reports, scope: read}}",
        "{name: open, path_prefix: /open, public: true}",
        "{name: forms, path_prefix: /api/forms, any_of: [creator]}",
    )
    document = yaml.safe_load(with_routes(*routes))
    document["provider"] = yaml.safe_load(PROVIDER)["provider"]
    return parse_config(yaml.safe_dump(document), {})


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/cond/x", "a condition may read anything in the request"),
        ("/reports/x", "a permission's answer is cached where it is asked"),
        ("/open/x", "a public route"),
    ],
    ids=["condition", "permission", "public"],
)
async def test_routes_whose_decision_reads_more_are_never_repeated(path: str, why: str) -> None:
    source = HeldSource({"bob": BOB})
    keycloak = Keycloak({("reports", "read"): PermissionAnswer.GRANTED})
    authorizer = authorizer_for(conditional_and_permission_config(), source, permissions=keycloak)

    await allowed(authorizer, request(path))

    assert authorizer.repeat(KEY) is None, why
    assert source.asked_to_hold == []


def sender_constrained(clock: Callable[[], float]) -> tuple[Authorizer, HeldSource]:
    source = HeldSource(dict(bound.IDENTITIES))
    return authorizer_for(bound.config(), source, clock), source


async def test_a_token_bound_to_a_certificate_is_never_repeated() -> None:
    # Its binding is checked against the certificate each request presents.
    authorizer, source = sender_constrained(bound.Clock())
    pem = (
        "-----BEGIN CERTIFICATE-----\n"
        + base64.b64encode(bound.CERTIFICATE_DER).decode()
        + "\n-----END CERTIFICATE-----\n"
    )

    await allowed(authorizer, bound.request("Bearer cert-token", certificate=pem))

    assert authorizer.repeat(KEY) is None
    assert source.asked_to_hold == []


async def test_a_dpop_token_is_never_repeated() -> None:
    # Every request carries a proof of its own, to be checked and never replayed.
    authorizer, source = sender_constrained(bound.Clock())

    for _ in range(2):  # a fresh proof each time
        assert (await authorizer.check(bound.dpop(), 0.1, KEY)).allowed

    assert authorizer.repeat(KEY) is None
    assert source.asked_to_hold == []


async def test_a_plain_bearer_token_of_the_same_provider_is_repeated() -> None:
    authorizer, _ = sender_constrained(bound.Clock())

    first = await allowed(authorizer, bound.request("Bearer plain-token"))

    assert authorizer.repeat(KEY) is first


async def test_a_deny_is_never_repeated(seed_config: Config) -> None:
    source = HeldSource({"bob": BOB})
    authorizer = authorizer_for(seed_config, source)

    denied = await authorizer.check(request("/admin"), 0.1, KEY)

    assert not denied.allowed
    assert authorizer.repeat(KEY) is None


async def test_without_a_memo_nothing_is_repeated(seed_yaml: str) -> None:
    document = yaml.safe_load(seed_yaml)
    document.setdefault("cache", {})["ttl_seconds"] = 0
    uncached = parse_config(yaml.safe_dump(document), {})
    authorizer = authorizer_for(uncached, HeldSource({"bob": BOB}))

    await allowed(authorizer, request())

    assert authorizer.repeat(KEY) is None


async def test_without_a_holding_source_nothing_is_repeated(seed_config: Config) -> None:
    source = HeldSource({"bob": BOB})
    authorizer = Authorizer(authorizer_settings(seed_config), source)

    await allowed(authorizer, request())

    assert authorizer.repeat(KEY) is None
    assert source.asked_to_hold == []


async def test_repeats_are_bounded_by_the_memo_size(seed_yaml: str) -> None:
    document = yaml.safe_load(seed_yaml)
    document.setdefault("cache", {})["max_entries"] = 2
    small = parse_config(yaml.safe_dump(document), {})
    assert authorizer_settings(small).decision_memo_size == 2
    authorizer = authorizer_for(small, HeldSource({"bob": BOB}))

    for index in range(3):
        await allowed(authorizer, request(f"/api/forms/{index}"), ("form", index))

    kept = [authorizer.repeat(("form", index)) is not None for index in range(3)]
    assert kept.count(True) <= 2
    assert kept[2]
