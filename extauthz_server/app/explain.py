"""`extauthz-server check`: run the real decision path for one request and explain it —
the matched route, the roles before and after mapping, the headers set and removed."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from extauthz_server.app.strategy_context import StrategyContext, build_strategy, jwks_cache
from extauthz_server.config.model import Config, authorizer_settings
from extauthz_server.config.providers import ProviderConfig
from extauthz_server.core.authorizer import Authorizer, AuthorizerSettings, IdentitySource
from extauthz_server.core.decision import Decision, Reason
from extauthz_server.core.identity import (
    Identity,
    Inactive,
    audience_of,
    claim_time,
    identity_from_introspection,
)
from extauthz_server.core.paths import PathError, normalise_path
from extauthz_server.core.permissions import PermissionSource
from extauthz_server.core.policy import RouteMatch
from extauthz_server.core.request import AuthRequest
from extauthz_server.core.roles import ClaimPath
from extauthz_server.core.tokens import AccessToken, extract_token
from extauthz_server.errors import ConfigError
from extauthz_server.identity.access_token import unverified_claims
from extauthz_server.identity.discovery import EndpointSource
from extauthz_server.identity.router import ProviderEntry, ProviderRouter
from extauthz_server.identity.strategies import IdentityStrategy
from extauthz_server.metadata.authorization_services import (
    DecisionCachePolicy,
    PermissionRouter,
    UmaDecisions,
)
from extauthz_server.ops.metrics import CheckMetrics

MAX_CLAIMS_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Explanation:
    decision: Decision
    identity: Identity | Inactive | None
    internal_roles: frozenset[str]
    # What the route's path template captured from the path.
    params: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # What the matched route requires, its scoped roles named for these captures.
    required: Mapping[str, list[str]] = dataclasses.field(default_factory=dict)
    # The route's `when` and what it gave: true, false, error, or not reached.
    condition: Mapping[str, str] | None = None
    # The `resource#scope` the route asks Keycloak about, and its answer.
    permission: Mapping[str, str] | None = None
    # Likely causes of an inactive answer that can be read off the token.
    hints: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        decision = self.decision
        identity = self.identity
        return {
            "decision": "allow" if decision.allowed else "deny",
            "status": decision.status,
            "reason": decision.reason.value,
            "route": decision.route,
            "params": dict(self.params),
            "required": dict(self.required),
            "condition": dict(self.condition) if self.condition is not None else None,
            "permission": dict(self.permission) if self.permission is not None else None,
            "hints": list(self.hints),
            "identity": _identity_dict(identity),
            "provider_roles": sorted(identity.provider_roles)
            if isinstance(identity, Identity)
            else [],
            "internal_roles": sorted(self.internal_roles),
            "headers_set": dict(decision.upstream_headers),
            "headers_removed": list(decision.headers_to_remove),
            "response_headers": dict(decision.response_headers),
        }


def _identity_dict(identity: Identity | Inactive | None) -> object:
    if identity is None:
        return None
    if isinstance(identity, Inactive):
        return {"inactive": identity.value}
    return {
        "subject": identity.subject,
        "username": identity.username,
        "email": identity.email,
        "client": identity.client_id,
        "scopes": sorted(identity.scopes),
    }


class _Recording:
    """An IdentitySource that remembers what it answered."""

    def __init__(self, source: IdentitySource) -> None:
        self._source = source
        self.identity: Identity | Inactive | None = None

    async def resolve(
        self, token: str, timeout_s: float, provider: str | None = None
    ) -> Identity | Inactive:
        self.identity = await self._source.resolve(token, timeout_s, provider)
        return self.identity


class _FromClaims:
    """Answers every token with an introspection document read from a file."""

    def __init__(self, document: Mapping[str, object], claims: tuple[ClaimPath, ...], now: float):
        self._document = document
        self._claims = claims
        self._now = now

    async def resolve(
        self, token: str, timeout_s: float, provider: str | None = None
    ) -> Identity | Inactive:
        return identity_from_introspection(self._document, self._claims, self._now)


class _Uncached:
    """A provider's strategy asked directly, with no cache in between."""

    def __init__(self, strategy: IdentityStrategy) -> None:
        self._strategy = strategy

    async def resolve(self, token: str, timeout_s: float) -> Identity | Inactive:
        return await self._strategy.identify(token, timeout_s)


def read_claims(path: Path) -> Mapping[str, object]:
    try:
        text = path.read_bytes()[: MAX_CLAIMS_BYTES + 1]
    except OSError as exc:
        raise ConfigError("--claims", f"cannot read {path}: {exc.strerror}") from exc
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ConfigError("--claims", f"{path} is not JSON") from exc
    if not isinstance(document, dict):
        raise ConfigError("--claims", f"{path} must hold a JSON object")
    return document


