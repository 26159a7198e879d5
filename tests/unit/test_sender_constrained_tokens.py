"""Sender-constrained tokens through the decision path: a DPoP-bound token needs a fresh proof
of its key on every request (RFC 9449 §7), a certificate-bound one the client certificate the
proxy saw (RFC 8705 §3), and neither works as a plain bearer token."""

from __future__ import annotations

import base64
import hashlib

import pytest

from extauthz_server.app.explain import binding_hints
from extauthz_server.config.model import Config, authorizer_settings, parse_config
from extauthz_server.core.authorizer import Authorizer
from extauthz_server.core.decision import Decision, Reason
from extauthz_server.core.identity import Confirmation, Identity, Inactive
from extauthz_server.core.replay import LocalReplayGuard
from extauthz_server.core.request import AuthRequest
from extauthz_server.errors import ReplayCheckUnavailable
from tests.support.dpop import DpopKey

NOW = 1_767_225_700.0
HOST = "api.example.com"
URL = f"https://{HOST}/api/forms/1"
CLIENT_KEY = DpopKey()
CERTIFICATE_DER = b"\x30\x82\x01\x0a" + b"certificate body" * 8
CERTIFICATE_THUMBPRINT = (
    base64.urlsafe_b64encode(hashlib.sha256(CERTIFICATE_DER).digest()).rstrip(b"=").decode()
)


def config(provider_dpop: str = "allowed", extra: str = "") -> Config:
    return parse_config(
        f"""
provider:
  issuer: https://sso.example.com/realms/demo
  client_id: ext-authz
  client_secret: s3cret
  dpop: {provider_dpop}
roles:
  mapping: {{manager: [creator]}}
routes:
  - {{name: health, path_prefix: /healthz, public: true}}
  - {{name: forms, path_prefix: /api/forms, any_of: [creator]}}
{extra}""",
        {},
    )


def caller(confirmation: Confirmation | None) -> Identity:
    return Identity(
        subject="bob-id",
        username="bob",
        email=None,
        client_id="dpop-app",
        scopes=frozenset(),
        provider_roles=frozenset({"manager"}),
        expires_at=NOW + 300,
        confirmation=confirmation,
    )


DPOP_BOUND = caller(Confirmation(jkt=CLIENT_KEY.thumbprint))
CERT_BOUND = caller(Confirmation(x5t_s256=CERTIFICATE_THUMBPRINT))
UNBOUND = caller(None)
IDENTITIES = {"dpop-token": DPOP_BOUND, "cert-token": CERT_BOUND, "plain-token": UNBOUND}


class Callers:
    def __init__(self) -> None:
        self.calls = 0

    async def resolve(
        self, token: str, timeout_s: float, provider: str | None = None
    ) -> Identity | Inactive:
        self.calls += 1
        return IDENTITIES.get(token, Inactive.NOT_ACTIVE)


class BrokenReplayStore:
    async def first_use(self, key: bytes, now: float, window_s: float) -> bool:
        raise ReplayCheckUnavailable("Redis did not answer the DPoP replay check")


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def authorizer(
    settings: Config | None = None,
    clock: Clock | None = None,
    guard: LocalReplayGuard | BrokenReplayStore | None = None,
) -> tuple[Authorizer, Callers]:
    callers = Callers()
    checks = Authorizer(
        authorizer_settings(settings or config()),
        callers,
        clock or Clock(),
        replay_guard=LocalReplayGuard() if guard is None else guard,
    )
    return checks, callers


def request(
    authorization: str,
    proof: str | None = None,
    *,
    method: str = "GET",
    path: str = "/api/forms/1",
    scheme: str = "https",
    certificate: str = "",
) -> AuthRequest:
    headers = {"authorization": authorization}
    if proof is not None:
        headers["dpop"] = proof
    return AuthRequest(method, HOST, path, headers, scheme=scheme, client_certificate=certificate)


def dpop(token: str = "dpop-token", key: DpopKey = CLIENT_KEY, **changes: object) -> AuthRequest:  # noqa: S107
    method = str(changes.pop("method", "GET"))
    url = str(changes.pop("url", URL))
    changes.setdefault("iat", NOW)
    proof = key.proof(method, url, token, **changes)  # type: ignore[arg-type]
    return request(f"DPoP {token}", proof, method=method)


