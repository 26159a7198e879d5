"""The signed identity token on the upstream request: set on allows with an identity, removed
otherwise, reused with the remembered decision until near its expiry, re-keyed on reload."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest

from extauthz_server.config.model import authorizer_settings, parse_config
from extauthz_server.core.authorizer import Authorizer, AuthorizerSettings
from extauthz_server.core.decision import Decision, Reason
from extauthz_server.core.identity import Identity, Inactive
from extauthz_server.core.identity_token import DEFAULT_HEADER, jwks_document
from extauthz_server.core.request import AuthRequest
from tests.support.signing_keys import ec_key, rsa_key, write_private_key

HEADER = DEFAULT_HEADER
START = time.time()  # minted tokens are checked by pyjwt against the real time


@dataclass
class FakeClock:
    now: float = START
    reads: int = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


@dataclass
class TableSource:
    identities: Mapping[str, Identity]
    calls: list[str] = field(default_factory=list)

    async def resolve(
        self, token: str, timeout_s: float, provider: str | None = None
    ) -> Identity | Inactive:
        self.calls.append(token)
        return self.identities.get(token, Inactive.NOT_ACTIVE)


BOB = Identity(
    subject="bob-id",
    username="bob",
    email="bob@example.com",
    client_id="web-app",
    scopes=frozenset(),
    provider_roles=frozenset({"manager"}),
    expires_at=START + 3600,
)
DAVE = Identity("dave-id", "dave", None, None, frozenset(), frozenset(), START + 20)


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    write_private_key(directory / "current.pem", ec_key())
    write_private_key(directory / "next.pem", rsa_key())
    return directory


def settings(seed_yaml: str, keys_dir: Path, section: str | None) -> AuthorizerSettings:
    text = seed_yaml + (f"identity_token: {section}\n" if section else "")
    return authorizer_settings(parse_config(text, {}, base_dir=keys_dir))


@pytest.fixture
def with_tokens(seed_yaml: str, keys_dir: Path) -> AuthorizerSettings:
    return settings(seed_yaml, keys_dir, "{key_file: current.pem, ttl_seconds: 60}")


@pytest.fixture
def clock() -> FakeClock:
    # Now, not at import: pyjwt checks `exp` against the real time, and the whole suite
    # may run for minutes after this module was imported.
    return FakeClock(now=time.time())


@pytest.fixture
def authorizer(with_tokens: AuthorizerSettings, clock: FakeClock) -> Authorizer:
    return Authorizer(with_tokens, TableSource({"bob": BOB, "dave": DAVE}), clock)


def request(path: str, token: str | None = None, **headers: str) -> AuthRequest:
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return AuthRequest(method="GET", host="api.example.com", path=path, headers=headers)


def minted(decision: Decision) -> str:
    values = [value for name, value in decision.upstream_headers if name == HEADER]
    assert len(values) == 1, decision.upstream_headers
    return values[0]


def verified(token: str, document: Mapping[str, Any]) -> dict[str, Any]:
    key = jwt.PyJWKSet.from_dict(dict(document))[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(token, key, algorithms=["ES256", "RS256"])
    return claims


async def test_allow_carries_a_token_the_upstream_can_verify(
    authorizer: Authorizer, with_tokens: AuthorizerSettings
) -> None:
    # A client's own copy is overwritten (OVERWRITE_IF_EXISTS_OR_ADD at the gRPC edge).
    decision = await authorizer.check(request("/api/forms/1", "bob", **{HEADER: "forged"}), 0.1)

    assert decision.reason is Reason.ALLOWED
    assert with_tokens.identity_token is not None
    assert with_tokens.identity_token.header == HEADER
    claims = verified(minted(decision), jwks_document(with_tokens.identity_token))
    assert claims["sub"] == "bob-id"
    assert claims["roles"] == ["creator"]
    assert claims["route"] == "forms"
    assert claims["client_id"] == "web-app"
    assert HEADER not in decision.headers_to_remove


async def test_token_expires_with_the_identity(authorizer: Authorizer) -> None:
    decision = await authorizer.check(request("/dashboard", "dave"), 0.1)

    claims = jwt.decode(minted(decision), options={"verify_signature": False})
    assert claims["exp"] == int(DAVE.expires_at or 0)
    assert "client_id" not in claims
    assert claims["roles"] == []


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer unknown", 'Bearer a"b', "Basic Ym9iOnB3"],
    ids=["no-token", "inactive-token", "malformed-token", "other-scheme"],
)
async def test_anonymous_allow_removes_a_client_sent_copy(
    authorizer: Authorizer, authorization: str | None
) -> None:
    headers = {HEADER: "forged"} | ({"authorization": authorization} if authorization else {})

    decision = await authorizer.check(request("/healthz", **headers), 0.1)

    assert decision.reason is Reason.PUBLIC
    assert HEADER in decision.headers_to_remove
    assert HEADER not in dict(decision.upstream_headers)


async def test_public_route_with_a_valid_token_gets_a_token_and_reuses_it(
    authorizer: Authorizer,
) -> None:
    first = await authorizer.check(request("/healthz", "bob"), 0.1)
    second = await authorizer.check(request("/healthz", "bob"), 0.1)

    assert first.reason is Reason.PUBLIC
    assert jwt.decode(minted(first), options={"verify_signature": False})["route"] == "health"
    assert second is first


async def test_deny_carries_no_token(authorizer: Authorizer) -> None:
    decision = await authorizer.check(request("/admin", "bob"), 0.1)

    assert decision.reason is Reason.INSUFFICIENT_ROLE
    assert decision.upstream_headers == ()


async def test_remembered_decision_is_reused_until_its_token_nears_expiry(
    authorizer: Authorizer, clock: FakeClock
) -> None:
    first = await authorizer.check(request("/api/forms", "bob"), 0.1)
    clock.now += 44  # 60 s tokens are reused for 45 s
    reused = await authorizer.check(request("/api/forms", "bob"), 0.1)
    clock.now += 1
    renewed = await authorizer.check(request("/api/forms", "bob"), 0.1)

    assert reused is first
    assert renewed is not first
    first_exp = jwt.decode(minted(first), options={"verify_signature": False})["exp"]
    renewed_exp = jwt.decode(minted(renewed), options={"verify_signature": False})["exp"]
    assert renewed_exp == first_exp + 45
    assert await authorizer.check(request("/api/forms", "bob"), 0.1) is renewed


async def test_each_route_gets_its_own_token(authorizer: Authorizer) -> None:
    forms = await authorizer.check(request("/api/forms", "bob"), 0.1)
    other = await authorizer.check(request("/dashboard", "bob"), 0.1)

    routes = [
        jwt.decode(minted(d), options={"verify_signature": False})["route"] for d in (forms, other)
    ]
    assert routes == ["forms", "default"]


async def test_without_identity_tokens_the_clock_is_never_read(
    seed_yaml: str, keys_dir: Path, clock: FakeClock
) -> None:
    authorizer = Authorizer(settings(seed_yaml, keys_dir, None), TableSource({"bob": BOB}), clock)

    for path in ("/api/forms", "/api/forms", "/healthz"):
        decision = await authorizer.check(request(path, "bob"), 0.1)
        assert HEADER not in dict(decision.upstream_headers)
        assert HEADER not in decision.headers_to_remove

    assert clock.reads == 0


async def test_reconfigure_switches_the_signing_key(
    seed_yaml: str,
    keys_dir: Path,
    authorizer: Authorizer,
    with_tokens: AuthorizerSettings,
) -> None:
    before = await authorizer.check(request("/api/forms", "bob"), 0.1)
    rotated = settings(
        seed_yaml, keys_dir, "{key_file: next.pem, previous_key_files: [current.pem]}"
    )

    authorizer.reconfigure(rotated)
    after = await authorizer.check(request("/api/forms", "bob"), 0.1)

    assert with_tokens.identity_token is not None
    assert rotated.identity_token is not None
    old_kid = with_tokens.identity_token.signing_key.kid
    new_kid = rotated.identity_token.signing_key.kid
    assert jwt.get_unverified_header(minted(before))["kid"] == old_kid
    assert jwt.get_unverified_header(minted(after))["kid"] == new_kid
    assert jwt.get_unverified_header(minted(after))["alg"] == "RS256"
    # Both verify against the JWKS now in force: the old key is still published.
    document = jwks_document(rotated.identity_token)
    assert verified(minted(before), document)["sub"] == verified(minted(after), document)["sub"]


async def test_reconfigure_to_off_stops_minting(
    seed_yaml: str, keys_dir: Path, authorizer: Authorizer
) -> None:
    await authorizer.check(request("/api/forms", "bob"), 0.1)

    authorizer.reconfigure(settings(seed_yaml, keys_dir, None))
    after = await authorizer.check(request("/api/forms", "bob", **{HEADER: "forged"}), 0.1)
    anonymous = await authorizer.check(request("/healthz", **{HEADER: "forged"}), 0.1)

    assert HEADER not in dict(after.upstream_headers)
    # The header name is retired, not forgotten: a client's copy still never passes.
    assert HEADER in after.headers_to_remove
    assert HEADER in anonymous.headers_to_remove


async def test_renamed_identity_header_is_still_removed_after_a_reload(
    seed_yaml: str, keys_dir: Path, authorizer: Authorizer
) -> None:
    renamed = settings(seed_yaml.replace("x-auth-roles", "x-user-roles"), keys_dir, None)

    authorizer.reconfigure(renamed)
    decision = await authorizer.check(
        request("/api/forms", "bob", **{"x-auth-roles": "admin"}), 0.1
    )

    assert dict(decision.upstream_headers)["x-user-roles"] == "creator"
    assert "x-auth-roles" in decision.headers_to_remove
    assert "x-user-roles" not in decision.headers_to_remove
