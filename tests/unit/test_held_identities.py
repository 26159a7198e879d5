"""`IdentityResolver.still_held`: the no-I/O check behind a repeated decision, which passes
only while L1 still holds the very identity the token was answered with, fresh and with its
session alive; and the router that finds the resolver to ask."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from extauthz_server.cache.local_cache import Invalidation, LocalIdentityCache
from extauthz_server.cache.resolver import CachePolicy, IdentityResolver
from extauthz_server.core.identity import Identity, Inactive
from extauthz_server.identity.router import ProviderEntry, ProviderRouter

TTL_S = 60.0


@dataclass
class Clock:
    now: float = 1_767_225_700.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Provider:
    """A new Identity object for every call, as a provider's fresh answer would be."""

    calls: list[str] = field(default_factory=list)

    async def identify(self, token: str, timeout_s: float) -> Identity | Inactive:
        self.calls.append(token)
        if token.startswith("inactive"):
            return Inactive.NOT_ACTIVE
        return Identity(
            subject=f"{token}-id",
            username=token,
            email=None,
            client_id="web-app",
            scopes=frozenset(),
            provider_roles=frozenset({"manager"}),
            expires_at=None,
            session_id=f"{token}-session",
        )


def resolver(clock: Clock, max_entries: int = 100, ttl_s: float = TTL_S) -> IdentityResolver:
    local = LocalIdentityCache(max_entries, 1 << 20, 600, wall_clock=clock)
    return IdentityResolver(Provider(), local, CachePolicy(ttl_s, 10), wall_clock=clock)


async def answered(resolver: IdentityResolver, token: str) -> Identity:
    identity = await resolver.resolve(token, 1.0)
    assert isinstance(identity, Identity)
    return identity


async def test_held_while_fresh_and_each_pass_counts_as_an_l1_hit() -> None:
    clock = Clock()
    bob = resolver(clock)
    held = bob.still_held("bob", await answered(bob, "bob"))
    assert held is not None
    hits = bob.stats.l1_hits

    clock.now += TTL_S - 1

    assert held()
    assert held()
    assert bob.stats.l1_hits == hits + 2


async def test_not_held_once_the_cached_answer_is_no_longer_fresh() -> None:
    clock = Clock()
    bob = resolver(clock)
    held = bob.still_held("bob", await answered(bob, "bob"))
    assert held is not None

    clock.now += TTL_S

    assert not held()


async def test_not_held_after_a_logout_ends_the_session() -> None:
    bob = resolver(Clock())
    identity = await answered(bob, "bob")
    held = bob.still_held("bob", identity)
    assert held is not None

    await bob.invalidate(Invalidation(session_id=identity.session_id))

    assert not held()


async def test_not_held_once_another_answer_replaces_the_cached_one() -> None:
    clock = Clock()
    bob = resolver(clock)
    held = bob.still_held("bob", await answered(bob, "bob"))
    assert held is not None

    clock.now += TTL_S  # stale: the next resolve asks the provider again
    await answered(bob, "bob")
    clock.now -= TTL_S / 2  # even back within the first answer's lifetime

    assert not held()


async def test_not_held_once_evicted() -> None:
    bob = resolver(Clock(), max_entries=1)
    held = bob.still_held("bob", await answered(bob, "bob"))
    assert held is not None

    await answered(bob, "alice")

    assert not held()


async def test_nothing_to_hold_for_what_l1_does_not_hold() -> None:
    clock = Clock()
    cached = resolver(clock)
    bob = await answered(cached, "bob")
    await cached.resolve("inactive-token", 1.0)
    uncached = resolver(clock, ttl_s=0)

    assert cached.still_held("alice", bob) is None  # another token
    assert cached.still_held("bob", await answered(resolver(clock), "bob")) is None  # not its
    assert cached.still_held("inactive-token", bob) is None
    assert uncached.still_held("bob", await answered(uncached, "bob")) is None


@pytest.mark.parametrize(
    ("route_provider", "token", "asked"),
    [
        ("second", "bob", "second"),
        (None, "bob", "first"),  # an opaque token goes to the first provider
    ],
    ids=["the-routes-provider", "the-chosen-provider"],
)
async def test_the_router_asks_the_provider_that_answered(
    route_provider: str | None, token: str, asked: str
) -> None:
    clock = Clock()
    resolvers = {"first": resolver(clock), "second": resolver(clock)}
    router = ProviderRouter(
        [ProviderEntry(name, _NoIssuers(), r, r.still_held) for name, r in resolvers.items()]
    )
    identity = await router.resolve(token, 1.0, route_provider)
    assert isinstance(identity, Identity)

    held = router.holding(token, route_provider, identity)

    assert held is not None
    assert held()
    assert resolvers[asked].stats.l1_hits == 1


async def test_a_provider_without_held_answers_repeats_nothing() -> None:
    # The permissions enrichment makes identities of its own.
    source = resolver(Clock())
    router = ProviderRouter([ProviderEntry("only", _NoIssuers(), source)])
    identity = await router.resolve("bob", 1.0)
    assert isinstance(identity, Identity)

    assert router.holding("bob", None, identity) is None


class _NoIssuers:
    accepted_issuers: frozenset[str] = frozenset()