def challenge(decision: Decision) -> str:
    return dict(decision.response_headers)["www-authenticate"]


async def test_a_dpop_bound_token_with_a_fresh_proof_is_allowed() -> None:
    checks, _ = authorizer()
    decision = await checks.check(dpop(), 1.0)
    assert decision.allowed
    assert ("x-auth-roles", "creator") in decision.upstream_headers


async def test_the_same_proof_twice_is_a_replay() -> None:
    checks, _ = authorizer()
    replayed = dpop(jti="once")
    assert (await checks.check(replayed, 1.0)).allowed
    decision = await checks.check(replayed, 1.0)
    assert (decision.status, decision.reason) == (401, Reason.INVALID_DPOP_PROOF)
    assert decision.metadata["dpop"] == "replayed"
    assert challenge(decision).startswith('DPoP algs="')
    assert 'error="invalid_dpop_proof"' in challenge(decision)


async def test_a_jti_is_forgotten_only_after_the_proof_window() -> None:
    clock = Clock()
    checks, _ = authorizer(clock=clock)
    assert (await checks.check(dpop(jti="j"), 1.0)).allowed
    clock.now = NOW + 20  # still inside the window: the proof's iat is 20 s old
    assert not (await checks.check(dpop(jti="j"), 1.0)).allowed


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"method": "POST"}, "method"),
        ({"url": f"https://{HOST}/api/forms/2"}, "uri"),
        ({"url": f"http://{HOST}/api/forms/1"}, "uri"),
        ({"drop": ("ath",)}, "token_hash"),
        ({"iat": NOW - 60}, "time"),
        ({"header": {"typ": "JWT"}}, "wrong_type"),
    ],
    ids=["another-method", "another-uri", "another-scheme", "no-ath", "too-old", "typ-JWT"],
)
async def test_a_proof_for_another_request_is_refused_before_the_provider_is_asked(
    changes: dict[str, object], problem: str
) -> None:
    checks, callers = authorizer()
    # A GET of URL, carrying a proof made with these changes.
    proof_method = str(changes.pop("method", "GET"))
    proof_url = str(changes.pop("url", URL))
    changes.setdefault("iat", NOW)
    proof = CLIENT_KEY.proof(proof_method, proof_url, "dpop-token", **changes)  # type: ignore[arg-type]
    decision = await checks.check(request("DPoP dpop-token", proof), 1.0)
    assert (decision.status, decision.reason) == (401, Reason.INVALID_DPOP_PROOF)
    assert decision.metadata["dpop"] == problem
    assert callers.calls == 0


async def test_a_proof_of_another_key_is_refused() -> None:
    checks, _ = authorizer()
    decision = await checks.check(dpop(key=DpopKey()), 1.0)
    assert (decision.status, decision.reason) == (401, Reason.INVALID_DPOP_PROOF)
    assert decision.metadata["dpop"] == "key_mismatch"


async def test_no_proof_header_is_an_invalid_proof() -> None:
    checks, _ = authorizer()
    decision = await checks.check(request("DPoP dpop-token"), 1.0)
    assert decision.metadata["dpop"] == "missing"
    assert decision.status == 401


async def test_a_dpop_bound_token_sent_as_bearer_is_refused_with_a_dpop_challenge() -> None:
    checks, _ = authorizer()
    proof = CLIENT_KEY.proof("GET", URL, "dpop-token", iat=NOW)
    for with_proof in (None, proof):
        decision = await checks.check(request("Bearer dpop-token", with_proof), 1.0)
        assert (decision.status, decision.reason) == (401, Reason.INVALID_TOKEN)
        assert challenge(decision).startswith('DPoP algs="')
        assert 'error="invalid_token"' in challenge(decision)


async def test_an_unbound_token_under_the_dpop_scheme_is_refused() -> None:
    checks, _ = authorizer()
    decision = await checks.check(dpop(token="plain-token"), 1.0)
    assert (decision.status, decision.reason) == (401, Reason.INVALID_TOKEN)
    assert challenge(decision).startswith("DPoP ")


