"""Remote permissions enrichment against a real permissions API on a loopback port, and the
client credentials token from a real Keycloak."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from extauthz_server.config.permissions import parse_permissions
from extauthz_server.config.reader import Section
from extauthz_server.core.identity import Identity, Inactive
from extauthz_server.core.roles import RoleMap
from extauthz_server.core.secret import Secret
from extauthz_server.errors import PermissionsUnavailable
from extauthz_server.identity.client_credentials import ClientCredentialsTokenSource
from extauthz_server.identity.discovery import EndpointSource
from extauthz_server.identity.introspection import ClientAuthMethod, ClientCredentials
from extauthz_server.metadata.enrichment import (
    EnrichedIdentitySource,
    build_enriched_source,
    new_permissions_cache,
)
from extauthz_server.metadata.permissions import PermissionsSettings
from extauthz_server.metadata.permissions_client import PermissionsClient
from tests.support.keycloak import EXT_AUTHZ_CLIENT_ID, EXT_AUTHZ_SECRET, Keycloak
from tests.support.permissions_api import Fault, PermissionsApi

SUB = "4f2a9c1e-bob"
BOB = Identity(
    subject=SUB,
    username="bob",
    email="bob@example.com",
    client_id="web-app",
    scopes=frozenset({"openid"}),
    provider_roles=frozenset({"manager"}),
    expires_at=None,
)
ROLE_MAP = RoleMap(
    {"Manager for Europe": frozenset({"regional-manager"}), "manager": frozenset({"creator"})}
)
BUDGET_S = 5.0


class FixedSource:
    """The provider side: answers every token with one result, counting the calls."""

    def __init__(self, result: Identity | Inactive = BOB) -> None:
        self.result = result
        self.calls = 0

    async def resolve(self, token: str, timeout_s: float) -> Identity | Inactive:
        self.calls += 1
        return self.result


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class NoEndpoints:
    """For sources that never need the provider's token endpoint."""

    async def token_endpoint(self, timeout_s: float) -> str:
        raise AssertionError("the token endpoint was not expected to be needed")

    def forget(self) -> None:
        return None


def settings_for(url: str, **options: Any) -> PermissionsSettings:
    """Settings as the configuration loader makes them, from the YAML keys."""
    settings = parse_permissions(Section({"url": url, **options}, "provider.permissions"), Path())
    assert settings is not None
    return settings


@pytest.fixture
async def api() -> AsyncIterator[PermissionsApi]:
    server = PermissionsApi(permissions={SUB: ["Manager for Europe"]})
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def enrich(
    session: aiohttp.ClientSession, api: PermissionsApi
) -> Callable[..., EnrichedIdentitySource]:
    """Build an EnrichedIdentitySource on the test API, as the server would."""

    def build(
        inner: FixedSource | None = None,
        clock: Clock | None = None,
        provider_name: str = "keycloak",
        url: str | None = None,
        **options: Any,
    ) -> EnrichedIdentitySource:
        return build_enriched_source(
            inner or FixedSource(),
            settings_for(url or api.url_template, **options),
            session,
            provider_name=provider_name,
            credentials=None,
            endpoints=NoEndpoints(),
            clock=clock or time.monotonic,
        )

    return build


async def test_permissions_join_the_provider_roles_and_map_to_internal_roles(
    enrich: Callable[..., EnrichedIdentitySource],
) -> None:
    source = enrich()

    identity = await source.resolve("token", BUDGET_S)

    assert isinstance(identity, Identity)
    assert identity.provider_roles == {"manager", "Manager for Europe"}
    assert ROLE_MAP.map(identity.provider_roles) == {"creator", "regional-manager"}
    assert (identity.subject, identity.username, identity.client_id) == (SUB, "bob", "web-app")


async def test_one_call_per_subject_and_the_same_identity_object_for_many_checks(
    enrich: Callable[..., EnrichedIdentitySource], api: PermissionsApi
) -> None:
    source = enrich()

    results = [await source.resolve("token", BUDGET_S) for _ in range(50)]

    assert api.request_count == 1
    assert source.stats.calls == 1
    assert source.stats.cache_hits == 49
    # The authorizer remembers allow decisions by identity object: it must stay one object.
    assert all(result is results[0] for result in results)


