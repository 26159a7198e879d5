"""Access tokens for calling other services as ourselves: the OAuth 2.0 client credentials
grant (RFC 6749 §4.4) at the provider's token endpoint, cached until shortly before expiry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from extauthz_server.core.secret import Secret
from extauthz_server.core.strict_json import loads_strict, oauth_error_code
from extauthz_server.errors import PermissionsUnavailable, ProviderUnavailable
from extauthz_server.identity.introspection import ClientAuthMethod, ClientCredentials
from extauthz_server.identity.provider_http import read_bounded

log = logging.getLogger(__name__)

MAX_TOKEN_RESPONSE_BYTES = 64 * 1024
# A token request runs on its own, not on the budget of the check that started it: a cold
# token endpoint may take longer than one check may wait, and the next check then finds it.
TOKEN_REQUEST_TIMEOUT_S = 5.0
# At most one token request starts per this interval once one has been made, however many
# tokens fail or are refused: a permissions API that rejects every token must not turn each
# check into a token request.
MIN_REQUEST_INTERVAL_S = 1.0
# RFC 6749 §5.1 only recommends expires_in; without it a token is kept this long.
DEFAULT_EXPIRES_IN_S = 60.0


class AccessTokenSource(Protocol):
    """Where the bearer token for an outgoing call comes from."""

    async def token(self, timeout_s: float) -> str: ...

    def invalidate(self, token: str) -> bool:
        """The token was refused; True if asking again may give a different one."""
        ...

    async def close(self) -> None: ...


class TokenEndpoints(Protocol):
    """The provider's token endpoint (EndpointSource, from discovery)."""

    async def token_endpoint(self, timeout_s: float) -> str: ...

    def forget(self) -> None: ...


@dataclass(frozen=True, slots=True)
class StaticToken:
    """A configured bearer token; it cannot be renewed."""

    secret: Secret

    async def token(self, timeout_s: float) -> str:
        return self.secret.reveal()

    def invalidate(self, token: str) -> bool:
        return False

    async def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    renew_at: float  # from here a renewal starts in the background, the token still serves
    usable_until: float


@dataclass(slots=True)
class TokenStats:
    requests: int = 0
    failures: int = 0


