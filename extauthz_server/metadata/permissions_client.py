"""One call to the remote permissions API: the request built from the identity, the answer
read strictly; every failure becomes PermissionsUnavailable."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from yarl import URL

from extauthz_server.core.identity import Identity
from extauthz_server.core.strict_json import loads_strict
from extauthz_server.errors import PermissionsTimedOut, PermissionsUnavailable
from extauthz_server.identity.client_credentials import AccessTokenSource
from extauthz_server.identity.provider_http import failure_reason, read_bounded
from extauthz_server.metadata.permissions import PermissionsSettings, RequestMethod, read_names

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 256 * 1024


class PermissionsClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: PermissionsSettings,
        tokens: AccessTokenSource | None,
    ) -> None:
        self._session = session
        self._settings = settings
        self._tokens = tokens

    async def fetch(self, identity: Identity, timeout_s: float) -> frozenset[str]:
        """The identity's permission names, within min(configured timeout, `timeout_s`).

        404 means the API knows no permissions for this identity: an empty set, as does a
        URL that needs a value the identity lacks (no call is made then).
        """
        values = {
            "sub": identity.subject,
            "username": identity.username,
            "client_id": identity.client_id,
        }
        url = self._settings.url.render(values)
        if url is None:
            log.debug("permissions URL needs a value that identity %s lacks", identity.subject)
            return frozenset()
        budget = min(self._settings.timeout_s, timeout_s)
        if budget <= 0:
            raise PermissionsUnavailable("no time left to call the permissions API")
        body = values if self._settings.method is RequestMethod.POST else None
        try:
            async with asyncio.timeout(budget):
                status, answer = await self._call(url, body, budget)
        except TimeoutError as exc:
            raise PermissionsTimedOut(f"permissions API timed out after {budget:.3f}s") from exc
        if status == 404:
            return frozenset()
        if status != 200:
            hint = " (check provider.permissions.auth)" if status in (401, 403) else ""
            raise PermissionsUnavailable(f"permissions API answered {status}{hint}")
        return self._names(answer)

    async def close(self) -> None:
        if self._tokens is not None:
            await self._tokens.close()

    async def _call(
        self, url: str, body: dict[str, str | None] | None, budget: float
    ) -> tuple[int, bytes]:
        tokens = self._tokens
        if tokens is None:
            return await self._send(url, body, None)
        token = await tokens.token(budget)
        status, answer = await self._send(url, body, token)
        # Our token may have been revoked or rotated out before its expiry: one more try
        # with a new one, if a new one can be had.
        if status == 401 and tokens.invalidate(token):
            status, answer = await self._send(url, body, await tokens.token(budget))
        return status, answer

    async def _send(
        self, url: str, body: dict[str, str | None] | None, token: str | None
    ) -> tuple[int, bytes]:
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            # encoded=True: the URL goes out exactly as rendered; yarl would otherwise
            # decode and re-normalise it (and resolve dot-segments).
            async with self._session.request(
                self._settings.method.value,
                URL(url, encoded=True),
                headers=headers,
                json=body,
                allow_redirects=False,
            ) as response:
                if response.status == 200 and not _is_json(response.content_type):
                    raise PermissionsUnavailable(
                        f"permissions answer has content type {response.content_type!r}"
                    )
                return response.status, await read_bounded(response, MAX_RESPONSE_BYTES)
        except aiohttp.ClientError as exc:
            raise PermissionsUnavailable(f"permissions API: {failure_reason(exc)}") from exc

    def _names(self, answer: bytes) -> frozenset[str]:
        if len(answer) > MAX_RESPONSE_BYTES:
            raise PermissionsUnavailable("permissions answer too large")
        try:
            document = loads_strict(answer)
        except ValueError as exc:
            raise PermissionsUnavailable("permissions answer is not valid JSON") from exc
        names = read_names(document, self._settings.roles_path)
        if names is None:
            raise PermissionsUnavailable(
                "permissions answer has no list of strings at provider.permissions.roles_path"
            )
        return names


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")
