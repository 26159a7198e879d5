"""Properties that hold for any input: no exception escapes, and no error ends in an allow."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from extauthz_server.config.model import Config
from extauthz_server.core.authorizer import Authorizer, AuthorizerSettings
from extauthz_server.core.decision import Decision, Reason
from extauthz_server.core.identity import Identity, Inactive
from extauthz_server.core.paths import PathError, normalise_path
from extauthz_server.core.request import AuthRequest
from extauthz_server.core.tokens import AccessToken, TokenProblem, extract_token, token_digest
from extauthz_server.errors import ProviderError, ProviderRejectedClient, ProviderUnavailable

SCHEMES = st.sampled_from(["Bearer ", "bearer ", "BEARER", "Basic ", "Bearer  ", " ", ""])
TOKEN68 = st.text(alphabet="ABCabcxyz0189-._~+/=, \t\"'é\r\n", min_size=0, max_size=40)
AUTHORIZATION = st.none() | st.text() | st.builds(str.__add__, SCHEMES, TOKEN68 | st.text())

PATH_PIECES = st.sampled_from(
    [
        "",
        ".",
        "..",
        "...",
        "%2e",
        "%2E%2e",
        ".%2e",
        "a",
        "admin",
        "healthz",
        "%2F",
        "%2f",
        "/",
        "//",
        "%",
        "%zz",
        "%4",
        "\\",
        "%5c",
        "?",
        "#",
        "?x=/..",
        "%00",
        "\x01",
        "é",
        "%c3%a9",
        "%ff",
        "%25",
        "%252e",
        "%3F",
        "%23",
        " ",
        "%20",
    ]
)
PATHS = (
    st.lists(PATH_PIECES, max_size=8).map(lambda parts: "/" + "/".join(parts))
    | st.lists(PATH_PIECES, max_size=8).map("".join)
    | st.text()
)


@given(AUTHORIZATION, st.integers(min_value=1, max_value=64))
def test_any_authorization_header_gives_token_or_problem(
    header: str | None, max_bytes: int
) -> None:
    result = extract_token(header, max_bytes)
    assert isinstance(result, AccessToken | TokenProblem)
    if isinstance(result, AccessToken):
        assert 0 < len(result.value) <= max_bytes
        assert result.value.isascii()
        assert not any(ch in result.value for ch in " \t\r\n,\"'")
        assert len(token_digest(result.value)) == 32


@given(PATHS)
def test_normalised_path_is_canonical_or_path_error(raw: str) -> None:
    try:
        path = normalise_path(raw)
    except PathError:
        return
    assert path.startswith("/")
    assert "//" not in path
    segments = path.split("/")[1:]
    assert "." not in segments
    assert ".." not in segments
    assert not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path)
    assert "\\" not in path
    if not any(ch in path for ch in "%?#"):
        # Without characters that a second pass would read differently, it is a fixed point.
        assert normalise_path(path) == path


@dataclass
class ScriptedSource:
    """Gives one scripted outcome for every token."""

    outcome: Identity | Inactive | ProviderError

    async def resolve(
        self, token: str, timeout_s: float, provider: str | None = None
    ) -> Identity | Inactive:
        if isinstance(self.outcome, ProviderError):
            raise self.outcome
        return self.outcome


ADMIN = Identity(
    subject="admin-id",
    username="root",
    email=None,
    client_id="web",
    scopes=frozenset({"openid"}),
    provider_roles=frozenset({"admin", "manager", "org manager"}),
    expires_at=None,
)
OUTCOMES = st.sampled_from(
    [
        ADMIN,
        Inactive.NOT_ACTIVE,
        Inactive.EXPIRED,
        ProviderUnavailable("down"),
        ProviderRejectedClient("refused"),
    ]
)
METHODS = st.sampled_from(["GET", "POST", "PATCH", "HEAD", "get", ""]) | st.text(max_size=8)
HOSTS = st.sampled_from(["api.example.com", "API.example.com:443", "[::1]:80", ""]) | st.text(
    max_size=20
)
SMUGGLED = st.dictionaries(
    st.sampled_from(["x-auth-subject", "x-auth-roles", "x-auth-email", "cookie"]),
    st.text(max_size=10),
    max_size=3,
)


def check(config: Config, source: ScriptedSource, request: AuthRequest) -> Decision:
    settings_ = AuthorizerSettings(
        policy=config.policy,
        role_map=config.role_map,
        header_names=config.headers,
        realm=config.provider.realm,
        max_token_bytes=config.max_token_bytes,
    )
    return asyncio.run(Authorizer(settings_, source).check(request, 0.1))


@settings(max_examples=300, deadline=None)
@given(
    method=METHODS,
    host=HOSTS,
    path=PATHS,
    authorization=AUTHORIZATION,
    outcome=OUTCOMES,
    smuggled=SMUGGLED,
)
def test_check_always_decides_and_never_allows_on_provider_error(
    seed_config: Config,
    method: str,
    host: str,
    path: str,
    authorization: str | None,
    outcome: Identity | Inactive | ProviderError,
    smuggled: dict[str, str],
) -> None:
    headers = dict(smuggled)
    if authorization is not None:
        headers["authorization"] = authorization
    request = AuthRequest(method=method, host=host, path=path, headers=headers)

    decision = check(seed_config, ScriptedSource(outcome), request)

    assert isinstance(decision, Decision)
    assert decision.allowed is (decision.status == 200)
    if decision.allowed:
        # Every identity header is either set by us or removed: a client copy never survives.
        named = {name for name, _ in decision.upstream_headers} | set(decision.headers_to_remove)
        assert named >= set(seed_config.headers.identity_headers)
        if not isinstance(outcome, Identity):
            assert decision.reason is Reason.PUBLIC
            assert decision.route == "health"
            assert decision.upstream_headers == ()
    else:
        assert decision.upstream_headers == ()
        if isinstance(outcome, ProviderError) and decision.route not in (None, "health"):
            assert decision.status in (401, 503)
