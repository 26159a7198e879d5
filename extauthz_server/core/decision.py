"""Decision: the protocol-free outcome of one check, and the fixed deny responses (RFC 6750 §3)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from extauthz_server.core.dpop import PROOF_ALGORITHMS

Header = tuple[str, str]


class Reason(StrEnum):
    ALLOWED = "allowed"
    PUBLIC = "public"
    BAD_REQUEST = "bad_request"
    NO_ROUTE = "no_route"
    MISSING_TOKEN = "missing_token"  # noqa: S105 - a reason code, not a secret
    MALFORMED_TOKEN = "malformed_token"  # noqa: S105
    INVALID_TOKEN = "invalid_token"  # noqa: S105
    INVALID_DPOP_PROOF = "invalid_dpop_proof"
    INSUFFICIENT_ROLE = "insufficient_role"
    CONDITION_FALSE = "condition_false"
    CONDITION_ERROR = "condition_error"
    PERMISSION_DENIED = "permission_denied"
    PERMISSION_ERROR = "permission_error"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    PROVIDER_REJECTED_CLIENT = "provider_rejected_client"
    REPLAY_CHECK_UNAVAILABLE = "replay_check_unavailable"
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    status: int
    reason: Reason
    upstream_headers: tuple[Header, ...] = ()
    headers_to_remove: tuple[str, ...] = ()
    response_headers: tuple[Header, ...] = ()
    body: str = ""
    route: str | None = None
    # Who asked, for the audit line (a deny's dynamic metadata names no caller).
    subject: str | None = None
    roles: tuple[str, ...] = ()
    client: str | None = None
    # The `resource#scope` Keycloak Authorization Services were asked about, if any.
    permission: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Denial:
    status: int
    error: str
    description: str
    challenge_error: str | None  # the RFC 6750 `error` in WWW-Authenticate; None: bare challenge
    challenge: bool


# Fixed texts: a deny never carries exception text or anything the provider said.
_DENIALS: Mapping[Reason, _Denial] = {
    Reason.BAD_REQUEST: _Denial(
        400, "invalid_request", "The request path is malformed", None, False
    ),
    Reason.NO_ROUTE: _Denial(403, "access_denied", "No route permits this request", None, False),
    Reason.MISSING_TOKEN: _Denial(401, "unauthorized", "A bearer token is required", None, True),
    Reason.MALFORMED_TOKEN: _Denial(
        401, "invalid_request", "The Authorization header is malformed", "invalid_request", True
    ),
    Reason.INVALID_TOKEN: _Denial(
        401, "invalid_token", "The access token is invalid or expired", "invalid_token", True
    ),
    Reason.INVALID_DPOP_PROOF: _Denial(
        401,
        "invalid_dpop_proof",
        "The DPoP proof is missing or invalid",
        "invalid_dpop_proof",
        True,
    ),
    Reason.INSUFFICIENT_ROLE: _Denial(
        403,
        "insufficient_scope",
        "The caller lacks a required role or scope",
        "insufficient_scope",
        True,
    ),
    Reason.CONDITION_FALSE: _Denial(
        403,
        "insufficient_scope",
        "The request does not meet the route condition",
        "insufficient_scope",
        True,
    ),
    Reason.CONDITION_ERROR: _Denial(
        403, "access_denied", "The route condition could not be decided", None, False
    ),
    Reason.PERMISSION_DENIED: _Denial(
        403,
        "insufficient_scope",
        "The caller lacks the permission for this resource",
        "insufficient_scope",
        True,
    ),
    Reason.PERMISSION_ERROR: _Denial(
        403, "access_denied", "The permission for this route could not be decided", None, False
    ),
    Reason.PROVIDER_UNAVAILABLE: _Denial(
        503, "temporarily_unavailable", "The identity provider is unavailable", None, False
    ),
    Reason.PROVIDER_REJECTED_CLIENT: _Denial(
        503, "temporarily_unavailable", "The identity provider is unavailable", None, False
    ),
    Reason.REPLAY_CHECK_UNAVAILABLE: _Denial(
        503, "temporarily_unavailable", "The DPoP proof cannot be checked now", None, False
    ),
    Reason.INTERNAL_ERROR: _Denial(
        503, "temporarily_unavailable", "Authorization failed; try again", None, False
    ),
}


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Denials:
    """Deny decisions with bodies and challenges rendered once for the configured realm.

    A 401 challenges with the scheme the request used: a DPoP request gets a DPoP challenge
    naming the proof algorithms (RFC 9449 §7.1). A request without a token is offered the
    schemes that are accepted: Bearer, DPoP when `offer_dpop`, not Bearer when
    `offer_bearer` is False (every provider behind this realm requires DPoP).
    """

    def __init__(
        self,
        realm: str,
        *,
        dpop_algs: frozenset[str] = PROOF_ALGORITHMS,
        offer_dpop: bool = False,
        offer_bearer: bool = True,
    ) -> None:
        self._realm = realm
        self._dpop_algs = " ".join(sorted(dpop_algs))
        self._offered = (offer_bearer or not offer_dpop, offer_dpop)
        self._rendered: dict[Reason, tuple[tuple[Header, ...], str]] = {
            reason: self._render(denial) for reason, denial in _DENIALS.items()
        }
        self._rendered_dpop: dict[Reason, tuple[tuple[Header, ...], str]] = {
            reason: self._render(denial, dpop=True) for reason, denial in _DENIALS.items()
        }

    def _render(
        self, denial: _Denial, scope: str = "", *, dpop: bool = False
    ) -> tuple[tuple[Header, ...], str]:
        body = json.dumps({"error": denial.error, "error_description": denial.description})
        headers: list[Header] = [("content-type", "application/json")]
        if denial.challenge:
            params = [f"realm={_quoted(self._realm)}"]
            if denial.challenge_error is not None:
                params.append(f"error={_quoted(denial.challenge_error)}")
                params.append(f"error_description={_quoted(denial.description)}")
            if scope:
                params.append(f"scope={_quoted(scope)}")
            bearer = "Bearer " + ", ".join(params)
            dpop_challenge = "DPoP " + ", ".join([f"algs={_quoted(self._dpop_algs)}", *params])
            if dpop or denial.challenge_error == "invalid_dpop_proof":
                challenges = [dpop_challenge]
            elif denial.challenge_error is None:
                offer_bearer, offer_dpop = self._offered
                challenges = [bearer] * offer_bearer + [dpop_challenge] * offer_dpop
            else:
                challenges = [bearer]
            # Several challenges in one field value, as RFC 9110 §11.6.1 allows: a single
            # header passes through every proxy's header handling alike.
            headers.append(("www-authenticate", ", ".join(challenges)))
        return tuple(headers), body

    def deny(
        self,
        reason: Reason,
        *,
        route: str | None = None,
        subject: str | None = None,
        required_scopes: frozenset[str] = frozenset(),
        roles: frozenset[str] = frozenset(),
        client: str | None = None,
        permission: str | None = None,
        dpop: bool = False,
    ) -> Decision:
        """`dpop`: the request came with a DPoP token, so a challenge uses that scheme."""
        denial = _DENIALS[reason]
        if required_scopes and reason is Reason.INSUFFICIENT_ROLE:
            headers, body = self._render(denial, " ".join(sorted(required_scopes)), dpop=dpop)
        elif dpop:
            headers, body = self._rendered_dpop[reason]
        else:
            headers, body = self._rendered[reason]
        return Decision(
            allowed=False,
            status=denial.status,
            reason=reason,
            response_headers=headers,
            body=body,
            route=route,
            subject=subject,
            roles=tuple(sorted(roles)),
            client=client,
            permission=permission,
            metadata={"reason": reason.value, "route": route or ""},
        )