async def test_concurrent_checks_of_one_subject_share_one_call(
    enrich: Callable[..., EnrichedIdentitySource], api: PermissionsApi
) -> None:
    api.fault, api.delay_s = Fault.SLOW, 0.2
    source = enrich(timeout_ms=2000)

    results = await asyncio.gather(*(source.resolve("token", BUDGET_S) for _ in range(20)))

    assert api.request_count == 1
    assert source.stats.coalesced == 19
    assert all(
        isinstance(r, Identity) and "Manager for Europe" in r.provider_roles for r in results
    )


async def test_when_the_check_making_the_call_is_cancelled_a_waiting_check_calls_again(
    enrich: Callable[..., EnrichedIdentitySource], api: PermissionsApi
) -> None:
    api.fault, api.delay_s = Fault.SLOW, 0.2
    source = enrich(timeout_ms=2000)
    leader = asyncio.create_task(source.resolve("token", BUDGET_S))
    await api.received.wait()
    follower = asyncio.create_task(source.resolve("token", BUDGET_S))
    await asyncio.sleep(0)  # the follower starts waiting for the leader's call

    leader.cancel()
    identity = await follower

    assert leader.cancelled()
    assert isinstance(identity, Identity)
    assert "Manager for Europe" in identity.provider_roles
    assert api.request_count == 2


async def test_permissions_are_fetched_again_after_their_ttl(
    enrich: Callable[..., EnrichedIdentitySource], api: PermissionsApi
) -> None:
    clock = Clock()
    source = enrich(clock=clock, ttl_seconds=30)
    first = await source.resolve("token", BUDGET_S)
    clock.now += 29
    assert await source.resolve("token", BUDGET_S) is first
    api.permissions[SUB] = ["Manager for Asia"]

    clock.now += 2
    second = await source.resolve("token", BUDGET_S)

    assert api.request_count == 2
    assert isinstance(second, Identity)
    assert second.provider_roles == {"manager", "Manager for Asia"}


async def test_two_providers_with_the_same_subject_never_share_an_entry(
    session: aiohttp.ClientSession, api: PermissionsApi
) -> None:
    settings = settings_for(api.url_template)
    shared = new_permissions_cache(100)
    sources = [
        EnrichedIdentitySource(
            FixedSource(), PermissionsClient(session, settings, None), settings, name, cache=shared
        )
        for name in ("keycloak", "partner-idp")
    ]

    for source in sources:
        await source.resolve("token", BUDGET_S)
        await source.resolve("token", BUDGET_S)

    assert api.request_count == 2
    assert len(shared) == 2


async def test_an_answer_that_depends_on_the_client_is_cached_per_client(
    enrich: Callable[..., EnrichedIdentitySource], api: PermissionsApi
) -> None:
    inner = FixedSource()
    source = enrich(inner=inner, url=api.url_template + "?client={client_id}")

    await source.resolve("token", BUDGET_S)
    inner.result = replace(BOB, client_id="mobile-app")
    await source.resolve("token", BUDGET_S)
    await source.resolve("token", BUDGET_S)

    assert [call.raw_path.split("?")[1] for call in api.calls] == [
        "client=web-app",
        "client=mobile-app",
    ]


async def test_values_go_out_percent_encoded_as_one_segment(
    enrich: Callable[..., EnrichedIdentitySource], api: PermissionsApi
) -> None:
    inner = FixedSource(replace(BOB, subject="../admin/x y"))
    source = enrich(inner=inner)

    await source.resolve("token", BUDGET_S)

    assert api.calls[0].raw_path == "/users/..%2Fadmin%2Fx%20y/permissions"
    assert api.calls[0].subject == "../admin/x y"


async def test_post_sends_the_identity_as_a_json_body(
    enrich: Callable[..., EnrichedIdentitySource], api: PermissionsApi
) -> None:
    source = enrich(url=api.post_url, method="POST")

    identity = await source.resolve("token", BUDGET_S)

    assert isinstance(identity, Identity)
    assert "Manager for Europe" in identity.provider_roles
    (call,) = api.calls
    assert call.method == "POST"
    assert call.body == {"sub": SUB, "username": "bob", "client_id": "web-app"}


async def test_a_subject_the_api_does_not_know_has_no_permissions_and_is_remembered(
    enrich: Callable[..., EnrichedIdentitySource], api: PermissionsApi
) -> None:
    api.permissions.clear()
    inner = FixedSource()
    source = enrich(inner=inner)

    results = [await source.resolve("token", BUDGET_S) for _ in range(3)]

    assert all(result is BOB for result in results)
    assert api.request_count == 1


