"""Identity strategies and the provider router, with typed fakes of the introspection client
and the key source (the real ones are exercised against Keycloak in the integration tests)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from extauthz_server.cache.entries import CacheEntry
from extauthz_server.cache.local_cache import Invalidation, LocalIdentityCache
from extauthz_server.cache.resolver import CachePolicy, IdentityResolver
from extauthz_server.core.identity import Identity, Inactive
from extauthz_server.core.roles import ClaimPath
from extauthz_server.identity.access_token import JwtRules
from extauthz_server.identity.router import ProviderEntry, ProviderRouter
from extauthz_server.identity.signing_keys import KeySource
from extauthz_server.identity.strategies import (
    IntrospectionStrategy,
    JwtStrategy,
    JwtThenIntrospectionStrategy,
    JwtVerifier,
)
from extauthz_server.ops.metrics import CheckMetrics
from tests.unit.test_logout_token import OTHER_RSA_KEY, RSA_KEY, FakeKeys, published_keys

ISSUER = "https://sso.example.test/realms/demo"
OTHER_ISSUER = "https://sso.example.test/realms/partners"
ROLE_CLAIMS = (ClaimPath.compile("realm_access.roles", "ext-authz"),)


@dataclass
class CountingIntrospector:
    """Answers every token active for `bob` with the `manager` role, counting calls."""

    calls: list[str] = field(default_factory=list)

    async def introspect(self, token: str, timeout_s: float | None = None) -> Mapping[str, object]:
        self.calls.append(token)
        return {
            "active": True,
            "token_type": "Bearer",
            "sub": "bob-id",
            "username": "bob",
            "exp": time.time() + 300,
            "realm_access": {"roles": ["manager"]},
        }


@dataclass(frozen=True)
class FixedIssuers:
    """The part of EndpointSource a JwtVerifier and the router read: the accepted issuers."""

    accepted_issuers: frozenset[str] = frozenset({ISSUER})


def signed(key: Any = RSA_KEY, **claims: object) -> str:
    payload: dict[str, object] = {
        "iss": ISSUER,
        "sub": "bob-id",
        "typ": "Bearer",
        "exp": int(time.time()) + 300,
        "azp": "web-app",
    } | claims
    return jwt.encode(payload, key, "RS256", headers={"kid": "rsa-1"})


def verifier(rules: JwtRules | None = None, keys: KeySource | None = None) -> JwtVerifier:
    return JwtVerifier(
        keys or published_keys(), FixedIssuers(), rules or JwtRules(), CheckMetrics()
    )


@dataclass
class KeysLoadedOnDemand:
    """Keys as JwksCache holds them: at hand once fetched; before that, only `key_for` (which
    may have to fetch) finds one. `slow_lookups` counts the calls to `key_for`."""

    published: FakeKeys = field(default_factory=published_keys)
    loaded: set[tuple[str | None, str]] = field(default_factory=set)
    slow_lookups: int = 0

    async def key_for(self, kid: str | None, alg: str) -> jwt.PyJWK:
        self.slow_lookups += 1
        key = await self.published.key_for(kid, alg)
        self.loaded.add((kid, alg))
        return key

    def key_at_hand(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        return self.published.keys[(kid, alg)] if (kid, alg) in self.loaded else None


def lightweight_mode(
    introspector: CountingIntrospector, complete_when: tuple[str, ...] = ()
) -> JwtThenIntrospectionStrategy:
    introspection = IntrospectionStrategy(introspector, ROLE_CLAIMS, CheckMetrics())
    return JwtThenIntrospectionStrategy(verifier(), introspection, ROLE_CLAIMS, complete_when)


async def test_jwt_strategy_takes_identity_and_roles_from_the_token() -> None:
    strategy = JwtStrategy(verifier(), ROLE_CLAIMS)

    identity = await strategy.identify(
        signed(realm_access={"roles": ["manager"]}, preferred_username="bob"), 1.0
    )

    assert isinstance(identity, Identity)
    assert identity.subject == "bob-id"
    assert identity.username == "bob"
    assert identity.provider_roles == {"manager"}


async def test_jwt_strategy_refuses_a_token_without_sub() -> None:
    # A Keycloak lightweight token names no user: it cannot be authorised on its own.
    strategy = JwtStrategy(verifier(), ROLE_CLAIMS)
    value = jwt.encode(
        {"iss": ISSUER, "typ": "Bearer", "exp": int(time.time()) + 300, "azp": "web-app"},
        RSA_KEY,
        "RS256",
        headers={"kid": "rsa-1"},
    )

    assert await strategy.identify(value, 1.0) is Inactive.NO_SUBJECT


async def test_jwt_strategy_honours_leeway_past_exp() -> None:
    lenient = JwtStrategy(verifier(JwtRules(leeway_s=30)), ROLE_CLAIMS)
    strict = JwtStrategy(verifier(), ROLE_CLAIMS)
    just_expired = signed(exp=int(time.time()) - 10)

    assert isinstance(await lenient.identify(just_expired, 1.0), Identity)
    assert await strict.identify(just_expired, 1.0) is Inactive.EXPIRED


async def test_jwt_then_introspection_never_introspects_garbage_or_forgeries() -> None:
    introspector = CountingIntrospector()
    strategy = lightweight_mode(introspector)
    bad = [
        "garbage",
        "a.b.c",
        signed(OTHER_RSA_KEY),
        signed(iss=OTHER_ISSUER),
        signed(exp=int(time.time()) - 60),
    ]

    results = [await strategy.identify(value, 1.0) for value in bad]

    assert all(isinstance(result, Inactive) for result in results)
    assert introspector.calls == []


async def test_jwt_then_introspection_introspects_a_genuine_token_for_its_roles() -> None:
    introspector = CountingIntrospector()
    strategy = lightweight_mode(introspector)
    value = signed()

    identity = await strategy.identify(value, 1.0)

    assert isinstance(identity, Identity)
    assert identity.provider_roles == {"manager"}
    assert introspector.calls == [value]


async def test_complete_tokens_are_not_introspected_when_configured() -> None:
    introspector = CountingIntrospector()
    strategy = lightweight_mode(introspector, complete_when=("realm_access",))

    complete = await strategy.identify(signed(realm_access={"roles": ["admin"]}), 1.0)
    lightweight = await strategy.identify(signed(), 1.0)

    assert isinstance(complete, Identity)
    assert complete.provider_roles == {"admin"}
    assert isinstance(lightweight, Identity)
    assert len(introspector.calls) == 1


async def test_locally_decided_answers_are_not_cached_but_provider_answers_are() -> None:
    introspector = CountingIntrospector()
    local = LocalIdentityCache(100, 1 << 20, 60)
    resolver = IdentityResolver(lightweight_mode(introspector), local, CachePolicy(60, 10))

    for _ in range(50):
        assert await resolver.resolve(signed(OTHER_RSA_KEY), 1.0) is Inactive.BAD_JWT
    assert len(local) == 0
    genuine = signed()
    await resolver.resolve(genuine, 1.0)
    await resolver.resolve(genuine, 1.0)

    assert len(local) == 1
    assert len(introspector.calls) == 1


async def test_a_jwt_of_a_logged_out_session_is_refused_until_it_expires() -> None:
    local = LocalIdentityCache(100, 1 << 20, 60)
    resolver = IdentityResolver(JwtStrategy(verifier(), ROLE_CLAIMS), local, CachePolicy(60, 10))
    token, other_session = signed(sid="s-1"), signed(sid="s-2")
    assert isinstance(await resolver.resolve(token, 1.0), Identity)

    await resolver.invalidate(Invalidation(session_id="s-1"))

    for _ in range(3):
        assert await resolver.resolve(token, 1.0) is Inactive.SESSION_ENDED
    assert isinstance(await resolver.resolve(other_session, 1.0), Identity)
    assert len(local) == 1  # the refusal is not cached; the other session is


async def test_a_jwt_whose_key_is_loaded_is_identified_at_once_as_after_a_fetch() -> None:
    keys = KeysLoadedOnDemand()
    strategy = JwtStrategy(verifier(keys=keys), ROLE_CLAIMS)
    resolver = IdentityResolver(strategy, LocalIdentityCache(100, 1 << 20, 60), CachePolicy(60, 10))
    first, second = signed(sid="s-1"), signed(sid="s-2")

    assert strategy.identify_at_hand(first) is None  # the key is not loaded yet
    after_fetch = await resolver.resolve(first, 1.0)
    at_hand = await resolver.resolve(second, 1.0)
    forged = await resolver.resolve(signed(OTHER_RSA_KEY), 1.0)

    assert isinstance(after_fetch, Identity)
    assert isinstance(at_hand, Identity)
    assert (at_hand.subject, at_hand.session_id) == ("bob-id", "s-2")
    assert dataclasses.replace(at_hand, session_id="s-1") == after_fetch
    assert at_hand.claims is None  # dropped before caching, as on the fetch path
    assert forged is Inactive.BAD_JWT
    assert keys.slow_lookups == 1
    assert resolver.stats.lookups == 3
    assert await resolver.resolve(second, 1.0) is at_hand  # cached in L1


async def test_a_logged_out_session_is_refused_when_its_key_is_at_hand() -> None:
    keys = KeysLoadedOnDemand()
    resolver = IdentityResolver(
        JwtStrategy(verifier(keys=keys), ROLE_CLAIMS),
        LocalIdentityCache(100, 1 << 20, 60),
        CachePolicy(60, 10),
    )
    assert isinstance(await resolver.resolve(signed(sid="s-0"), 1.0), Identity)  # loads the key

    await resolver.invalidate(Invalidation(session_id="s-1"))

    assert await resolver.resolve(signed(sid="s-1"), 1.0) is Inactive.SESSION_ENDED
    assert keys.slow_lookups == 1


@dataclass
class RecordingSource:
    name: str
    seen: list[str] = field(default_factory=list)

    async def resolve(self, token: str, timeout_s: float) -> Identity | Inactive:
        self.seen.append(token)
        return Inactive.NOT_ACTIVE


def router(*sources: RecordingSource) -> ProviderRouter:
    issuers = {"demo": ISSUER, "partners": OTHER_ISSUER}
    return ProviderRouter(
        [ProviderEntry(s.name, FixedIssuers(frozenset({issuers[s.name]})), s) for s in sources]
    )


async def test_router_sends_a_jwt_to_the_provider_of_its_issuer() -> None:
    demo, partners = RecordingSource("demo"), RecordingSource("partners")
    routes = router(demo, partners)
    partner_token = signed(iss=OTHER_ISSUER)

    await routes.resolve(partner_token, 1.0)

    assert partners.seen == [partner_token]
    assert demo.seen == []


async def test_router_turns_away_a_jwt_of_an_unknown_issuer_without_asking_anyone() -> None:
    demo, partners = RecordingSource("demo"), RecordingSource("partners")

    result = await router(demo, partners).resolve(signed(iss="https://evil.test"), 1.0)

    assert result is Inactive.UNKNOWN_ISSUER
    assert demo.seen == partners.seen == []


async def test_router_sends_opaque_tokens_to_the_first_provider() -> None:
    demo, partners = RecordingSource("demo"), RecordingSource("partners")

    await router(demo, partners).resolve("opaque-reference-token", 1.0)

    assert demo.seen == ["opaque-reference-token"]


async def test_route_provider_wins_over_the_token_issuer() -> None:
    demo, partners = RecordingSource("demo"), RecordingSource("partners")
    demo_token = signed()

    await router(demo, partners).resolve(demo_token, 1.0, provider="partners")

    assert partners.seen == [demo_token]
    assert demo.seen == []


async def test_single_provider_gets_every_token_whatever_its_issuer() -> None:
    demo = RecordingSource("demo")
    foreign = signed(iss="https://elsewhere.test")

    await router(demo).resolve(foreign, 1.0)

    assert demo.seen == [foreign]


@dataclass
class CountingSharedCache:
    """A SharedCache (the Redis seam) that holds nothing and counts reads."""

    reads: int = 0
    writes: int = 0

    async def get(self, digest: bytes) -> CacheEntry | None:
        self.reads += 1
        return None

    def put_later(self, digest: bytes, entry: CacheEntry) -> None:
        self.writes += 1

    async def invalidate(self, invalidation: Invalidation) -> Invalidation:
        return invalidation


async def test_tokens_that_cannot_be_jwts_never_cost_a_redis_read() -> None:
    introspector = CountingIntrospector()
    shared = CountingSharedCache()
    resolver = IdentityResolver(
        lightweight_mode(introspector),
        LocalIdentityCache(100, 1 << 20, 60),
        CachePolicy(60, 10),
        shared=shared,
    )
    hs256 = jwt.encode({"iss": ISSUER}, "k" * 32, "HS256")

    for garbage in ("opaque", "a.b.c", "a.b.c.d.e", hs256):
        assert await resolver.resolve(garbage, 1.0) is Inactive.BAD_JWT
    assert shared.reads == 0
    assert resolver.stats.screened_out == 4
    await resolver.resolve(signed(), 1.0)

    assert shared.reads == 1
    assert len(introspector.calls) == 1


async def test_a_jwt_whose_key_is_at_hand_costs_no_redis_round_trip() -> None:
    keys = KeysLoadedOnDemand()
    shared = CountingSharedCache()
    resolver = IdentityResolver(
        JwtStrategy(verifier(keys=keys), ROLE_CLAIMS),
        LocalIdentityCache(100, 1 << 20, 60),
        CachePolicy(60, 10),
        shared=shared,
    )

    first, second = signed(sid="s-1"), signed(sid="s-2")
    await resolver.resolve(first, 1.0)  # the key is not loaded yet: L2, then a fetch
    await resolver.resolve(second, 1.0)
    again = await resolver.resolve(second, 1.0)

    assert isinstance(again, Identity)
    assert (shared.reads, shared.writes) == (1, 1)
    assert keys.slow_lookups == 1
    assert resolver.stats.l1_hits == 1
