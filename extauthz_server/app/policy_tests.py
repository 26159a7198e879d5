"""`extauthz-server test-policy`: a table of cases run through the real Authorizer with the
identities the file gives (no provider is called), each case's outcome against its `expect`.

    cases:
      - name: a Europe manager reads Europe's forms
        request: {method: GET, host: app.example.com, path: /api/regions/europe/forms/1}
        identity: {claims: {sub: u-1, realm_access: {roles: ["Manager for Europe"]}}}
        expect: {status: 200, headers: {x-auth-roles: "manager:europe"}}

The claims stand for the provider's answer: they go through its role claims and the role
mapping as an introspection answer would (`active` and a Bearer `token_type` are assumed
unless given). Without `identity` the request carries no token.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from extauthz_server.config.model import Config, authorizer_settings
from extauthz_server.config.reader import Section
from extauthz_server.core.authorizer import Authorizer
from extauthz_server.core.decision import Decision
from extauthz_server.core.identity import Identity, Inactive, identity_from_introspection
from extauthz_server.core.permissions import PermissionAnswer, PermissionQuery
from extauthz_server.core.request import AuthRequest
from extauthz_server.core.roles import ClaimPath
from extauthz_server.errors import ConfigError, ProviderUnavailable

MAX_CASES_BYTES = 4 * 1024 * 1024
DEFAULT_HOST = "app.example.com"
# Long enough that a slow host never turns a case into a timeout: no provider is called.
CHECK_TIMEOUT_S = 5.0
_CASE_TOKEN = "test-policy-case-token"  # noqa: S105 - a placeholder, never sent anywhere


@dataclass(frozen=True, slots=True)
class Expectation:
    status: int
    reason: str | None
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class PolicyCase:
    name: str
    request: AuthRequest
    claims: Mapping[str, object] | None
    expect: Expectation
    # What Keycloak Authorization Services answer, per `resource#scope` (routes with a
    # `permission`); no call is made.
    keycloak: Mapping[str, PermissionAnswer] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: PolicyCase
    decision: Decision
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems


def read_cases(path: Path) -> list[PolicyCase]:
    """The cases in `path`; a problem is a ConfigError naming the case's key."""
    try:
        text = path.read_bytes()[: MAX_CASES_BYTES + 1]
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the cases file: {exc.strerror}") from exc
    if len(text) > MAX_CASES_BYTES:
        raise ConfigError(str(path), f"larger than {MAX_CASES_BYTES} bytes")
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), f"not valid YAML: {exc}") from exc
    top = Section(document if document is not None else {}, "")
    cases = [
        _case(Section(item, f"cases[{index}]")) for index, item in enumerate(top.items("cases"))
    ]
    top.finish()
    if not cases:
        raise ConfigError("cases", "expected a non-empty list of cases")
    names = [case.name for case in cases]
    duplicate = next((name for name in names if names.count(name) > 1), None)
    if duplicate is not None:
        raise ConfigError("cases", f"duplicate case name {duplicate!r}")
    return cases


def _case(section: Section) -> PolicyCase:
    name = section.string("name")
    request = section.section("request")
    identity = section.section("identity") if section.has("identity") else None
    if identity is None:
        section.raw("identity")
    expect = section.section("expect")
    keycloak = _keycloak_answers(section)
    section.finish()
    headers = {key.lower(): str(value) for key, value in request.mapping("headers").items()}
    claims: Mapping[str, object] | None = None
    if identity is not None:
        claims = identity.mapping("claims")
        identity.finish()
        headers["authorization"] = f"Bearer {_CASE_TOKEN}"
    auth_request = AuthRequest(
        method=request.string("method", "GET").upper(),
        host=request.string("host", DEFAULT_HOST),
        path=request.string("path"),
        headers=headers,
    )
    request.finish()
    expectation = Expectation(
        status=expect.integer("status", 200, 100, 599),
        reason=expect.optional_string("reason"),
        headers={key.lower(): str(value) for key, value in expect.mapping("headers").items()},
    )
    expect.finish()
    return PolicyCase(name, auth_request, claims, expectation, keycloak)