async def test_an_inactive_token_passes_through_without_a_call(
    enrich: Callable[..., EnrichedIdentitySource], api: PermissionsApi
) -> None:
    source = enrich(inner=FixedSource(Inactive.EXPIRED))

    assert await source.resolve("token", BUDGET_S) is Inactive.EXPIRED
    assert api.request_count == 0


@pytest.mark.parametrize(
    "fault",
    [Fault.SERVER_ERROR, Fault.MALFORMED, Fault.WRONG_SHAPE, Fault.SLOW],
    ids=["500", "malformed-json", "wrong-shape", "slow"],
)
async def test_a_failing_api_denies_by_default_and_nothing_is_cached(
    enrich: Callable[..., EnrichedIdentitySource], api: PermissionsApi, fault: Fault
) -> None:
    api.fault, api.delay_s = fault, 5.0
    source = enrich(timeout_ms=100)

    with pytest.raises(PermissionsUnavailable):
        await source.resolve("token", BUDGET_S)
    api.fault = Fault.NONE
    identity = await source.resolve("token", BUDGET_S)

    assert isinstance(identity, Identity)
    assert "Manager for Europe" in identity.provider_roles
    assert (source.stats.calls, source.stats.failures) == (2, 1)


async def test_an_unreachable_api_denies(
    enrich: Callable[..., EnrichedIdentitySource], api: PermissionsApi
) -> None:
    url = api.url_template
    await api.stop()
    source = enrich(url=url)

    with pytest.raises(PermissionsUnavailable, match="permissions API: connection refused"):
        await source.resolve("token", BUDGET_S)


async def test_with_on_failure_ignore_the_identity_goes_on_unenriched(
    enrich: Callable[..., EnrichedIdentitySource],
    api: PermissionsApi,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="extauthz_server.metadata.enrichment")
    api.fault = Fault.SERVER_ERROR
    source = enrich(on_failure="ignore")

    results = [await source.resolve("token", BUDGET_S) for _ in range(3)]
    api.fault = Fault.NONE
    recovered = await source.resolve("token", BUDGET_S)

    assert all(result is BOB for result in results)
    assert source.stats.passed_unenriched == 3
    assert source.stats.failures == 3
    assert isinstance(recovered, Identity)
    assert "Manager for Europe" in recovered.provider_roles
    # One line when the outage starts, one when it ends; never one per check.
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "permissions API unavailable (permissions API answered 500)" in messages[0]
    assert "answers again" in messages[1]


@pytest.mark.parametrize(
    ("timeout_ms", "budget_s"),
    [(100, BUDGET_S), (10_000, 0.1)],
    ids=["its-own-timeout", "the-check-budget-when-shorter"],
)
async def test_a_slow_api_is_cut_at_the_shorter_of_its_timeout_and_the_check_budget(
    enrich: Callable[..., EnrichedIdentitySource],
    api: PermissionsApi,
    timeout_ms: int,
    budget_s: float,
) -> None:
    api.fault, api.delay_s = Fault.SLOW, 5.0
    source = enrich(timeout_ms=timeout_ms)

    started = time.monotonic()
    with pytest.raises(PermissionsUnavailable, match="timed out"):
        await source.resolve("token", budget_s)

    assert time.monotonic() - started < 1.0


async def test_a_static_bearer_token_is_sent_exactly(
    enrich: Callable[..., EnrichedIdentitySource], api: PermissionsApi
) -> None:
    api.authorize = lambda header: header == "Bearer perm1ss10ns-t0ken"
    source = enrich(auth={"type": "bearer", "token": "perm1ss10ns-t0ken"})

    identity = await source.resolve("token", BUDGET_S)

    assert isinstance(identity, Identity)
    assert "Manager for Europe" in identity.provider_roles
    assert [call.authorization for call in api.calls] == ["Bearer perm1ss10ns-t0ken"]


async def test_a_refused_static_token_is_not_retried(
    enrich: Callable[..., EnrichedIdentitySource], api: PermissionsApi
) -> None:
    api.authorize = lambda header: False
    source = enrich(auth={"type": "bearer", "token": "wrong"})

    with pytest.raises(PermissionsUnavailable, match="401"):
        await source.resolve("token", BUDGET_S)

    assert api.request_count == 1


# -- circuit breaker ----------------------------------------------------------------------------

BREAKER = {"failures": 3, "open_seconds": 5}


