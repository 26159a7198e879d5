"""The provider router: sends a token to the provider that issued it (or the one its route
names).

Every provider has its own resolver, and so its own caches: two providers never share a
cache entry, even for tokens of the same `sub`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from extauthz_server.core.identity import Identity, Inactive
from extauthz_server.identity.access_token import unverified_issuer
from extauthz_server.identity.strategies import IssuerSource


class TokenSource(Protocol):
    """One provider's identities: its resolver, or the permissions enrichment around it."""

    async def resolve(self, token: str, timeout_s: float) -> Identity | Inactive: ...


# A source's check, with no I/O, that it still holds an identity it answered for a token.
StillHeldFor = Callable[[str, Identity], Callable[[], bool] | None]


@dataclass(frozen=True, slots=True)
class ProviderEntry:
    name: str
    # The issuers this provider's tokens may name (configured and discovered).
    issuers: IssuerSource
    source: TokenSource
    # The source's `still_held` (the resolver's); None where its answers are not simply held
    # (the permissions enrichment makes its own): then no decision of it is repeated.
    still_held: StillHeldFor | None = None


class ProviderRouter:
    """The IdentitySource of the authorizer when there are several providers (and, trivially,
    when there is one).

    A route that names a provider gets that one. Otherwise a JWT goes to the provider whose
    issuer it names (read unverified, only to choose; that provider then verifies it), an
    opaque token to the first provider, and a JWT naming no configured issuer is turned away
    without any call.
    """

    def __init__(self, entries: Sequence[ProviderEntry]) -> None:
        if not entries:
            raise ValueError("at least one provider is needed")
        self._entries = tuple(entries)
        self._by_name = {entry.name: entry for entry in entries}
        self._only = entries[0] if len(entries) == 1 else None

    async def resolve(
        self, token: str, timeout_s: float, provider: str | None = None
    ) -> Identity | Inactive:
        if provider is not None:
            return await self._by_name[provider].source.resolve(token, timeout_s)
        entry = self._only or self.choose(token)
        if entry is None:
            return Inactive.UNKNOWN_ISSUER
        return await entry.source.resolve(token, timeout_s)

    def holding(
        self, token: str, provider: str | None, identity: Identity
    ) -> Callable[[], bool] | None:
        """The `still_held` check of the source that answered `identity` for `token` (the
        route's provider, else the one `resolve` chose), or None when it has none."""
        if provider is not None:
            entry: ProviderEntry | None = self._by_name[provider]
        else:
            entry = self._only or self.choose(token)
        if entry is None or entry.still_held is None:
            return None
        return entry.still_held(token, identity)

    def provider_of(self, token: str) -> str | None:
        """The name of the provider a token without a route's choice goes to."""
        entry = self._only or self.choose(token)
        return entry.name if entry is not None else None

    def choose(self, token: str) -> ProviderEntry | None:
        issuer = unverified_issuer(token)
        if issuer is None:
            return self._entries[0]
        return next(
            (entry for entry in self._entries if issuer in entry.issuers.accepted_issuers), None
        )
