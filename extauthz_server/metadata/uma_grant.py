"""Keycloak's UMA grant, asked with our own client's credentials for the user's token
(`subject_token`), in its two answer modes: a decision for one `resource#scope`, or the list
of everything the token is granted. Posts and reads answers; caches nothing.

Facts this follows (verified on Keycloak 26.7.3): in `response_mode=decision`, several
permissions (or a resource without a scope) answer true if *any* is granted, so exactly one
`resource#scope` goes in each call; without `subject_token`, Keycloak would judge our own
service account; a bad, expired or logged-out user token is a 400 (`invalid_grant` or
`unauthorized_client`), a 401 means our own credentials failed, a denial is 403
`access_denied` (in permissions mode too, where nothing granted is not `[]`), and an unknown
resource, scope or audience is a 400 of its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import aiohttp

from extauthz_server.core.permissions import GrantedPermissions, PermissionAnswer, PermissionQuery
from extauthz_server.core.strict_json import loads_strict, oauth_error_code
from extauthz_server.errors import ProviderRejectedClient, ProviderUnavailable
from extauthz_server.identity.introspection import ClientAuthMethod, ClientCredentials
from extauthz_server.identity.provider_http import (
    failure_reason,
    read_bounded,
    shown_url,
    status_reason,
)

UMA_GRANT = "urn:ietf:params:oauth:grant-type:uma-ticket"
MAX_DECISION_BYTES = 16 * 1024
# A permissions answer lists every resource the user may touch; past this, decision mode fits.
MAX_PERMISSIONS_BYTES = 256 * 1024
# Keycloak's 400s for a user token it will not evaluate: invalid_grant when the token itself
# authenticates the request, unauthorized_client ("Invalid identity") for subject_token.
_TOKEN_INVALID_ERRORS = frozenset({"invalid_grant", "unauthorized_client"})

# What one call learns: the answer to one query, or (permissions mode) all the grants.
Verdict = PermissionAnswer | GrantedPermissions


def decision_of(status: int, body: bytes) -> PermissionAnswer:
    """Keycloak's answer from a decision-mode response; ProviderError when it gave none."""
    if status == 200:
        document = _json_or_none(body)
        if isinstance(document, dict) and document.get("result") is True:
            return PermissionAnswer.GRANTED
        raise ProviderUnavailable("UMA decision answered 200 without result: true")
    return _refusal_of(status, body, "UMA decision")


def permissions_of(status: int, body: bytes) -> Verdict:
    """Everything granted, from a permissions-mode response; ProviderError when no answer."""
    if status == 200:
        granted = _granted_or_none(_json_or_none(body))
        if granted is None:
            raise ProviderUnavailable("UMA permissions answered 200 without a permission list")
        return granted
    answer = _refusal_of(status, body, "UMA permissions")
    if answer is PermissionAnswer.DENIED:
        return GrantedPermissions({})
    return answer


def _refusal_of(status: int, body: bytes, what: str) -> PermissionAnswer:
    error = oauth_error_code(body)
    if status == 403 and error == "access_denied":
        return PermissionAnswer.DENIED
    if status == 400 and error in _TOKEN_INVALID_ERRORS:
        return PermissionAnswer.TOKEN_INVALID
    if status == 400:
        return PermissionAnswer.MISCONFIGURED
    if status == 401:
        raise ProviderRejectedClient(f"{what} {status_reason(status)}")
    raise ProviderUnavailable(f"{what} {status_reason(status)}")


def _json_or_none(body: bytes) -> object:
    try:
        return loads_strict(body)
    except ValueError:
        return None


def _granted_or_none(document: object) -> GrantedPermissions | None:
    """`[{"rsid": …, "rsname": …, "scopes": […]}, …]` as resource (name and id) → scopes."""
    if not isinstance(document, list):
        return None
    scopes_by_resource: dict[str, frozenset[str]] = {}
    for item in document:
        if not isinstance(item, dict):
            return None
        scopes = item.get("scopes", [])
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            return None
        for name_key in ("rsname", "rsid"):
            name = item.get(name_key)
            if name is None:
                continue
            if not isinstance(name, str):
                return None
            scopes_by_resource[name] = scopes_by_resource.get(name, frozenset()) | set(scopes)
    return GrantedPermissions(scopes_by_resource)


def encode_verdict(verdict: Verdict) -> str:
    """A verdict as text, for Redis."""
    if isinstance(verdict, PermissionAnswer):
        return verdict.value
    return json.dumps({k: sorted(v) for k, v in verdict.scopes_by_resource.items()})


def decode_verdict(text: str) -> Verdict | None:
    """The verdict `encode_verdict` wrote; None for anything else."""
    try:
        return PermissionAnswer(text)
    except ValueError:
        pass
    document = _json_or_none(text.encode())
    if not isinstance(document, dict):
        return None
    granted: dict[str, frozenset[str]] = {}
    for name, scopes in document.items():
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            return None
        granted[name] = frozenset(scopes)
    return GrantedPermissions(granted)


class UmaGrant:
    """The HTTP side of the UMA grant for one resource server (`audience`)."""

    def __init__(
        self, session: aiohttp.ClientSession, credentials: ClientCredentials, audience: str
    ) -> None:
        self._session = session
        self._credentials = credentials
        self._audience = audience

    async def decision(
        self, endpoint: str, token: str, query: PermissionQuery
    ) -> tuple[int, bytes]:
        form = self._form(token, "decision")
        form["permission"] = query.pair
        if query.by_uri:
            form["permission_resource_format"] = "uri"
            form["permission_resource_matching_uri"] = "true"
        return await self._post(endpoint, form, MAX_DECISION_BYTES, "UMA decision")

    async def permissions(self, endpoint: str, token: str) -> tuple[int, bytes]:
        form = self._form(token, "permissions")
        return await self._post(endpoint, form, MAX_PERMISSIONS_BYTES, "UMA permissions")

    def _form(self, token: str, response_mode: str) -> dict[str, str]:
        form = {
            "grant_type": UMA_GRANT,
            "audience": self._audience,
            "response_mode": response_mode,
            # Never without it: Keycloak would judge our own service account instead.
            "subject_token": token,
        }
        if self._credentials.method is not ClientAuthMethod.CLIENT_SECRET_BASIC:
            form["client_id"] = self._credentials.client_id
            form["client_secret"] = self._credentials.client_secret.reveal()
        return form

    async def _post(
        self, endpoint: str, form: Mapping[str, str], limit: int, what: str
    ) -> tuple[int, bytes]:
        headers = {"Accept": "application/json"}
        if self._credentials.method is ClientAuthMethod.CLIENT_SECRET_BASIC:
            headers["Authorization"] = self._credentials.basic_authorization()
        try:
            async with self._session.post(endpoint, data=form, headers=headers) as response:
                body = await read_bounded(response, limit)
                status = response.status
        except aiohttp.ClientError as exc:
            raise ProviderUnavailable(
                f"{what} at {shown_url(endpoint)}: {failure_reason(exc)}"
            ) from exc
        if len(body) > limit:
            raise ProviderUnavailable(f"{what} answer is larger than {limit // 1024} KiB")
        return status, body