async def fail_times(
    source: EnrichedIdentitySource, times: int, budget_s: float = BUDGET_S
) -> None:
    for _ in range(times):
        with pytest.raises(PermissionsUnavailable):
            await source.resolve("token", budget_s)


@pytest.mark.parametrize("fault", [Fault.SERVER_ERROR, Fault.SLOW], ids=["500", "slow"])
async def test_after_repeated_failures_checks_fail_at_once_without_calling_the_api(
    enrich: Callable[..., EnrichedIdentitySource], api: PermissionsApi, fault: Fault
) -> None:
    api.fault, api.delay_s = fault, 5.0
    source = enrich(timeout_ms=200, circuit_breaker=BREAKER)
    await fail_times(source, 3)

    started = time.monotonic()
    for _ in range(20):
        with pytest.raises(PermissionsUnavailable, match="circuit open"):
            await source.resolve("token", BUDGET_S)

    assert api.request_count == 3
    assert (source.stats.calls, source.stats.short_circuited) == (3, 20)
    # Twenty checks that each waited out the 200 ms timeout would take 4 s.
    assert time.monotonic() - started < 1.0


async def test_while_open_on_failure_ignore_passes_identities_on_unenriched(
    enrich: Callable[..., EnrichedIdentitySource], api: PermissionsApi
) -> None:
    api.fault = Fault.SERVER_ERROR
    source = enrich(on_failure="ignore", circuit_breaker=BREAKER)

    results = [await source.resolve("token", BUDGET_S) for _ in range(10)]

    assert all(result is BOB for result in results)
    assert api.request_count == 3
    assert source.stats.passed_unenriched == 10


async def test_after_the_open_period_one_call_probes_and_a_recovered_api_closes_it(
    enrich: Callable[..., EnrichedIdentitySource], api: PermissionsApi
) -> None:
    clock = Clock()
    api.fault = Fault.SERVER_ERROR
    source = enrich(clock=clock, circuit_breaker=BREAKER, ttl_seconds=0)
    await fail_times(source, 3)
    api.fault = Fault.NONE

    clock.now += 4.9
    await fail_times(source, 1)  # still open: the API's recovery is not seen yet
    assert api.request_count == 3
    clock.now += 0.1
    identity = await source.resolve("token", BUDGET_S)

    assert isinstance(identity, Identity)
    assert "Manager for Europe" in identity.provider_roles
    assert api.request_count == 4
    # Closed again: every uncached check calls the API (ttl 0 caches nothing).
    for _ in range(3):
        await source.resolve("token", BUDGET_S)
    assert api.request_count == 7


async def test_a_failed_probe_keeps_it_open_for_another_period(
    enrich: Callable[..., EnrichedIdentitySource], api: PermissionsApi
) -> None:
    clock = Clock()
    api.fault = Fault.SERVER_ERROR
    source = enrich(clock=clock, circuit_breaker=BREAKER)
    await fail_times(source, 3)

    clock.now += 5
    await fail_times(source, 5)  # the first is the probe, the API still fails it
    assert api.request_count == 4
    clock.now += 5
    api.fault = Fault.NONE
    assert isinstance(await source.resolve("token", BUDGET_S), Identity)
    assert api.request_count == 5


async def test_calls_cut_short_by_the_check_budget_do_not_open_it(
    enrich: Callable[..., EnrichedIdentitySource], api: PermissionsApi
) -> None:
    # Checks that spent their budget on the identity leave the API little time; its
    # timing out then says nothing about the API, so the circuit stays closed.
    api.fault, api.delay_s = Fault.SLOW, 5.0
    source = enrich(timeout_ms=2000, circuit_breaker=BREAKER)
    await fail_times(source, 5, budget_s=0.05)

    assert api.request_count == 5
    assert source.stats.short_circuited == 0


async def test_failures_zero_turns_the_breaker_off(
    enrich: Callable[..., EnrichedIdentitySource], api: PermissionsApi
) -> None:
    api.fault = Fault.SERVER_ERROR
    source = enrich(circuit_breaker={"failures": 0})
    await fail_times(source, 10)

    assert api.request_count == 10


# -- client credentials against the real Keycloak ---------------------------------------------