async def explain(
    config: Config,
    request: AuthRequest,
    *,
    claims: Mapping[str, object] | None,
    now: float,
) -> Explanation:
    """Decide `request` as the server would. With `claims`, they stand in for the
    introspection answer (a placeholder token is sent if the request has none)."""
    settings = authorizer_settings(config)
    timeout_s = max(config.provider.timeout_s, 5.0)
    if claims is not None:
        source = _Recording(_FromClaims(claims, config.role_claims, now))
        return await _run(settings, source, request, timeout_s, None)
    async with aiohttp.ClientSession() as session:
        entries = []
        deciding: dict[str, PermissionSource] = {}
        metrics = CheckMetrics()
        for configured in config.providers:
            # A one-off command may wait longer than the server would.
            provider = dataclasses.replace(configured, timeout_s=timeout_s)
            endpoints = EndpointSource(
                session, provider.issuer, provider.introspection_endpoint, provider.jwks_uri
            )
            context = StrategyContext(
                provider, session, endpoints, jwks_cache(session, endpoints, provider), metrics
            )
            uncached = _Uncached(build_strategy(context))
            entries.append(ProviderEntry(provider.name, endpoints, uncached))
            services, credentials = provider.authorization_services, provider.credentials
            if services is not None and credentials is not None:
                deciding[provider.name] = UmaDecisions(
                    session,
                    endpoints,
                    credentials,
                    dataclasses.replace(services, timeout_s=timeout_s),
                    DecisionCachePolicy(ttl_s=0.0, denied_ttl_s=0.0, max_entries=1),
                )
        recording = _Recording(ProviderRouter(entries))
        permissions = PermissionRouter(deciding) if deciding else None
        explanation = await _run(settings, recording, request, timeout_s, permissions)
    if isinstance(explanation.identity, Identity):
        return dataclasses.replace(explanation, hints=binding_hints(explanation.identity))
    if explanation.identity is None:
        return explanation
    token = extract_token(request.authorization, settings.max_token_bytes)
    if not isinstance(token, AccessToken):
        return explanation
    hints = inactive_hints(unverified_claims(token.value), config.providers, now)
    return dataclasses.replace(explanation, hints=hints)


def binding_hints(identity: Identity) -> tuple[str, ...]:
    """What a sender-constrained token needs that `check` cannot give it."""
    bound = identity.confirmation
    if bound is None:
        return ()
    hints = []
    if bound.jkt is not None:
        hints.append(
            "the token is bound to a DPoP key (cnf.jkt): a request must send it as "
            "`Authorization: DPoP <token>` with a fresh DPoP proof of that key, which check "
            "cannot make; sent as Bearer it is refused"
        )
    if bound.x5t_s256 is not None:
        hints.append(
            "the token is bound to a client certificate (cnf.x5t#S256): it passes only with "
            "that certificate, as the proxy sees it"
        )
    return tuple(hints)


def inactive_hints(
    claims: Mapping[str, object] | None, providers: Sequence[ProviderConfig], now: float
) -> tuple[str, ...]:
    """Why a provider may have answered `inactive`, as far as the token itself tells."""
    if claims is None:
        return ()
    hints: list[str] = []
    issuer = claims.get("iss")
    issuers = [provider.issuer for provider in providers]
    if isinstance(issuer, str) and issuer not in issuers:
        same_realm = [i for i in issuers if urlsplit(i).path == urlsplit(issuer).path]
        if same_realm:
            hints.append(
                f"the token was issued by {issuer} but provider.issuer is {same_realm[0]}: "
                "Keycloak takes another host name for another issuer and answers inactive; "
                "use the same host in both (or fix Keycloak's hostname)"
            )
        else:
            hints.append(f"the token was issued by {issuer}, which no provider's issuer names")
    audience = audience_of(claims.get("aud"))
    clients = {provider.client_id for provider in providers if provider.client_id}
    if audience and clients.isdisjoint(audience):
        hints.append(
            f"the token's aud ({', '.join(audience)}) names no provider.client_id "
            f"({', '.join(sorted(clients))}): Keycloak 26.6.2+ answers inactive to a client "
            "the token is not for (add an audience mapper)"
        )
    expires = claim_time(claims.get("exp"))
    if expires is not None and expires <= now:
        hints.append(f"the token expired {int(now - expires)} s ago")
    return tuple(hints)


async def _run(
    settings: AuthorizerSettings,
    source: _Recording,
    request: AuthRequest,
    timeout_s: float,
    permissions: PermissionSource | None,
) -> Explanation:
    authorizer = Authorizer(settings, source, permissions=permissions)
    decision = await authorizer.check(request, timeout_s)
    identity = source.identity
    roles = (
        settings.role_map.map(identity.provider_roles)
        if isinstance(identity, Identity)
        else frozenset()
    )
    found = _route_match(settings, request)
    if found is None:
        return Explanation(decision, identity, roles)
    any_of, all_of = found.route.required(found.params)
    required = {
        "any_of": sorted(any_of),
        "all_of": sorted(all_of),
        "scopes": sorted(found.route.scopes),
    }
    condition = None
    if found.route.condition is not None:
        result = _CONDITION_RESULTS.get(decision.reason, "true" if decision.allowed else "")
        condition = {"when": found.route.condition.text, "result": result or "not reached"}
    permission = None
    if found.route.permission is not None:
        permission = {
            "asked": decision.permission or "(none for this method)",
            "answer": _permission_answer(decision, asks_keycloak=permissions is not None),
        }
    return Explanation(decision, identity, roles, found.params, required, condition, permission)


def _permission_answer(decision: Decision, *, asks_keycloak: bool) -> str:
    if decision.permission is None:
        return "not asked"
    if not asks_keycloak:
        return "not asked: Keycloak decides for a real token (--token)"
    if decision.allowed:
        return "granted"
    return _PERMISSION_ANSWERS.get(decision.reason, f"no answer ({decision.reason.value})")


_CONDITION_RESULTS = {Reason.CONDITION_FALSE: "false", Reason.CONDITION_ERROR: "error"}
_PERMISSION_ANSWERS = {
    Reason.PERMISSION_DENIED: "denied",
    Reason.PERMISSION_ERROR: "Keycloak does not know this resource, scope or audience",
    Reason.INVALID_TOKEN: "Keycloak called the token invalid",
}


def _route_match(settings: AuthorizerSettings, request: AuthRequest) -> RouteMatch | None:
    try:
        path = normalise_path(request.path)
    except PathError:
        return None
    return settings.policy.match(request.host, path, request.method)
