"""The provider's signing keys as the JWT verifiers see them: which algorithms we accept, where
a key comes from (`KeySource`), and the error for a key that is not published.

Shared by the access token verifier and the logout token verifier; pure, no I/O here.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import jwt

from extauthz_server.errors import ExtAuthzError

# Asymmetric algorithms only. "none" would accept unsigned tokens, and HS* would let anyone
# who knows a public key (published in the JWKS) forge tokens via algorithm confusion.
ALLOWED_ALGS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)


class KeyNotFound(ExtAuthzError):
    """No published signing key matches the token's `kid` and `alg`, even after a refetch."""

    def __init__(self, kid: str | None, alg: str) -> None:
        # kid comes from an unverified header: repr() escapes it, and it is cut short.
        super().__init__(f"no signing key for kid={kid!r:.80} alg={alg}")


class KeySource(Protocol):
    async def key_for(self, kid: str | None, alg: str) -> jwt.PyJWK:
        """The verification key for `kid` and `alg`.

        Raises `KeyNotFound` if there is none, `ProviderUnavailable` if keys cannot be read.
        """
        ...


@runtime_checkable
class KeysAtHand(Protocol):
    def key_at_hand(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        """The verification key for `kid` and `alg` if it is already known, without waiting
        for any fetch; None when only `key_for` can tell."""
        ...