class KeycloakTokenCheck:
    """The permissions API's side: accept only bearer tokens that Keycloak signed for our
    client, remembering each one seen."""

    def __init__(self, keycloak: Keycloak) -> None:
        with urllib.request.urlopen(keycloak.jwks_uri, timeout=10) as reply:  # noqa: S310
            self._keys = jwt.PyJWKSet.from_dict(json.load(reply))
        self._issuer = keycloak.issuer
        self.revoked: set[str] = set()
        self.seen: list[str] = []

    def __call__(self, header: str | None) -> bool:
        if header is None or not header.startswith("Bearer "):
            return False
        token = header.removeprefix("Bearer ")
        self.seen.append(token)
        if token in self.revoked:
            return False
        kid = jwt.get_unverified_header(token).get("kid")
        key = next((k for k in self._keys.keys if k.key_id == kid), None)
        if key is None:
            return False
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                issuer=self._issuer,
                options={"verify_aud": False, "require": ["exp", "iat", "iss"]},
            )
        except jwt.InvalidTokenError:
            return False
        return bool(claims.get("azp") == EXT_AUTHZ_CLIENT_ID)


def keycloak_credentials(secret: str = EXT_AUTHZ_SECRET) -> ClientCredentials:
    return ClientCredentials(
        EXT_AUTHZ_CLIENT_ID, Secret(secret), ClientAuthMethod.CLIENT_SECRET_BASIC
    )


@pytest.mark.keycloak
async def test_client_credentials_token_from_keycloak_is_fetched_once_and_reused(
    keycloak: Keycloak, session: aiohttp.ClientSession, api: PermissionsApi
) -> None:
    check = KeycloakTokenCheck(keycloak)
    api.authorize = check
    subjects = [f"user-{n}" for n in range(8)]
    api.permissions.update({s: ["Manager for Europe"] for s in subjects})
    inner = FixedSource()
    source = build_enriched_source(
        inner,
        # A token request may take longer than one check's budget on a cold Keycloak; it
        # goes on in the background, so this test gives the checks room.
        settings_for(api.url_template, auth="client_credentials", timeout_ms=10_000),
        session,
        provider_name="keycloak",
        credentials=keycloak_credentials(),
        # The token endpoint comes from Keycloak's discovery document.
        endpoints=EndpointSource(session, keycloak.issuer, None),
    )

    results = []
    for subject in subjects:
        inner.result = replace(BOB, subject=subject)
        checks = [source.resolve("token", BUDGET_S) for _ in range(5)]
        results.extend(await asyncio.gather(*checks))

    assert all(
        isinstance(r, Identity) and "Manager for Europe" in r.provider_roles for r in results
    )
    assert api.request_count == len(subjects)
    assert len(set(check.seen)) == 1  # one token for every call
    await source.close()


@pytest.mark.keycloak
async def test_a_token_the_api_refuses_is_replaced_once(
    keycloak: Keycloak, session: aiohttp.ClientSession, api: PermissionsApi
) -> None:
    check = KeycloakTokenCheck(keycloak)
    api.authorize = check
    clock = Clock()
    tokens = ClientCredentialsTokenSource(
        session,
        keycloak_credentials(),
        EndpointSource(session, keycloak.issuer, None),
        token_endpoint=keycloak.token_endpoint,
        clock=clock,
    )
    settings = settings_for(api.url_template, auth="client_credentials", timeout_ms=10_000)
    client = PermissionsClient(session, settings, tokens)
    assert await client.fetch(BOB, BUDGET_S) == {"Manager for Europe"}
    first = check.seen[-1]

    # Revoked before its expiry (e.g. the API rotated its trust): the next call is refused
    # once, then made again with a new token.
    check.revoked.add(first)
    clock.now += 5
    assert await client.fetch(BOB, BUDGET_S) == {"Manager for Europe"}

    assert check.seen[-2:] == [first, check.seen[-1]]
    assert check.seen[-1] != first
    assert tokens.stats.requests == 2
    await client.close()


@pytest.mark.keycloak
async def test_client_credentials_that_keycloak_refuses_deny_the_check(
    keycloak: Keycloak,
    session: aiohttp.ClientSession,
    api: PermissionsApi,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = build_enriched_source(
        FixedSource(),
        settings_for(api.url_template, auth="client_credentials", timeout_ms=10_000),
        session,
        provider_name="keycloak",
        credentials=keycloak_credentials("not-the-secret"),
        endpoints=EndpointSource(session, keycloak.issuer, None),
    )

    with pytest.raises(PermissionsUnavailable, match="token endpoint answered 401"):
        await source.resolve("token", BUDGET_S)

    assert api.request_count == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("provider.client_secret" in message for message in errors), errors
    assert not any("not-the-secret" in r.getMessage() for r in caplog.records)
    await source.close()
