"""The provider's signing keys, read from its JWKS over aiohttp and refetched, rate-limited,
when a token names a key we have not seen (key rotation)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt

from extauthz_server.errors import ProviderUnavailable
from extauthz_server.identity.provider_http import fetch_json
from extauthz_server.identity.signing_keys import KeyNotFound

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 256 * 1024

# Which JWK (kty, crv) can verify which JWS algorithm (RFC 7518 §3.3-3.5). Symmetric "oct"
# keys are absent on purpose: a published HMAC secret would let anyone mint tokens.
_KEY_SHAPE_FOR_ALG: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
}


@dataclass(frozen=True, slots=True)
class _SigningKey:
    kid: str | None
    alg: str
    jwk: jwt.PyJWK


class JwksCache:
    """Signing keys by `kid` and `alg`, fetched on first use.

    An unknown `kid` triggers a refetch, at most one per `min_refetch_interval_s` however
    many tokens name unknown keys, so forged `kid`s cannot make us hammer the provider.
    The start-up load and background refreshes do not count towards that limit, so a key
    rotated just after one of them is still picked up by the first token that names it.
    A failed fetch keeps the previous keys and is remembered for the same interval. Keys
    older than `max_age_s` are refreshed in the background, so a key the provider has
    withdrawn stops verifying tokens. One fetch runs at a time, shared by every caller, and
    a caller that gives up (its own deadline) does not cancel it for the others.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        jwks_uri: Callable[[float], Awaitable[str]],
        timeout_s: float,
        min_refetch_interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        max_age_s: float = 600.0,
    ) -> None:
        self._session = session
        self._jwks_uri = jwks_uri
        self._timeout_s = timeout_s
        self._min_refetch_interval_s = min_refetch_interval_s
        self._max_age_s = max_age_s
        self._clock = clock
        self._keys: tuple[_SigningKey, ...] = ()
        self._loaded_at: float | None = None
        self._attempted_at: float | None = None
        self._unknown_kid_fetched_at: float | None = None
        self._last_failed = False
        self._fetching: asyncio.Task[None] | None = None
        self.fetches = 0

    async def key_for(self, kid: str | None, alg: str, timeout_s: float | None = None) -> jwt.PyJWK:
        """The key to verify a token signed with `alg` by key `kid`.

        Raises `KeyNotFound`, or `ProviderUnavailable` when the JWKS cannot be read (within
        `timeout_s` when given).
        """
        if alg not in _KEY_SHAPE_FOR_ALG:
            raise KeyNotFound(kid, alg)
        key = self.key_at_hand(kid, alg)
        if key is None:
            await self._refetch(
                self._timeout_s if timeout_s is None else timeout_s, for_unknown_kid=True
            )
            key = self._find(kid, alg)
        if key is None:
            raise KeyNotFound(kid, alg)
        return key

    def key_at_hand(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        """As `key_for`, for a key already loaded; None when finding it would mean a fetch."""
        if alg not in _KEY_SHAPE_FOR_ALG:
            return None
        key = self._find(kid, alg)
        if key is not None and self._is_old():
            self._start_fetch()
        return key

    @property
    def loaded(self) -> bool:
        return self._loaded_at is not None

    async def load(self, timeout_s: float) -> None:
        """Fetch the keys now (at start-up), unless they are already known."""
        if self._loaded_at is None:
            await self._refetch(timeout_s, for_unknown_kid=False)

    def _is_old(self) -> bool:
        return (
            self._loaded_at is not None
            and self._clock() - self._loaded_at > self._max_age_s
            and (self._fetching is None or self._fetching.done())
            and not self._recently(self._attempted_at)
        )

    def _find(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        matches = [k.jwk for k in self._keys if k.alg == alg and (kid is None or k.kid == kid)]
        # Without a kid, only an unambiguous key will do.
        if len(matches) == 1 or (kid is not None and matches):
            return matches[0]
        return None

    def _recently(self, at: float | None) -> bool:
        return at is not None and self._clock() - at < self._min_refetch_interval_s

    def _start_fetch(self) -> asyncio.Task[None]:
        self._attempted_at = self._clock()
        self.fetches += 1
        task = asyncio.create_task(self._fetch_and_keep())
        # Nobody may be waiting for a background refresh; its failure is already logged.
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._fetching = task
        return task

    async def _refetch(self, timeout_s: float, *, for_unknown_kid: bool) -> None:
        task = self._fetching
        if task is None or task.done():
            if self._last_failed and self._recently(self._attempted_at):
                raise ProviderUnavailable("JWKS fetch failed recently")
            if for_unknown_kid and self._recently(self._unknown_kid_fetched_at):
                return  # use what the last fetch gave
            task = self._start_fetch()
            if for_unknown_kid:
                self._unknown_kid_fetched_at = self._attempted_at
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(task)
        except TimeoutError as exc:
            raise ProviderUnavailable("JWKS fetch timed out") from exc

    async def _fetch_and_keep(self) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                keys = await self._fetch()
        except TimeoutError as exc:
            self._last_failed = True
            log.warning("JWKS fetch timed out after %.1fs", self._timeout_s)
            raise ProviderUnavailable("JWKS fetch timed out") from exc
        except ProviderUnavailable as exc:
            self._last_failed = True
            log.warning("JWKS fetch failed: %s", exc)
            raise
        self._keys = keys
        self._loaded_at = self._clock()
        self._last_failed = False

    async def _fetch(self) -> tuple[_SigningKey, ...]:
        url = await self._jwks_uri(self._timeout_s)
        document = await fetch_json(
            self._session, url, what="JWKS document", max_bytes=MAX_JWKS_BYTES
        )
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise ProviderUnavailable("JWKS document has no keys array")
        keys = tuple(key for entry in entries for key in _signing_keys(entry))
        if not keys:
            log.warning("JWKS at %s has no usable signing key", url)
        log.info("loaded %d signing keys from JWKS", len(keys))
        return keys


def _signing_keys(entry: object) -> list[_SigningKey]:
    """The (kid, alg) pairs a JWKS entry may verify; none for encryption or unusable keys."""
    if not isinstance(entry, dict):
        return []
    # Keycloak publishes an RSA-OAEP "use": "enc" key next to its signing keys (FACTS §5).
    if entry.get("use", "sig") != "sig":
        return []
    key_ops = entry.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        return []
    kid = entry.get("kid")
    if kid is not None and not isinstance(kid, str):
        return []
    declared = entry.get("alg")
    if declared is None:
        algs = [alg for alg, shape in _KEY_SHAPE_FOR_ALG.items() if _has_shape(entry, shape)]
    elif declared in _KEY_SHAPE_FOR_ALG and _has_shape(entry, _KEY_SHAPE_FOR_ALG[declared]):
        algs = [declared]
    else:
        return []
    keys: list[_SigningKey] = []
    for alg in algs:
        try:
            jwk = jwt.PyJWK(entry, algorithm=alg)
        except jwt.PyJWTError as exc:
            log.warning("skipping JWKS key %r: %s", kid, type(exc).__name__)
            return []
        if jwk.Algorithm.check_key_length(jwk.key):
            log.warning("skipping JWKS key %r: too short for %s", kid, alg)
            return []
        keys.append(_SigningKey(kid, alg, jwk))
    return keys


def _has_shape(entry: dict[str, Any], shape: tuple[str, str | None]) -> bool:
    kty, crv = shape
    return entry.get("kty") == kty and (crv is None or entry.get("crv") == crv)
