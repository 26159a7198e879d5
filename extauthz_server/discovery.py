"""Where the introspection endpoint is: configured, or from OIDC discovery (re-read on failure)."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp

from extauthz_server.errors import ProviderUnavailable

log = logging.getLogger(__name__)

MAX_DISCOVERY_BYTES = 256 * 1024


class EndpointSource:
    """The introspection URL. A fixed one is returned as is; a discovered one is cached
    until `forget()` is called after a failure, so a moved endpoint is found again."""

    def __init__(self, session: aiohttp.ClientSession, issuer: str, configured: str | None) -> None:
        self._session = session
        self._discovery_url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        self._configured = configured
        self._discovered: str | None = None
        self._lock = asyncio.Lock()

    @property
    def known(self) -> bool:
        return self._configured is not None or self._discovered is not None

    async def introspection_endpoint(self, timeout_s: float) -> str:
        if self._configured is not None:
            return self._configured
        if self._discovered is not None:
            return self._discovered
        try:
            async with asyncio.timeout(timeout_s), self._lock:
                if self._discovered is None:
                    self._discovered = await self._discover()
                return self._discovered
        except TimeoutError as exc:
            raise ProviderUnavailable("discovery timed out") from exc

    def forget(self) -> None:
        if self._configured is None:
            self._discovered = None

    async def _discover(self) -> str:
        try:
            async with self._session.get(self._discovery_url) as response:
                if response.status != 200:
                    raise ProviderUnavailable(f"discovery answered {response.status}")
                body = await response.content.read(MAX_DISCOVERY_BYTES + 1)
        except aiohttp.ClientError as exc:
            raise ProviderUnavailable(f"discovery failed: {type(exc).__name__}") from exc
        if len(body) > MAX_DISCOVERY_BYTES:
            raise ProviderUnavailable("discovery document too large")
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise ProviderUnavailable("discovery document is not JSON") from exc
        endpoint = document.get("introspection_endpoint") if isinstance(document, dict) else None
        if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
            raise ProviderUnavailable("discovery document has no introspection_endpoint")
        log.info("discovered introspection endpoint %s", endpoint)
        return endpoint
