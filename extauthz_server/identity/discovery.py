"""The provider's endpoints: configured, or read from OIDC discovery (re-read after a failure)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiohttp

from extauthz_server.errors import ProviderUnavailable
from extauthz_server.identity.provider_http import fetch_json, shown_url

log = logging.getLogger(__name__)

MAX_DISCOVERY_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    issuer: str
    introspection_endpoint: str | None
    jwks_uri: str | None
    token_endpoint: str | None = None


class EndpointSource:
    """Provider metadata. Configured endpoints are used as they are; anything not configured
    comes from the discovery document, cached until `forget()` after a failure, so a moved
    endpoint is found again."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        issuer: str,
        introspection_endpoint: str | None,
        jwks_uri: str | None = None,
    ) -> None:
        self._session = session
        self._issuer = issuer
        self._discovery_url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        self._configured_introspection = introspection_endpoint
        self._configured_jwks = jwks_uri
        self._discovered: ProviderMetadata | None = None
        self._lock = asyncio.Lock()

    @property
    def known(self) -> bool:
        return self._configured_introspection is not None or self._discovered is not None

    @property
    def issuer(self) -> str:
        """The issuer the provider names itself with (Keycloak: its frontend URL)."""
        return self._discovered.issuer if self._discovered is not None else self._issuer

    @property
    def accepted_issuers(self) -> frozenset[str]:
        """The configured issuer and the one the provider names itself with: a token naming
        either is the provider's (Keycloak's frontend URL can differ from the URL we use)."""
        return frozenset({self._issuer, self.issuer})

    async def introspection_endpoint(self, timeout_s: float) -> str:
        if self._configured_introspection is not None:
            return self._configured_introspection
        endpoint = (await self.metadata(timeout_s)).introspection_endpoint
        if endpoint is None:
            raise ProviderUnavailable("the discovery document has no introspection_endpoint")
        return endpoint

    async def jwks_uri(self, timeout_s: float) -> str:
        if self._configured_jwks is not None:
            return self._configured_jwks
        uri = (await self.metadata(timeout_s)).jwks_uri
        if uri is None:
            raise ProviderUnavailable("the discovery document has no jwks_uri")
        return uri

    async def token_endpoint(self, timeout_s: float) -> str:
        uri = (await self.metadata(timeout_s)).token_endpoint
        if uri is None:
            raise ProviderUnavailable("the discovery document has no token_endpoint")
        return uri

    async def metadata(self, timeout_s: float) -> ProviderMetadata:
        if self._discovered is not None:
            return self._discovered
        try:
            async with asyncio.timeout(timeout_s), self._lock:
                if self._discovered is None:
                    self._discovered = await self._discover()
                return self._discovered
        except TimeoutError as exc:
            raise ProviderUnavailable(
                f"discovery document {shown_url(self._discovery_url)}: timed out"
            ) from exc

    def forget(self) -> None:
        self._discovered = None

    async def _discover(self) -> ProviderMetadata:
        document = await fetch_json(
            self._session,
            self._discovery_url,
            what="discovery document",
            max_bytes=MAX_DISCOVERY_BYTES,
        )
        if not isinstance(document, dict):
            raise ProviderUnavailable("discovery document is not a JSON object")
        endpoint = _url(document.get("introspection_endpoint"))
        issuer = document.get("issuer")
        metadata = ProviderMetadata(
            issuer=issuer if isinstance(issuer, str) and issuer else self._issuer,
            introspection_endpoint=endpoint,
            jwks_uri=_url(document.get("jwks_uri")),
            token_endpoint=_url(document.get("token_endpoint")),
        )
        log.info("discovered the endpoints of %s", metadata.issuer)
        return metadata


def _url(value: object) -> str | None:
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return value
    return None
