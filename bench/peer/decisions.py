"""Same decisions before any timing: the Check requests each decision case sends, what a
server answered reduced to what Envoy acts on, and the comparison of two servers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from bench.check_bodies import REQUEST_PATH, check_request
from bench.peer.signing import DecisionTokens
from extauthz_server._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

CHECK_TIMEOUT_S = 5.0


class DecisionMismatch(RuntimeError):
    """Two servers decided a case differently."""


@dataclass(frozen=True, slots=True)
class DecisionCase:
    name: str
    path: str
    token: str | None


@dataclass(frozen=True, slots=True)
class Verdict:
    """What Envoy does with a CheckResponse: pass on (with headers set and removed) or answer
    with a status, a challenge and an error code."""

    allowed: bool
    http_status: int  # 200 for an allow
    upstream_headers: tuple[tuple[str, str], ...] = ()
    removed_headers: tuple[str, ...] = ()
    challenge: str | None = None  # WWW-Authenticate of a deny
    error: str | None = None  # the `error` of a deny's JSON body

    def summary(self) -> str:
        if self.allowed:
            return f"allow {dict(self.upstream_headers)}"
        return f"deny {self.http_status} ({self.error}; {self.challenge})"


def decision_cases(tokens: DecisionTokens) -> tuple[DecisionCase, ...]:
    return (
        DecisionCase("valid token, allowed route", REQUEST_PATH, tokens.valid),
        DecisionCase("valid token, forbidden route", "/admin/users", tokens.valid),
        DecisionCase("no token", REQUEST_PATH, None),
        DecisionCase("bad signature", REQUEST_PATH, tokens.forged),
        DecisionCase("expired token", REQUEST_PATH, tokens.expired),
        DecisionCase("public route, no token", "/healthz", None),
    )


def request_for(case: DecisionCase) -> external_auth_pb2.CheckRequest:
    """The benchmark's CheckRequest (as Envoy builds it) for the case's path and token."""
    request = check_request(case.token)
    http = request.attributes.request.http
    http.path = case.path
    http.headers[":path"] = case.path
    return request


def verdict_of(response: external_auth_pb2.CheckResponse) -> Verdict:
    # Envoy lets a request through on status OK, with or without an ok_response (a plain
    # boolean decision of the plugin sends none).
    if response.status.code == 0:
        ok = response.ok_response
        return Verdict(
            allowed=True,
            http_status=200,
            upstream_headers=tuple(sorted((h.header.key, h.header.value) for h in ok.headers)),
            removed_headers=tuple(sorted(ok.headers_to_remove)),
        )
    denied = response.denied_response
    headers = {h.header.key.lower(): h.header.value for h in denied.headers}
    try:
        body = json.loads(denied.body) if denied.body else {}
    except ValueError:
        body = {}
    return Verdict(
        allowed=False,
        http_status=int(denied.status.code) or 403,  # Envoy answers 403 when none is given
        challenge=headers.get("www-authenticate"),
        error=body.get("error") if isinstance(body, dict) else None,
    )


def verdicts(port: int, cases: Sequence[DecisionCase]) -> list[Verdict]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)  # type: ignore[no-untyped-call]
        return [
            verdict_of(stub.Check(request_for(case), timeout=CHECK_TIMEOUT_S)) for case in cases
        ]


def differences(
    cases: Sequence[DecisionCase], ours: Sequence[Verdict], theirs: Sequence[Verdict]
) -> list[str]:
    """One line per case the two servers decided differently."""
    return [
        f"{case.name}: ours {mine.summary()}, peer {other.summary()}"
        for case, mine, other in zip(cases, ours, theirs, strict=True)
        if mine != other
    ]


def assert_same_decisions(
    ours_port: int, peer_port: int, cases: Sequence[DecisionCase], peer: str
) -> list[Verdict]:
    """Every case decided alike by our server and the peer, or DecisionMismatch naming each
    difference; returns the verdicts."""
    ours, theirs = verdicts(ours_port, cases), verdicts(peer_port, cases)
    if found := differences(cases, ours, theirs):
        raise DecisionMismatch(f"{peer} decides differently from ours: " + "; ".join(found))
    return ours


def assert_allows(port: int, tokens: Sequence[str], peer: str) -> None:
    """Every benchmark token is let through on the benchmark's route."""
    cases = [DecisionCase(f"token {i}", REQUEST_PATH, token) for i, token in enumerate(tokens)]
    refused = [
        case.name for case, v in zip(cases, verdicts(port, cases), strict=True) if not v.allowed
    ]
    if refused:
        raise DecisionMismatch(f"{peer} refuses benchmark tokens: {', '.join(refused[:3])}")
