"""RFC 7662 token introspection over kept-alive HTTP connections (`KeptAliveHttp`, or an
aiohttp session where a strategy is built without one)."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol
from urllib.parse import quote_plus, urlencode

import aiohttp

from extauthz_server.core.secret import Secret
from extauthz_server.core.strict_json import loads_strict, oauth_error_code
from extauthz_server.errors import ProviderRejectedClient, ProviderUnavailable
from extauthz_server.identity.discovery import EndpointSource
from extauthz_server.identity.kept_alive_http import HttpAnswer, HttpRequestFailed
from extauthz_server.identity.provider_http import (
    failure_reason,
    read_bounded,
    shown_url,
    status_reason,
)
from extauthz_server.ops.tracing import NoTracing, Tracing

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 1024 * 1024
# A retry is only worth starting if this much of the budget is left.
MIN_RETRY_BUDGET_S = 0.02


class ClientAuthMethod(StrEnum):
    CLIENT_SECRET_BASIC = "client_secret_basic"  # noqa: S105 - a method name
    CLIENT_SECRET_POST = "client_secret_post"  # noqa: S105


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    client_id: str
    client_secret: Secret
    method: ClientAuthMethod

    def basic_authorization(self) -> str:
        # RFC 6749 §2.3.1: id and secret are form-encoded before base64; Keycloak decodes so.
        pair = f"{quote_plus(self.client_id)}:{quote_plus(self.client_secret.reveal())}"
        return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


class HttpTransport(Protocol):
    """How an introspection request travels: `KeptAliveHttp`, or `SessionTransport`."""

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], max_body_bytes: int
    ) -> HttpAnswer:
        """The answer, its body cut at `max_body_bytes + 1`; raises HttpRequestFailed."""
        ...


class SessionTransport:
    """POSTs through an aiohttp session, answering as `KeptAliveHttp` does."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], max_body_bytes: int
    ) -> HttpAnswer:
        try:
            async with self._session.post(url, data=body, headers=headers) as response:
                content = await read_bounded(response, max_body_bytes)
                return HttpAnswer(response.status, response.content_type, content)
        except aiohttp.ClientError as exc:
            raise HttpRequestFailed(failure_reason(exc)) from exc


class _Retryable(Exception):
    """A failure worth one more attempt: connection error or 5xx."""


class IntrospectionClient:
    def __init__(
        self,
        http: HttpTransport,
        endpoints: EndpointSource,
        credentials: ClientCredentials,
        timeout_s: float,
        tracing: Tracing | None = None,
    ) -> None:
        self._tracing = tracing or NoTracing()
        self._http = http
        self._endpoints = endpoints
        self._credentials = credentials
        self._timeout_s = timeout_s
        self._headers = {
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        if credentials.method is ClientAuthMethod.CLIENT_SECRET_BASIC:
            self._headers["Authorization"] = credentials.basic_authorization()

    async def introspect(self, token: str, timeout_s: float | None = None) -> Mapping[str, object]:
        """The introspection document for `token`, within min(configured, given) seconds.

        Raises ProviderRejectedClient on 401/403 (our credentials), ProviderUnavailable on
        anything else that is not a JSON object with status 200. Retries once on a
        connection error or 5xx when the budget allows; never on 4xx.
        """
        budget = self._timeout_s if timeout_s is None else min(self._timeout_s, timeout_s)
        deadline = time.monotonic() + budget
        try:
            async with asyncio.timeout(budget):
                try:
                    return await self._attempt(token, deadline)
                except _Retryable as first:
                    if deadline - time.monotonic() < MIN_RETRY_BUDGET_S:
                        raise ProviderUnavailable(str(first)) from first
                    log.info("introspection failed (%s); retrying once", first)
                    try:
                        return await self._attempt(token, deadline)
                    except _Retryable as second:
                        raise ProviderUnavailable(str(second)) from second
        except TimeoutError as exc:
            raise ProviderUnavailable(f"introspection timed out after {budget:.3f}s") from exc

    async def _attempt(self, token: str, deadline: float) -> Mapping[str, object]:
        endpoint = await self._endpoints.introspection_endpoint(deadline - time.monotonic())
        form = {"token": token, "token_type_hint": "access_token"}
        if self._credentials.method is ClientAuthMethod.CLIENT_SECRET_POST:
            form["client_id"] = self._credentials.client_id
            form["client_secret"] = self._credentials.client_secret.reveal()
        headers = dict(self._headers)
        try:
            with self._tracing.client_span("token introspection", headers) as span:
                answer = await self._http.post(
                    endpoint, urlencode(form).encode("ascii"), headers, MAX_RESPONSE_BYTES
                )
                span.set_attribute("http.response.status_code", answer.status)
        except HttpRequestFailed as exc:
            self._endpoints.forget()
            raise _Retryable(f"introspection endpoint {shown_url(endpoint)}: {exc.reason}") from exc
        status, body = answer.status, answer.body
        if status >= 500:
            raise _Retryable(
                f"introspection endpoint {shown_url(endpoint)}: {status_reason(status)}"
            )
        if status in (401, 403):
            log.error(
                "the provider refused our client credentials (status %s, error %r): check "
                "provider.client_id, provider.client_secret and provider.auth_method",
                status,
                oauth_error_code(body),
            )
            raise ProviderRejectedClient(
                f"introspection endpoint {shown_url(endpoint)}: {status_reason(status)}"
            )
        if status != 200:
            if status == 404:
                # A discovered endpoint may have moved: read discovery again next time.
                self._endpoints.forget()
            log.error(
                "introspection request refused with status %s (error %r)",
                status,
                oauth_error_code(body),
            )
            raise ProviderUnavailable(
                f"introspection endpoint {shown_url(endpoint)}: {status_reason(status)}"
            )
        return _parse_document(body, answer.content_type)


def _parse_document(body: bytes, content_type: str) -> Mapping[str, object]:
    if len(body) > MAX_RESPONSE_BYTES:
        raise ProviderUnavailable("introspection response too large")
    if content_type != "application/json":
        raise ProviderUnavailable(f"introspection response has content type {content_type!r}")
    try:
        document = loads_strict(body)
    except ValueError as exc:
        raise ProviderUnavailable("introspection response is not valid JSON") from exc
    if not isinstance(document, dict):
        raise ProviderUnavailable("introspection response is not a JSON object")
    return document