async def test_an_unbound_bearer_token_passes_where_dpop_is_allowed() -> None:
    checks, _ = authorizer()
    assert (await checks.check(request("Bearer plain-token"), 1.0)).allowed


async def test_a_provider_that_requires_dpop_refuses_bearer_tokens_without_asking() -> None:
    checks, callers = authorizer(config("required"))
    decision = await checks.check(request("Bearer plain-token"), 1.0)
    assert (decision.status, decision.reason) == (401, Reason.INVALID_TOKEN)
    assert challenge(decision).startswith('DPoP algs="')
    assert callers.calls == 0
    assert (await checks.check(dpop(), 1.0)).allowed


async def test_a_missing_token_is_offered_the_schemes_that_are_accepted() -> None:
    allowed, _ = authorizer(config("allowed"))
    required, _ = authorizer(config("required"))
    no_token = request("")
    assert challenge(await allowed.check(no_token, 1.0)) == 'Bearer realm="demo"'
    assert challenge(await required.check(no_token, 1.0)).startswith('DPoP algs="ES256 ')


async def test_the_replay_store_failing_is_a_503_never_an_allow() -> None:
    checks, _ = authorizer(guard=BrokenReplayStore())
    decision = await checks.check(dpop(), 1.0)
    assert (decision.status, decision.reason) == (503, Reason.REPLAY_CHECK_UNAVAILABLE)
    # Bearer tokens need no replay check and keep working.
    assert (await checks.check(request("Bearer plain-token"), 1.0)).allowed


async def test_a_full_in_process_replay_store_refuses_new_proofs() -> None:
    checks, _ = authorizer(guard=LocalReplayGuard(max_entries=1))
    assert (await checks.check(dpop(), 1.0)).allowed
    assert (await checks.check(dpop(), 1.0)).status == 503


async def test_a_proof_behind_a_tls_terminator_matches_with_the_external_scheme() -> None:
    proof = CLIENT_KEY.proof("GET", URL, "dpop-token", iat=NOW)
    plain, _ = authorizer()
    assert not (await plain.check(request("DPoP dpop-token", proof, scheme="http"), 1.0)).allowed
    terminated, _ = authorizer(config(extra="dpop: {external_scheme: https}"))
    assert (await terminated.check(request("DPoP dpop-token", proof, scheme="http"), 1.0)).allowed


async def test_a_certificate_bound_token_needs_the_certificate_the_proxy_saw() -> None:
    checks, _ = authorizer()
    pem = (
        "-----BEGIN CERTIFICATE-----\n"
        + base64.b64encode(CERTIFICATE_DER).decode()
        + "\n-----END CERTIFICATE-----\n"
    )
    other = pem.replace(
        base64.b64encode(CERTIFICATE_DER).decode(), base64.b64encode(b"\x30other").decode()
    )
    assert (await checks.check(request("Bearer cert-token", certificate=pem), 1.0)).allowed
    for certificate in ("", other):
        decision = await checks.check(request("Bearer cert-token", certificate=certificate), 1.0)
        assert (decision.status, decision.reason) == (401, Reason.INVALID_TOKEN)


async def test_on_a_public_route_an_unproven_token_is_served_anonymously() -> None:
    checks, _ = authorizer()
    stolen = await checks.check(request("Bearer dpop-token", path="/healthz"), 1.0)
    assert stolen.allowed
    assert stolen.subject is None
    proof = CLIENT_KEY.proof("GET", f"https://{HOST}/healthz", "dpop-token", iat=NOW)
    proven = await checks.check(request("DPoP dpop-token", proof, path="/healthz"), 1.0)
    assert proven.allowed
    assert proven.subject == "bob-id"


def test_check_explains_what_a_bound_token_needs() -> None:
    dpop_hint, cert_hint = binding_hints(DPOP_BOUND) + binding_hints(CERT_BOUND)
    assert "Authorization: DPoP" in dpop_hint
    assert "client certificate" in cert_hint
    assert binding_hints(UNBOUND) == ()
