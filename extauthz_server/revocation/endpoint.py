"""POST /backchannel-logout (OpenID Connect Back-Channel Logout 1.0 §2.5, §2.8): the provider
tells us a session ended, and every cached identity of it is dropped in every process."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from extauthz_server.cache.local_cache import Invalidation
from extauthz_server.errors import ProviderError
from extauthz_server.identity.access_token import unverified_issuer
from extauthz_server.identity.signing_keys import KeySource
from extauthz_server.revocation.logout_token import LogoutTokenError, verify_logout_token

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True, slots=True)
class LogoutProvider:
    """A provider whose logout tokens we accept, and how to drop its sessions."""

    keys: KeySource
    issuer: Callable[[], str]
    audiences: frozenset[str]
    invalidate: Callable[[Invalidation], Awaitable[int]]


class BackchannelLogout:
    def __init__(
        self,
        providers: Sequence[LogoutProvider],
        results: Counter[str],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._results = results
        self._providers = tuple(providers)
        self._wall_clock = wall_clock

    def _provider_for(self, token: str) -> LogoutProvider | None:
        """With several providers, the one the token names as issuer (then verified)."""
        if len(self._providers) == 1:
            return self._providers[0]
        issuer = unverified_issuer(token)
        return next((p for p in self._providers if p.issuer() == issuer), None)

    async def handle(self, request: web.Request) -> web.Response:
        if request.content_type != "application/x-www-form-urlencoded":
            return _error(400, "the logout token must be form-encoded")
        form = await request.post()
        token = form.get("logout_token")
        if not isinstance(token, str) or not token:
            return _error(400, "logout_token is missing")
        provider = self._provider_for(token)
        if provider is None:
            self._results["rejected"] += 1
            log.warning("rejected a back-channel logout token: no provider has its issuer")
            return _error(400, "the logout token is not acceptable")
        try:
            event = await verify_logout_token(
                token, provider.keys, provider.issuer(), provider.audiences, self._wall_clock()
            )
        except LogoutTokenError as exc:
            self._results["rejected"] += 1
            log.warning("rejected a back-channel logout token: %s", exc.code)
            return _error(400, "the logout token is not acceptable")
        except ProviderError as exc:
            self._results["keys_unavailable"] += 1
            log.error("cannot verify a back-channel logout token: %s", exc)
            return _error(503, "the provider's keys are unavailable")
        # §2.6: with a `sid` the logout ends that session; with only `sub`, all of them.
        invalidation = Invalidation(
            session_id=event.session_id,
            subject=None if event.session_id is not None else event.subject,
        )
        dropped = await provider.invalidate(invalidation)
        self._results["accepted"] += 1
        log.info(
            "back-channel logout",
            extra={"sid": event.session_id, "sub": event.subject, "dropped": dropped},
        )
        return web.Response(status=200, headers=_NO_STORE)


def _error(status: int, description: str) -> web.Response:
    return web.json_response(
        {"error": "invalid_request", "error_description": description},
        status=status,
        headers=_NO_STORE,
    )