class ClientCredentialsTokenSource:
    """One cached token; one request at a time renews it, whoever needs it meanwhile waits
    for that request (each within its own budget)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        credentials: ClientCredentials,
        endpoints: TokenEndpoints,
        *,
        token_endpoint: str | None = None,
        scope: str | None = None,
        request_timeout_s: float = TOKEN_REQUEST_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._credentials = credentials
        self._endpoints = endpoints
        self._configured_endpoint = token_endpoint
        self._form = {"grant_type": "client_credentials"}
        if scope:
            self._form["scope"] = scope
        self._headers = {"Accept": "application/json"}
        if credentials.method is ClientAuthMethod.CLIENT_SECRET_BASIC:
            self._headers["Authorization"] = credentials.basic_authorization()
        self._request_timeout_s = request_timeout_s
        self._clock = clock
        self._cached: _Token | None = None
        self._renewal: asyncio.Task[_Token] | None = None
        self._last_request_at = -math.inf
        self.stats = TokenStats()

    async def token(self, timeout_s: float) -> str:
        now = self._clock()
        cached = self._cached
        if cached is not None and now < cached.usable_until:
            if now >= cached.renew_at:
                self._renew(now)
            return cached.value
        renewal = self._renew(now)
        if renewal is None:
            raise PermissionsUnavailable("no access token: the last token request was too recent")
        try:
            async with asyncio.timeout(timeout_s):
                return (await asyncio.shield(renewal)).value
        except TimeoutError as exc:
            raise PermissionsUnavailable("timed out waiting for an access token") from exc

    def invalidate(self, token: str) -> bool:
        if self._cached is not None and self._cached.value == token:
            self._cached = None
        return self._clock() - self._last_request_at >= MIN_REQUEST_INTERVAL_S

    async def close(self) -> None:
        renewal, self._renewal = self._renewal, None
        if renewal is not None:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError, PermissionsUnavailable):
                await renewal

    def _renew(self, now: float) -> asyncio.Task[_Token] | None:
        """The renewal under way, or a new one; None while requests are throttled."""
        if self._renewal is not None:
            return self._renewal
        if now - self._last_request_at < MIN_REQUEST_INTERVAL_S:
            return None
        self._last_request_at = now
        renewal = asyncio.create_task(self._request(now))
        renewal.add_done_callback(self._renewed)
        self._renewal = renewal
        return renewal

    def _renewed(self, renewal: asyncio.Task[_Token]) -> None:
        if self._renewal is renewal:
            self._renewal = None
        if renewal.cancelled():
            return
        problem = renewal.exception()  # retrieved here, so never "never retrieved"
        if problem is None:
            self._cached = renewal.result()
        else:
            self.stats.failures += 1
            log.warning("client credentials token request failed: %s", problem)

    async def _request(self, started: float) -> _Token:
        self.stats.requests += 1
        try:
            async with asyncio.timeout(self._request_timeout_s):
                endpoint = self._configured_endpoint or await self._endpoints.token_endpoint(
                    self._request_timeout_s
                )
                status, body = await self._post(endpoint)
        except TimeoutError as exc:
            raise PermissionsUnavailable("token request timed out") from exc
        except PermissionsUnavailable:
            raise
        except ProviderUnavailable as exc:
            # Discovery failed: say so in this API's terms, so on_failure applies to it.
            raise PermissionsUnavailable(f"no token endpoint: {exc}") from exc
        if status == 200:
            return _parse_token(body, started)
        error = oauth_error_code(body)
        if status in (400, 401):
            log.error(
                "the token endpoint refused the client credentials grant (status %s, error %r):"
                " check provider.client_id, provider.client_secret and that the client may use"
                " the client credentials grant (Keycloak: service accounts enabled)",
                status,
                error,
            )
        if status == 404 and self._configured_endpoint is None:
            self._endpoints.forget()
        raise PermissionsUnavailable(f"token endpoint answered {status}")

    async def _post(self, endpoint: str) -> tuple[int, bytes]:
        form = dict(self._form)
        if self._credentials.method is ClientAuthMethod.CLIENT_SECRET_POST:
            form["client_id"] = self._credentials.client_id
            form["client_secret"] = self._credentials.client_secret.reveal()
        try:
            async with self._session.post(
                endpoint, data=form, headers=self._headers, allow_redirects=False
            ) as response:
                return response.status, await read_bounded(response, MAX_TOKEN_RESPONSE_BYTES)
        except aiohttp.ClientError as exc:
            if self._configured_endpoint is None:
                self._endpoints.forget()
            raise PermissionsUnavailable(f"token request failed: {type(exc).__name__}") from exc


def _parse_token(body: bytes, requested_at: float) -> _Token:
    """RFC 6749 §5.1: access_token and token_type are required, expires_in recommended."""
    if len(body) > MAX_TOKEN_RESPONSE_BYTES:
        raise PermissionsUnavailable("token response too large")
    try:
        document = loads_strict(body)
    except ValueError as exc:
        raise PermissionsUnavailable("token response is not JSON") from exc
    if not isinstance(document, dict):
        raise PermissionsUnavailable("token response is not a JSON object")
    value = document.get("access_token")
    if not isinstance(value, str) or not value or not all("!" <= ch <= "~" for ch in value):
        raise PermissionsUnavailable("token response has no usable access_token")
    token_type = document.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise PermissionsUnavailable("token response is not a bearer token")
    expires_in = document.get("expires_in", DEFAULT_EXPIRES_IN_S)
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or expires_in <= 0:
        raise PermissionsUnavailable("token response has a bad expires_in")
    # Counted from when the request was sent, so the token's own clock never runs ahead of ours.
    lifetime = float(expires_in)
    return _Token(
        value=value,
        renew_at=requested_at + lifetime - min(60.0, lifetime / 2),
        usable_until=requested_at + lifetime - min(10.0, lifetime / 10),
    )