def _keycloak_answers(section: Section) -> dict[str, PermissionAnswer]:
    answers: dict[str, PermissionAnswer] = {}
    for pair, answer in section.mapping("keycloak").items():
        try:
            answers[str(pair)] = PermissionAnswer(answer)
        except ValueError:
            choices = ", ".join(a.value for a in PermissionAnswer)
            raise ConfigError(
                f"{section.key('keycloak')}.{pair}", f"expected one of {choices}"
            ) from None
    return answers


class _CaseKeycloak:
    """The case's answers of Keycloak Authorization Services; remembers what it was asked
    and could not answer."""

    def __init__(self, answers: Mapping[str, PermissionAnswer]) -> None:
        self._answers = answers
        self.unanswered: list[str] = []

    async def decide(
        self,
        token: str,
        identity: Identity,
        query: PermissionQuery,
        timeout_s: float,
        provider: str | None = None,
    ) -> PermissionAnswer:
        pair = query.pair
        answer = self._answers.get(pair)
        if answer is None:
            self.unanswered.append(pair)
            raise ProviderUnavailable(f"the case gives no Keycloak answer for {pair}")
        return answer


class _CaseIdentity:
    """The case's claims as the provider's answer for its token."""

    def __init__(self, config: Config, claims: Mapping[str, object] | None, now: float) -> None:
        self._config = config
        self._claims = claims
        self._now = now

    async def resolve(
        self, token: str, timeout_s: float, provider: str | None = None
    ) -> Identity | Inactive:
        if self._claims is None:
            return Inactive.NOT_ACTIVE
        document = dict(self._claims)
        document.setdefault("active", True)
        if "token_type" not in document and "typ" not in document:
            document["token_type"] = "Bearer"  # noqa: S105 - a token type, not a secret
        return identity_from_introspection(document, self._role_claims(provider), self._now)

    def _role_claims(self, provider: str | None) -> tuple[ClaimPath, ...]:
        for configured in self._config.providers:
            if provider is None or configured.name == provider:
                return configured.role_claims
        return self._config.role_claims


async def run_cases(config: Config, cases: Sequence[PolicyCase], now: float) -> list[CaseResult]:
    settings = authorizer_settings(config)
    results: list[CaseResult] = []
    for case in cases:
        keycloak = _CaseKeycloak(case.keycloak)
        identities = _CaseIdentity(config, case.claims, now)
        authorizer = Authorizer(settings, identities, permissions=keycloak)
        decision = await authorizer.check(case.request, CHECK_TIMEOUT_S)
        problems = [f"no Keycloak answer for {pair} (keycloak:)" for pair in keycloak.unanswered]
        problems += _problems(case.expect, decision)
        results.append(CaseResult(case, decision, tuple(problems)))
    return results


def _problems(expect: Expectation, decision: Decision) -> Iterator[str]:
    if decision.status != expect.status:
        yield f"status {decision.status} ({decision.reason.value}), expected {expect.status}"
    if expect.reason is not None and decision.reason.value != expect.reason:
        yield f"reason {decision.reason.value}, expected {expect.reason}"
    # An allow is judged by what the upstream receives, a deny by what the client does.
    seen = dict(decision.upstream_headers if decision.allowed else decision.response_headers)
    for name, value in expect.headers.items():
        got = seen.get(name)
        if got != value:
            shown = "absent" if got is None else repr(got)
            yield f"header {name} {shown}, expected {value!r}"


def report(results: Sequence[CaseResult]) -> str:
    """One line per case, then the count."""
    lines = []
    for result in results:
        if result.passed:
            lines.append(f"PASS  {result.case.name}")
        else:
            lines.append(f"FAIL  {result.case.name}: {'; '.join(result.problems)}")
    failed = sum(not result.passed for result in results)
    lines.append(f"test-policy: {len(results) - failed} passed, {failed} failed")
    return "\n".join(lines)
