"""The check pipeline: route → token → identity → roles → policy → headers, as one Decision.

The only async module of the core; it reaches the network solely through IdentitySource.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from extauthz_server.core.certificates import certificate_thumbprint
from extauthz_server.core.conditions import ConditionResult, Outcome
from extauthz_server.core.decision import Decision, Denials, Reason
from extauthz_server.core.dpop import (
    DpopProof,
    DpopRules,
    ProofProblem,
    ProofVerifier,
    request_uri,
)
from extauthz_server.core.headers import HeaderNames, upstream_headers
from extauthz_server.core.identity import Identity, Inactive
from extauthz_server.core.identity_token import (
    IdentityTokenMinter,
    IdentityTokenSettings,
    MintedToken,
)
from extauthz_server.core.paths import PathError, normalise_path
from extauthz_server.core.permissions import PermissionAnswer, PermissionSource
from extauthz_server.core.policy import Policy, RouteMatch
from extauthz_server.core.replay import LocalReplayGuard, ReplayGuard
from extauthz_server.core.request import AuthRequest
from extauthz_server.core.roles import RoleMap
from extauthz_server.core.routes import Route
from extauthz_server.core.tokens import AccessToken, Scheme, TokenProblem, extract_token
from extauthz_server.errors import ProviderError, ProviderRejectedClient, ReplayCheckUnavailable

log = logging.getLogger(__name__)


class IdentitySource(Protocol):
    async def resolve(
        self, token: str, timeout_s: float, provider: str | None = None
    ) -> Identity | Inactive:
        """Who the token belongs to, according to `provider` when the route names one;
        raises ProviderError when that cannot be learnt."""
        ...


# Allow decisions kept for reuse: the same cached identity on the same route gets the very
# same Decision (and so the same prepared response) until the settings change.
ALLOWED_MEMO_SIZE = 10_000
_NUMBERS = re.compile(r"[0-9.]+")
MAX_THROTTLED_KEYS = 256
# (id of the Identity object, route name, the captures of a scoped route or ()).
MemoKey = tuple[int, str, tuple[tuple[str, str], ...]]
# Header names kept from earlier configurations (renamed or dropped by reloads).
MAX_RETIRED_HEADERS = 32
# Asks, with no I/O, whether the identity source would still answer with the very Identity
# it answered before (cached, fresh, its session not ended).
StillHeld = Callable[[], bool]
# The source's StillHeld for a token it has just answered `identity` for (on the route's
# provider, or None), or None when it cannot tell without asking again.
Holding = Callable[[str, str | None, Identity], StillHeld | None]


@dataclass(frozen=True, slots=True)
class AuthorizerSettings:
    policy: Policy
    role_map: RoleMap
    header_names: HeaderNames
    realm: str
    max_token_bytes: int
    # Provider name → its realm, for the challenge of routes pinned to a provider.
    provider_realms: Mapping[str, str] = field(default_factory=dict)
    # At most this many allow decisions are kept for reuse (never more than the L1 holds;
    # none when the cache keeps no identity).
    decision_memo_size: int = ALLOWED_MEMO_SIZE
    # A signed identity token for the upstream on every allow with an identity (None: off).
    identity_token: IdentityTokenSettings | None = None
    # Header names an earlier configuration of this process used and this one does not: a
    # client's copy is still removed, so a reload that renames or drops a header never lets
    # a forged one through.
    retired_headers: tuple[str, ...] = ()
    # How DPoP proofs are checked, and the providers that take no plain Bearer token.
    dpop: DpopRules = field(default_factory=DpopRules)
    dpop_required: frozenset[str] = frozenset()

    @property
    def upstream_header_names(self) -> frozenset[str]:
        names = set(self.header_names.identity_headers)
        if self.identity_token is not None:
            names.add(self.identity_token.header)
        return frozenset(names)


@dataclass(frozen=True, slots=True)
class _State:
    settings: AuthorizerSettings
    denials: Denials
    clock: Callable[[], float]
    minter: IdentityTokenMinter | None
    # For routes pinned to a provider: denials that name that provider's realm.
    provider_denials: dict[str, Denials]
    # Undecidable conditions are logged at most once a minute per route; an unavailable
    # provider once a minute per kind of failure, not once per Check.
    condition_warnings: _Throttle
    provider_warnings: _Throttle
    proofs: ProofVerifier
    # MemoKey → (that Identity, its Decision, the time until which the Decision's minted
    # token may be reused, or None when it carries none). The Identity is kept so a reused
    # id can never be mistaken for it.
    allowed: dict[MemoKey, tuple[Identity, Decision, float | None]] = field(default_factory=dict)
    # An edge's key over every input of a request → the allow decided for it, what must
    # still hold for it to stand, and its minted token's reuse limit (see Authorizer.repeat).
    repeats: dict[Hashable, tuple[Decision, StillHeld, float | None]] = field(default_factory=dict)
    # Hashes of the keys allowed once: a request is kept for repeating when it comes again,
    # so requests that never do (a new path each time) cost a set insert, not a kept entry.
    sighted: set[int] = field(default_factory=set)

    @classmethod
    def of(cls, settings: AuthorizerSettings, clock: Callable[[], float]) -> _State:
        token = settings.identity_token
        minter = IdentityTokenMinter(token) if token is not None else None
        required = settings.dpop_required
        algs = settings.dpop.algorithms
        every_provider_requires = bool(required) and required >= set(settings.provider_realms)
        default = Denials(
            settings.realm,
            dpop_algs=algs,
            offer_dpop=bool(required),
            offer_bearer=not every_provider_requires,
        )
        by_realm: dict[tuple[str, bool | None], Denials] = {(settings.realm, None): default}
        provider_denials = {
            name: by_realm.setdefault(
                (realm, name in required),
                Denials(
                    realm,
                    dpop_algs=algs,
                    offer_dpop=name in required,
                    offer_bearer=name not in required,
                ),
            )
            for name, realm in settings.provider_realms.items()
        }
        return cls(
            settings,
            default,
            clock,
            minter,
            provider_denials,
            _Throttle(clock),
            _Throttle(clock),
            ProofVerifier(settings.dpop),
        )

    def warn_unavailable(self, what: str, exc: ProviderError) -> None:
        """Log a provider failure once a minute per kind, not once per Check."""
        if self.provider_warnings.admit(_shape(str(exc))):
            log.warning("%s unavailable: %s", what, exc)

    def denials_for(self, route: Route) -> Denials:
        if route.provider is None:
            return self.denials
        return self.provider_denials.get(route.provider, self.denials)

    def remembered(self, key: MemoKey | None, identity: Identity) -> Decision | None:
        if key is None:
            return None
        memo = self.allowed.get(key)
        if memo is None or memo[0] is not identity:
            return None
        # The clock is read only for decisions that carry a minted token.
        if memo[2] is not None and self.clock() >= memo[2]:
            return None
        return memo[1]

    def allow(
        self,
        key: MemoKey | None,
        route: Route,
        identity: Identity,
        roles: frozenset[str],
        reason: Reason = Reason.ALLOWED,
    ) -> Decision:
        """A new allow decision, remembered for the next Check of the same identity."""
        minted = None
        if self.minter is not None:
            minted = self.minter.mint(
                identity.subject,
                tuple(sorted(roles)),
                route.name,
                identity.client_id,
                self.clock(),
                identity.expires_at,
            )
        decision = _allow(self.settings, reason, route, identity, roles, minted)
        if key is None or not self.settings.decision_memo_size:
            return decision
        if len(self.allowed) >= self.settings.decision_memo_size:
            self.allowed.clear()
        reuse_until = minted.reuse_until if minted is not None else None
        self.allowed[key] = (identity, decision, reuse_until)
        return decision

    def seen_before(self, key: Hashable) -> bool:
        """Whether an allow was reached for `key` before (or for a key of the same hash);
        notes that one is now."""
        sighted = hash(key)
        if sighted in self.sighted:
            return True
        if len(self.sighted) >= self.settings.decision_memo_size:
            self.sighted.clear()
        self.sighted.add(sighted)
        return False

    def keep_repeat(
        self, key: Hashable, memo_key: MemoKey, decision: Decision, still_held: StillHeld
    ) -> None:
        kept = self.allowed.get(memo_key)
        if kept is None or kept[1] is not decision:
            return  # not remembered (no memo), so not repeatable either
        if len(self.repeats) >= self.settings.decision_memo_size:
            self.repeats.clear()
        self.repeats[key] = (decision, still_held, kept[2])


class Authorizer:
    def __init__(
        self,
        settings: AuthorizerSettings,
        source: IdentitySource,
        clock: Callable[[], float] = time.time,
        *,
        permissions: PermissionSource | None = None,
        replay_guard: ReplayGuard | None = None,
        provider_of: Callable[[str], str | None] | None = None,
        holding: Holding | None = None,
    ) -> None:
        # Wall-clock time: minted tokens carry `iat` and `exp` as seconds since the epoch,
        # and DPoP proofs an `iat`.
        self._clock = clock
        self._state = _State.of(settings, clock)
        self._source = source
        self._permissions = permissions
        self._replay_guard = LocalReplayGuard() if replay_guard is None else replay_guard
        # Which provider a token goes to, for `dpop: required` (the router knows).
        self._provider_of = provider_of or self._sole_provider
        # Without it no decision is repeated (see `repeat`).
        self._holding = holding

    @property
    def settings(self) -> AuthorizerSettings:
        return self._state.settings

    def reconfigure(self, settings: AuthorizerSettings) -> None:
        """Swap routes, role map and header names in one step; a Check under way finishes
        with the settings it started with."""
        old = self._state.settings
        current = settings.upstream_header_names
        retired = (old.upstream_header_names | set(old.retired_headers)) - current
        settings = dataclasses.replace(
            settings,
            retired_headers=tuple(sorted(retired | set(settings.retired_headers)))[
                :MAX_RETIRED_HEADERS
            ],
        )
        self._state = _State.of(settings, self._clock)

    def _sole_provider(self, _token: str) -> str | None:
        names = self._state.settings.provider_realms
        return next(iter(names)) if len(names) == 1 else None

    def repeat(self, key: Hashable) -> Decision | None:
        """The allow `check` reached for the request `key` stands for (kept the second time it
        was reached), if it still stands; else None, and the caller checks. No I/O, and a
        fraction of a check's cost.

        `key` is the edge's, and must cover every input of the request the decision read:
        the method, host, path and Authorization value, and whatever the edge derives them
        from. Only what needs nothing else is kept: a Bearer token whose identity binds it to
        no key or certificate, on a route with no condition, no permission and a token
        required. It stands while the identity source still holds that very identity (cached,
        fresh, its session not ended), the settings are unchanged, and its minted token may
        still be reused."""
        repeats = self._state.repeats
        kept = repeats.get(key)
        if kept is None:
            return None
        decision, still_held, reuse_until = kept
        if (reuse_until is not None and self._clock() >= reuse_until) or not still_held():
            repeats.pop(key, None)
            return None
        return decision

    async def check(
        self, request: AuthRequest, timeout_s: float, repeat_key: Hashable | None = None
    ) -> Decision:
        """The decision for `request`; an allow reached for it may be kept for `repeat`
        under `repeat_key`."""
        state = self._state
        settings, denials = state.settings, state.denials
        try:
            path = normalise_path(request.path)
        except PathError:
            return denials.deny(Reason.BAD_REQUEST)
        found = settings.policy.match(request.host, path, request.method)
        if found is None:
            return denials.deny(Reason.NO_ROUTE)
        route = found.route
        denials = state.denials_for(route)
        token = extract_token(request.authorization, settings.max_token_bytes)
        if route.public:
            return await self._check_public(state, request, found, token, timeout_s)
        if token is TokenProblem.MISSING:
            return denials.deny(Reason.MISSING_TOKEN, route=route.name)
        if token is TokenProblem.MALFORMED:
            return denials.deny(Reason.MALFORMED_TOKEN, route=route.name)
        dpop = token.scheme is Scheme.DPOP
        proof: DpopProof | None = None
        if dpop:
            checked = self._check_proof(state, request, token.value)
            if isinstance(checked, ProofProblem):
                return _proof_denial(denials, route, checked)
            proof = checked
        elif settings.dpop_required and self._bearer_refused(settings, route, token.value):
            return denials.deny(Reason.INVALID_TOKEN, route=route.name, dpop=True)
        # Read only where Keycloak is asked twice (identity, then permission): one budget.
        started = self._clock() if route.permission is not None else 0.0
        try:
            identity = await self._source.resolve(token.value, timeout_s, route.provider)
        except ProviderRejectedClient:
            return denials.deny(Reason.PROVIDER_REJECTED_CLIENT, route=route.name)
        except ProviderError as exc:
            state.warn_unavailable("identity provider", exc)
            return denials.deny(Reason.PROVIDER_UNAVAILABLE, route=route.name)
        if isinstance(identity, Inactive):
            return denials.deny(Reason.INVALID_TOKEN, route=route.name, dpop=dpop)
        if dpop or identity.confirmation is not None:
            refused = await self._check_binding(state, denials, route, request, identity, proof)
            if refused is not None:
                return refused
        memo_key = _memo_key(identity, found)
        remembered = state.remembered(memo_key, identity)
        if remembered is not None:
            self._keep_repeat(state, repeat_key, memo_key, remembered, token, route, identity)
            return remembered
        roles = settings.role_map.map(identity.provider_roles)
        if not route.permits(roles, identity.scopes, found.params):
            return _caller_denial(
                denials,
                Reason.INSUFFICIENT_ROLE,
                route,
                identity,
                roles,
                required_scopes=route.scopes,
            )
        if route.condition is not None:
            result = route.condition.evaluate(request, path, found.params, identity, roles)
            if result.outcome is not Outcome.TRUE:
                return self._condition_denial(state, denials, route, identity, roles, result)
        if route.permission is not None:
            remaining = timeout_s - (self._clock() - started)
            refused, asked = await self._check_permission(
                state, denials, found, request.method, path, token.value, identity, roles, remaining
            )
            if refused is not None:
                return refused
            allowed = state.allow(memo_key, route, identity, roles)
            return dataclasses.replace(allowed, permission=asked)
        allowed = state.allow(memo_key, route, identity, roles)
        self._keep_repeat(state, repeat_key, memo_key, allowed, token, route, identity)
        return allowed

    def _keep_repeat(
        self,
        state: _State,
        key: Hashable | None,
        memo_key: MemoKey | None,
        decision: Decision,
        token: AccessToken,
        route: Route,
        identity: Identity,
    ) -> None:
        """Keep an allow for `repeat` under the edge's `key`, the second time it is reached:
        a Bearer token's, on a route with no condition or permission (`memo_key` is None
        there), for an identity bound to nothing."""
        if (
            key is None
            or memo_key is None
            or self._holding is None
            or token.scheme is not Scheme.BEARER
            or identity.confirmation is not None
            or not state.settings.decision_memo_size
            or not state.seen_before(key)
        ):
            return
        still_held = self._holding(token.value, route.provider, identity)
        if still_held is not None:
            state.keep_repeat(key, memo_key, decision, still_held)

    async def _check_permission(
        self,
        state: _State,
        denials: Denials,
        found: RouteMatch,
        method: str,
        path: str,
        token: str,
        identity: Identity,
        roles: frozenset[str],
        timeout_s: float,
    ) -> tuple[Decision | None, str | None]:
        """(None, `resource#scope`) when Keycloak grants it; else the deny."""
        route, permission = found.route, found.route.permission
        assert permission is not None  # noqa: S101 - checked by the caller

        query = permission.query_for(method, found.params, path)
        asked = query.pair if query is not None else None

        def refuse(reason: Reason) -> tuple[Decision, str | None]:
            return _caller_denial(denials, reason, route, identity, roles, permission=asked), asked

        if query is None or self._permissions is None:
            # A method the route's scopes do not name is refused without asking anyone.
            return refuse(Reason.PERMISSION_DENIED)
        try:
            answer = await self._permissions.decide(
                token, identity, query, timeout_s, route.provider
            )
        except ProviderRejectedClient:
            return refuse(Reason.PROVIDER_REJECTED_CLIENT)
        except ProviderError as exc:
            state.warn_unavailable("authorization services", exc)
            return refuse(Reason.PROVIDER_UNAVAILABLE)
        if answer is PermissionAnswer.GRANTED:
            return None, asked
        if answer is PermissionAnswer.TOKEN_INVALID:
            refused = denials.deny(
                Reason.INVALID_TOKEN,
                route=route.name,
                permission=asked,
                dpop=identity.confirmation is not None and identity.confirmation.jkt is not None,
            )
            return refused, asked
        if answer is PermissionAnswer.MISCONFIGURED:
            return refuse(Reason.PERMISSION_ERROR)
        return refuse(Reason.PERMISSION_DENIED)

    def _condition_denial(
        self,
        state: _State,
        denials: Denials,
        route: Route,
        identity: Identity,
        roles: frozenset[str],
        result: ConditionResult,
    ) -> Decision:
        reason = Reason.CONDITION_FALSE
        if result.outcome is Outcome.ERROR:
            reason = Reason.CONDITION_ERROR
            if state.condition_warnings.admit(route.name):
                log.warning(
                    "route %s: condition could not be decided: %s", route.name, result.problem
                )
        return _caller_denial(denials, reason, route, identity, roles)

    def _check_proof(
        self, state: _State, request: AuthRequest, token: str
    ) -> DpopProof | ProofProblem:
        """Everything about the proof that needs neither the token's binding nor the replay
        store: checked before the provider is asked, so a bad proof costs no call."""
        rules = state.settings.dpop
        uri = request_uri(request.scheme, request.host, request.path, rules)
        return state.proofs.verify(
            request.headers.get("dpop"), request.method, uri, token, self._clock()
        )

    def _bearer_refused(self, settings: AuthorizerSettings, route: Route, token: str) -> bool:
        """A Bearer token for a provider that requires DPoP (RFC 9449 §7.1)."""
        provider = route.provider or self._provider_of(token)
        return provider in settings.dpop_required

    async def _check_binding(
        self,
        state: _State,
        denials: Denials,
        route: Route,
        request: AuthRequest,
        identity: Identity,
        proof: DpopProof | None,
    ) -> Decision | None:
        """None when the token may be used by this caller: its DPoP key is the proof's, its
        certificate the one the proxy saw, and the proof was not used before."""
        bound = identity.confirmation
        dpop = proof is not None
        if proof is not None and (bound is None or bound.jkt is None):
            # Keycloak too refuses an unbound token under the DPoP scheme.
            return denials.deny(Reason.INVALID_TOKEN, route=route.name, dpop=True)
        if bound is not None and bound.jkt is not None:
            if proof is None:
                # A bound token presented as Bearer: a stolen token without its key.
                return denials.deny(Reason.INVALID_TOKEN, route=route.name, dpop=True)
            if proof.thumbprint != bound.jkt:
                return _proof_denial(denials, route, ProofProblem.KEY_MISMATCH)
        if (
            bound is not None
            and bound.x5t_s256 is not None
            and certificate_thumbprint(request.client_certificate) != bound.x5t_s256
        ):
            return denials.deny(Reason.INVALID_TOKEN, route=route.name, dpop=dpop)
        if proof is None:
            return None
        window_s = state.settings.dpop.replay_window_s
        key = hashlib.sha256(f"{proof.thumbprint} {proof.jti}".encode()).digest()
        try:
            first = await self._replay_guard.first_use(key, self._clock(), window_s)
        except ReplayCheckUnavailable as exc:
            if state.provider_warnings.admit("dpop replay"):
                log.warning("DPoP proofs refused: %s", exc)
            return denials.deny(Reason.REPLAY_CHECK_UNAVAILABLE, route=route.name)
        if not first:
            return _proof_denial(denials, route, ProofProblem.REPLAYED)
        return None

    async def _check_public(
        self,
        state: _State,
        request: AuthRequest,
        found: RouteMatch,
        token: AccessToken | TokenProblem,
        timeout_s: float,
    ) -> Decision:
        """A public route needs no token; a valid one still gets its identity headers."""
        settings, route = state.settings, found.route
        anonymous = _allow(settings, Reason.PUBLIC, route, None, frozenset())
        if not isinstance(token, AccessToken):
            return anonymous
        proof: DpopProof | None = None
        if token.scheme is Scheme.DPOP:
            checked = self._check_proof(state, request, token.value)
            if isinstance(checked, ProofProblem):
                return anonymous
            proof = checked
        try:
            identity = await self._source.resolve(token.value, timeout_s, route.provider)
        except ProviderError as exc:
            state.warn_unavailable("identity provider (on a public route)", exc)
            identity = Inactive.NOT_ACTIVE
        if isinstance(identity, Inactive):
            return anonymous
        if proof is not None or identity.confirmation is not None:
            denials = state.denials_for(route)
            if await self._check_binding(state, denials, route, request, identity, proof):
                # The caller cannot prove the token is theirs: served as anyone would be.
                return anonymous
        # Remembered like any allow, so a minted identity token is reused here too.
        memo_key = _memo_key(identity, found)
        remembered = state.remembered(memo_key, identity)
        if remembered is not None:
            return remembered
        roles = settings.role_map.map(identity.provider_roles)
        return state.allow(memo_key, route, identity, roles, Reason.PUBLIC)


def _proof_denial(denials: Denials, route: Route, problem: ProofProblem) -> Decision:
    """401 invalid_dpop_proof; the audit line says what was wrong with the proof."""
    decision = denials.deny(Reason.INVALID_DPOP_PROOF, route=route.name, dpop=True)
    return dataclasses.replace(decision, metadata={**decision.metadata, "dpop": problem.value})


def _caller_denial(
    denials: Denials,
    reason: Reason,
    route: Route,
    identity: Identity,
    roles: frozenset[str],
    *,
    required_scopes: frozenset[str] = frozenset(),
    permission: str | None = None,
) -> Decision:
    """A deny of a known caller: the audit line names who, with which roles and client."""
    return denials.deny(
        reason,
        route=route.name,
        subject=identity.subject,
        required_scopes=required_scopes,
        roles=roles,
        client=identity.client_id,
        permission=permission,
    )


def _memo_key(identity: Identity, found: RouteMatch) -> MemoKey | None:
    """None on a route with a condition or a permission: its decision depends on the whole
    request (and a permission's answer is cached where it is asked)."""
    route = found.route
    if route.condition is not None or route.permission is not None:
        return None
    # On a scoped route the decision depends on the resource the path names.
    resource = tuple(found.params.items()) if route.scoped else ()
    return (id(identity), route.name, resource)


def _shape(message: str) -> str:
    """A failure's kind: its message with the numbers (budgets, ports) left out."""
    return _NUMBERS.sub("#", message)


class _Throttle:
    """At most one admitted event per key per interval (a log line a minute per route)."""

    def __init__(self, clock: Callable[[], float], interval_s: float = 60.0) -> None:
        self._clock = clock
        self._interval_s = interval_s
        self._last: dict[str, float] = {}

    def admit(self, key: str) -> bool:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            return False
        if len(self._last) >= MAX_THROTTLED_KEYS:
            # Bounded whatever the failures say: forgetting only lets a line through early.
            self._last.clear()
        self._last[key] = now
        return True


def _allow(
    settings: AuthorizerSettings,
    reason: Reason,
    route: Route,
    identity: Identity | None,
    roles: frozenset[str],
    minted: MintedToken | None = None,
) -> Decision:
    headers = upstream_headers(settings.header_names, identity, roles)
    to_set, to_remove = headers.to_set, headers.to_remove
    if settings.identity_token is not None:
        # As for the identity headers: set when minted, otherwise removed, so a client's own
        # copy never reaches the upstream.
        if minted is not None:
            to_set = (*to_set, (settings.identity_token.header, minted.value))
        else:
            to_remove = (*to_remove, settings.identity_token.header)
    if settings.retired_headers:
        to_remove = (*to_remove, *settings.retired_headers)
    sorted_roles = tuple(sorted(roles))
    metadata = {"reason": reason.value, "route": route.name}
    if identity is not None:
        metadata["subject"] = identity.subject
        metadata["roles"] = ",".join(sorted_roles)
        if identity.client_id:
            metadata["client"] = identity.client_id
    return Decision(
        allowed=True,
        status=200,
        reason=reason,
        upstream_headers=to_set,
        headers_to_remove=to_remove,
        route=route.name,
        subject=identity.subject if identity else None,
        roles=sorted_roles,
        client=identity.client_id if identity else None,
        metadata=metadata,
    )
