"""Route conditions (`routes[].when`): CEL expressions, compiled once at load and evaluated
after the route's role and scope rules pass.

Variables: `request` (method, host without port, normalised path, query as a map of first
values, headers with lower-cased names), `params` (the path template's captures) and
`identity` (subject, username, email, client, roles, provider_roles, scopes, claims). Only a
result of exactly `true` lets the request pass; `false` and every evaluation error deny.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from cel_expr_python import cel

from extauthz_server.core.identity import Identity
from extauthz_server.core.paths import split_query
from extauthz_server.core.request import AuthRequest, host_without_port

MAX_CONDITION_CHARS = 4096

_STRING = cel.Type.STRING
_VARIABLES = {
    "request": cel.Type.Map(_STRING, cel.Type.DYN),
    "params": cel.Type.Map(_STRING, _STRING),
    "identity": cel.Type.Map(_STRING, cel.Type.DYN),
}
_ENVIRONMENT = cel.NewEnv(variables=_VARIABLES)
_BOOLEAN_RESULTS = frozenset({str(cel.Type.BOOL), str(cel.Type.DYN)})


class ConditionError(ValueError):
    """The expression does not compile, or cannot give a boolean."""


class Outcome(enum.Enum):
    TRUE = "true"
    FALSE = "false"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class ConditionResult:
    outcome: Outcome
    # Why evaluation failed (CEL's own words, never claim values we add); "" otherwise.
    problem: str = ""


@dataclass(frozen=True, slots=True)
class Condition:
    text: str
    _expression: Any = field(repr=False, compare=False)

    @classmethod
    def compile(cls, text: str) -> Condition:
        if len(text) > MAX_CONDITION_CHARS:
            raise ConditionError(f"longer than {MAX_CONDITION_CHARS} characters")
        try:
            expression = _ENVIRONMENT.compile(text)
        except RuntimeError as exc:
            raise ConditionError(_first_line(str(exc))) from None
        result_type = str(expression.return_type())
        if result_type not in _BOOLEAN_RESULTS:
            raise ConditionError(f"gives a {result_type.lower()}, not a bool")
        return cls(text, expression)

    @property
    def reads_claims(self) -> bool:
        """Whether the expression may read `identity.claims` (then identities keep them)."""
        return "claims" in self.text

    def evaluate(
        self,
        request: AuthRequest,
        path: str,
        params: Mapping[str, str],
        identity: Identity,
        roles: frozenset[str],
    ) -> ConditionResult:
        data = {
            "request": _request(request, path),
            "params": dict(params),
            "identity": _identity(identity, roles),
        }
        try:
            value = self._expression.eval(data=data)
        except RuntimeError as exc:  # the library's own limits, e.g. too many iterations
            return ConditionResult(Outcome.ERROR, _first_line(str(exc)))
        result = value.value()
        # An evaluation error comes back as a value (its text): only a real `true` passes.
        if result is True:
            return ConditionResult(Outcome.TRUE)
        if result is False:
            return ConditionResult(Outcome.FALSE)
        problem = _first_line(str(result)) if str(value.type()) == "ERROR" else "not a bool"
        return ConditionResult(Outcome.ERROR, problem)


def _request(request: AuthRequest, path: str) -> dict[str, object]:
    query: dict[str, str] = {}
    for name, value in parse_qsl(split_query(request.path)[1], keep_blank_values=True):
        query.setdefault(name, value)
    return {
        "method": request.method,
        "host": host_without_port(request.host),
        "path": path,
        "query": query,
        "headers": dict(request.headers),
    }


def _identity(identity: Identity, roles: frozenset[str]) -> dict[str, object]:
    return {
        "subject": identity.subject,
        "username": identity.username,
        "email": identity.email,
        "client": identity.client_id,
        "roles": sorted(roles),
        "provider_roles": sorted(identity.provider_roles),
        "scopes": sorted(identity.scopes),
        "claims": dict(identity.claims) if identity.claims is not None else {},
    }


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else "unknown error"
