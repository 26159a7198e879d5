"""Hostile input through the real gRPC adapter: the decision is the one on the canonical request.

Canonicalisation (what a request *means*, as README "Behaviour" and Envoy define it):
- path: percent-decoded, repeated slashes merged, dot segments removed, query and fragment
  dropped (paths.normalise_path); a path that cannot be read safely is a 400;
- host: lower-cased, port dropped; matching is case-sensitive on the path;
- Authorization: the scheme is case-insensitive and surrounding spaces do not count, so
  ` bearer  T ` means `Bearer T`; anything that is not exactly one bearer token68 is
  malformed (two values, control characters, non-ASCII, over `limits.max_token_bytes`);
- header names arrive lower-cased (Envoy's `headers` map); with `encode_raw_headers` the
  `header_map` entries are lower-cased and repeated ones joined with `,`;
- client-sent identity headers, other headers, and their number do not count.

Invariants: every request gets a Decision (never an exception); the decision equals the one
on the canonical request; an allow on a route that is not public needs an Identity from the
IdentitySource, and no identity header sent by the client survives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extauthz_server._proto.envoy.service.auth.v3 import external_auth_pb2
from extauthz_server.config.model import parse_config
from extauthz_server.core.decision import Reason
from extauthz_server.core.paths import PathError, normalise_path
from tests.hardening.adapter import (
    ALL_TOKENS,
    IDENTITIES,
    IDENTITY_HEADERS,
    Harness,
    assert_safe,
    check_request,
    comparable,
)

MB_TOKEN = "A" * 1_000_000


@dataclass(frozen=True)
class Case:
    """A hostile request, its canonical form (None: judged on its own) and the status."""

    hostile: Callable[[], external_auth_pb2.CheckRequest]
    canonical: Callable[[], external_auth_pb2.CheckRequest] | None
    status: int
    token_reaches_provider: bool = True


def get(path: str, token: str | None = None, **extra: str) -> external_auth_pb2.CheckRequest:
    headers = dict(extra)
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return check_request(path, headers=headers)


def auth(path: str, value: str) -> Callable[[], external_auth_pb2.CheckRequest]:
    return lambda: check_request(path, headers={"authorization": value})


def raw(
    path: str, *entries: tuple[str, str | bytes]
) -> Callable[[], external_auth_pb2.CheckRequest]:
    return lambda: check_request(path, header_map=list(entries))


def canon(path: str, token: str | None = None) -> Callable[[], external_auth_pb2.CheckRequest]:
    return lambda: get(path, token)


SMUGGLED_IDENTITY = {
    "x-auth-subject": "root",
    "x-auth-username": "root",
    "x-auth-email": "root@example.com",
    "x-auth-roles": "admin,platformAdmin",
    "x-auth-client": "admin-cli",
}
SMUGGLED_VARIANTS = [
    (name, value)
    for base, value in SMUGGLED_IDENTITY.items()
    for name in (base, base.upper(), base.title(), base.replace("x-auth", "X-Auth"))
] + [("x-auth-roles", "admin"), ("x-auth-roles", "platformAdmin"), ("X-AUTH-SUBJECT", "sub-admin")]

CORPUS: dict[str, Case] = {
    # --- the Authorization header -------------------------------------------------------
    "scheme-lowercase": Case(auth("/admin", "bearer tok-admin"), canon("/admin", "tok-admin"), 200),
    "scheme-uppercase": Case(auth("/admin", "BEARER tok-admin"), canon("/admin", "tok-admin"), 200),
    "two-spaces": Case(auth("/admin", "Bearer  tok-admin"), canon("/admin", "tok-admin"), 200),
    "surrounding-spaces": Case(
        auth("/admin", "  Bearer tok-admin \t"), canon("/admin", "tok-admin"), 200
    ),
    "tab-separator": Case(auth("/admin", "Bearer\ttok-admin"), None, 401, False),
    "crlf-separator": Case(auth("/admin", "Bearer\r\ntok-admin"), None, 401, False),
    "two-values-joined": Case(
        auth("/admin", "Bearer tok-admin,Bearer tok-creator"), None, 401, False
    ),
    "two-values-joined-space": Case(
        auth("/admin", "Bearer tok-inactive, Bearer tok-admin"), None, 401, False
    ),
    "same-token-twice": Case(
        auth("/admin", "Bearer tok-admin, Bearer tok-admin"), None, 401, False
    ),
    "basic-then-bearer": Case(auth("/admin", "Basic YTpi, Bearer tok-admin"), None, 401, False),
    "bearer-then-basic": Case(auth("/admin", "Bearer tok-admin, Basic YTpi"), None, 401, False),
    "header-map-duplicated": Case(
        raw("/admin", ("authorization", "Bearer tok-admin"), ("authorization", "Bearer tok-admin")),
        None,
        401,
        False,
    ),
    "header-map-case-duplicated": Case(
        raw(
            "/admin", ("Authorization", "Bearer tok-creator"), ("AUTHORIZATION", "Bearer tok-admin")
        ),
        None,
        401,
        False,
    ),
    "header-map-mixed-case-key": Case(
        raw("/admin", ("AuThOrIzAtIoN", "Bearer tok-admin")), canon("/admin", "tok-admin"), 200
    ),
    # Envoy's `headers` map is always lower-case: a capitalised key is some other header.
    "headers-map-capitalised-key": Case(
        lambda: check_request("/admin", headers={"Authorization": "Bearer tok-admin"}),
        canon("/admin"),
        401,
        False,
    ),
    "nul-in-token": Case(auth("/admin", "Bearer tok-admin\x00"), None, 401, False),
    "soh-in-token": Case(auth("/admin", "Bearer tok-ad\x01min"), None, 401, False),
    "del-in-token": Case(auth("/admin", "Bearer tok-admin\x7f"), None, 401, False),
    "crlf-header-injection": Case(
        auth("/admin", "Bearer tok-creator\r\nx-auth-roles: admin"), None, 401, False
    ),
    "non-ascii-lookalike": Case(auth("/admin", "Bearer tok-adm\u0456n"), None, 401, False),
    "raw-value-not-utf8": Case(
        raw("/admin", ("authorization", b"Bearer tok-admin\xff")), None, 401, False
    ),
    "raw-value-not-utf8-prefix": Case(
        raw("/admin", ("authorization", b"\xc0Bearer tok-admin")), None, 401, False
    ),
    "raw-value-utf8-ok": Case(
        raw("/admin", ("authorization", b"Bearer tok-admin")), canon("/admin", "tok-admin"), 200
    ),
    "other-header-not-utf8": Case(
        raw("/admin", ("authorization", "Bearer tok-admin"), ("x-junk", b"\xff\xfe\x00\x80")),
        canon("/admin", "tok-admin"),
        200,
    ),
    "token-1mb": Case(auth("/admin", "Bearer " + MB_TOKEN), None, 401, False),
    "token-1mb-public": Case(auth("/public", "Bearer " + MB_TOKEN), canon("/public"), 200, False),
    "token-at-limit": Case(auth("/admin", "Bearer " + "A" * 8192), None, 401),
    "token-over-limit": Case(auth("/admin", "Bearer " + "A" * 8193), None, 401, False),
    "token-padding": Case(auth("/admin", "Bearer tok-admin="), None, 401),
    "token-in-query-only": Case(
        lambda: get("/admin?access_token=tok-admin"), canon("/admin"), 401, False
    ),
    "token-inactive": Case(lambda: get("/admin", "tok-inactive"), None, 401),
    "token-expired-public": Case(lambda: get("/public", "tok-expired"), canon("/public"), 200),
    "provider-down": Case(lambda: get("/admin", "tok-down"), None, 503),
    "provider-down-public": Case(lambda: get("/public/x", "tok-down"), canon("/public/x"), 200),
    "provider-refuses-us": Case(lambda: get("/api/forms", "tok-refused"), None, 503),
    "evil-identity-strings": Case(lambda: get("/api/forms", "tok-evil"), None, 200),
    # --- paths ------------------------------------------------------------------------------
    "dotdot-into-public": Case(lambda: get("/admin/../public"), canon("/public"), 200),
    "dotdot-into-admin": Case(lambda: get("/public/../admin"), canon("/admin"), 401, False),
    "dotdot-into-admin-creator": Case(
        lambda: get("/public/../admin", "tok-creator"), canon("/admin", "tok-creator"), 403
    ),
    "encoded-letter": Case(
        lambda: get("/%61dmin", "tok-creator"), canon("/admin", "tok-creator"), 403
    ),
    "all-encoded": Case(
        lambda: get("/%61%64%6D%69%6e", "tok-creator"), canon("/admin", "tok-creator"), 403
    ),
    "double-slash": Case(
        lambda: get("//admin", "tok-creator"), canon("/admin", "tok-creator"), 403
    ),
    "many-slashes": Case(
        lambda: get("/////admin///x", "tok-creator"), canon("/admin/x", "tok-creator"), 403
    ),
    "encoded-dots": Case(
        lambda: get("/public/%2e%2e/admin", "tok-creator"), canon("/admin", "tok-creator"), 403
    ),
    "encoded-dots-upper": Case(
        lambda: get("/public/%2E%2E/admin", "tok-creator"), canon("/admin", "tok-creator"), 403
    ),
    "encoded-slash": Case(
        lambda: get("/public%2F..%2Fadmin", "tok-creator"), canon("/admin", "tok-creator"), 403
    ),
    "dot-segment": Case(
        lambda: get("/./admin", "tok-creator"), canon("/admin", "tok-creator"), 403
    ),
    "trailing-dot-segment": Case(
        lambda: get("/admin/.", "tok-creator"), canon("/admin/", "tok-creator"), 403
    ),
    "trailing-slash": Case(
        lambda: get("/admin/", "tok-creator"), canon("/admin", "tok-creator"), 403
    ),
    "dotdot-above-root": Case(
        lambda: get("/../../admin", "tok-creator"), canon("/admin", "tok-creator"), 403
    ),
    "query-dotdot": Case(lambda: get("/public?/../admin"), canon("/public"), 200),
    "fragment-dotdot": Case(lambda: get("/public#/../admin"), canon("/public"), 200),
    "admin-query-public": Case(lambda: get("/admin?/../public"), canon("/admin"), 401, False),
    "admin-fragment-public": Case(lambda: get("/admin#/../public"), canon("/admin"), 401, False),
    # An encoded `?` or `#` reads as a path under `/` here and as `/admin` to an upstream that
    # decodes twice: refused, never guessed.
    "encoded-question-mark": Case(lambda: get("/admin%3F/../public"), None, 400, False),
    "encoded-hash": Case(lambda: get("/admin%23/../public"), None, 400, False),
    "encoded-question-mark-lower": Case(
        lambda: get("/admin%3fx=/api/forms", "tok-creator"), None, 400, False
    ),
    "query-with-hash-first": Case(lambda: get("/public#x?/../admin"), canon("/public"), 200),
    # The path is matched case-sensitively and `;` or a trailing dot is part of a segment, as
    # Envoy routes it: `/ADMIN`, `/admin.` are other resources (the default route).
    "uppercase-path": Case(lambda: get("/ADMIN", "tok-creator"), None, 200),
    "uppercase-path-no-token": Case(lambda: get("/ADMIN"), None, 401, False),
    "trailing-dot-name": Case(lambda: get("/admin.", "tok-creator"), None, 200),
    "encoded-trailing-dot-name": Case(
        lambda: get("/admin%2e", "tok-creator"), canon("/admin.", "tok-creator"), 200
    ),
    "nul": Case(lambda: get("/admin%00", "tok-admin"), None, 400, False),
    "raw-nul": Case(lambda: get("/admin\x00/x", "tok-admin"), None, 400, False),
    "backslash": Case(lambda: get("/public\\..\\admin"), None, 400, False),
    "encoded-backslash": Case(lambda: get("/public/..%5cadmin"), None, 400, False),
    "bad-escape": Case(lambda: get("/public/%zz"), None, 400, False),
    "truncated-escape": Case(lambda: get("/public/%4"), None, 400, False),
    "overlong-utf8-dots": Case(lambda: get("/%c0%ae%c0%ae/admin"), None, 400, False),
    "invalid-utf8": Case(lambda: get("/public/%ff"), None, 400, False),
    "no-leading-slash": Case(lambda: get("admin", "tok-admin"), None, 400, False),
    "asterisk": Case(lambda: get("*", "tok-admin"), None, 400, False),
    "absolute-form": Case(lambda: get("http://app.example/admin", "tok-admin"), None, 400, False),
    "empty-path": Case(lambda: get("", "tok-admin"), None, 400, False),
    "long-path": Case(lambda: get("/public/" + "a/" * 50_000), canon("/public/x"), 200),
    "long-dotdot-chain": Case(
        lambda: get("/admin/" + "../" * 10_000 + "public"), canon("/public"), 200
    ),
    "patch-admin-no-fallthrough": Case(
        lambda: check_request(
            "/admin", method="PATCH", headers={"authorization": "Bearer tok-noroles"}
        ),
        None,
        403,
        False,
    ),
    # --- identity headers sent by the client ---------------------------------------------
    "smuggled-on-public": Case(
        lambda: check_request("/public", headers=SMUGGLED_IDENTITY), canon("/public"), 200
    ),
    "smuggled-on-forms": Case(
        lambda: get("/api/forms", "tok-creator", **SMUGGLED_IDENTITY),
        canon("/api/forms", "tok-creator"),
        200,
    ),
    "smuggled-no-token": Case(
        lambda: check_request("/admin", headers=SMUGGLED_IDENTITY), canon("/admin"), 401, False
    ),
    "smuggled-every-case-header-map": Case(
        raw("/api/forms", ("authorization", "Bearer tok-creator"), *SMUGGLED_VARIANTS),
        canon("/api/forms", "tok-creator"),
        200,
    ),
    "smuggled-every-case-public": Case(
        raw("/public", *SMUGGLED_VARIANTS), canon("/public"), 200, False
    ),
    "smuggled-multi-value-admin-route": Case(
        raw("/admin", ("authorization", "Bearer tok-creator"), *SMUGGLED_VARIANTS),
        canon("/admin", "tok-creator"),
        403,
    ),
    # --- size -------------------------------------------------------------------------------
    "oversized-headers-map": Case(
        lambda: get(
            "/api/forms", "tok-creator", **{f"x-junk-{i}": "v" * 1024 for i in range(5000)}
        ),
        canon("/api/forms", "tok-creator"),
        200,
    ),
    "oversized-header-map": Case(
        raw(
            "/api/forms",
            *[(f"X-Junk-{i % 50}", b"\xff" * 512) for i in range(5000)],
            ("authorization", "Bearer tok-creator"),
        ),
        canon("/api/forms", "tok-creator"),
        200,
    ),
}


@pytest.mark.parametrize("case", CORPUS.values(), ids=CORPUS.keys())
def test_hostile_request_is_decided_as_its_canonical_form(case: Case) -> None:
    harness = Harness.create()
    decision = harness.decide(case.hostile())

    assert_safe(decision, harness.source)
    assert decision.status == case.status
    if not case.token_reaches_provider:
        assert harness.source.asked == []
    if case.canonical is not None:
        assert comparable(decision) == comparable(Harness.create().decide(case.canonical()))


def test_evil_identity_strings_never_reach_a_header() -> None:
    harness = Harness.create()
    decision = harness.decide(get("/api/forms", "tok-evil"))

    headers = dict(decision.upstream_headers)
    assert "x-auth-subject" not in headers
    assert "x-auth-username" not in headers
    assert headers["x-auth-roles"] == "creator"
    assert {"x-auth-subject", "x-auth-username"} <= set(decision.headers_to_remove)


# --- Path parameters and host spellings ----------------------------------------------------
# Tomcat, Jetty and Spring read `;…` as a path parameter of its segment, so `..;` is a dot
# segment and `/admin;x` is `/admin` to them; Envoy forwards both unchanged, so the
# authorizer judges them as those upstreams serve them.


def test_path_parameter_dot_segment_does_not_open_a_public_route() -> None:
    harness = Harness.create()
    decision = harness.decide(get("/public/..;/admin"))

    assert not decision.allowed


def test_path_parameter_does_not_escape_a_role_route() -> None:
    harness = Harness.create()
    decision = harness.decide(get("/admin;x", "tok-creator"))

    assert not decision.allowed


HOST_SCOPED_CONFIG = """\
provider:
  issuer: "http://127.0.0.1:9/realms/demo"
  client_id: ext-authz
  client_secret: s3cret
roles:
  mapping: {admin: [admin], manager: [creator]}
routes:
  - {name: admin-host, host: admin.example, path_prefix: /, any_of: [admin]}
  - {name: public, path_prefix: /, public: true}
"""

HOST_CASES = {
    "exact": ("admin.example", 401),
    "uppercase": ("ADMIN.Example", 401),
    "port": ("admin.example:8443", 401),
    "spaces": (" admin.example ", 401),
    "trailing-dot": ("admin.example.", 401),
    "trailing-dot-port": ("admin.example.:80", 401),
    "empty-port": ("admin.example:", 401),
}


@pytest.mark.parametrize(
    ("host", "status"),
    [pytest.param(*value, id=key) for key, value in HOST_CASES.items()],
)
def test_host_variants_reach_the_host_scoped_route(host: str, status: int) -> None:
    harness = Harness.create(parse_config(HOST_SCOPED_CONFIG, {}))
    decision = harness.decide(check_request("/x", host=host))

    assert decision.status == status
    assert decision.route == "admin-host"


# --- Metamorphic property: meaning-preserving rewrites keep the decision -------------------

CANONICAL_PATHS = [
    "/public",
    "/public/x",
    "/admin",
    "/admin/x",
    "/api/forms",
    "/api/forms/1",
    "/other/y",
    "/healthz",
]
METHODS = ["GET", "POST", "PATCH", "DELETE"]
TOKENS = st.none() | st.sampled_from(ALL_TOKENS) | st.just("tok-unknown")


@st.composite
def rewritten_path(draw: st.DrawFn, path: str) -> str:
    """`path` rewritten with encodings, dot segments, extra slashes, query and fragment."""
    out: list[str] = []
    for segment in path.split("/")[1:]:
        if draw(st.booleans()):
            out.append(
                draw(st.sampled_from([".", "%2e", "%2E", "zz/..", "zz/%2e%2e", "q/.%2E", ""]))
            )
        chars = [
            f"%{ord(ch):02{draw(st.sampled_from('xX'))}}" if draw(st.booleans()) else ch
            for ch in segment
        ]
        out.append("".join(chars))
    joined = "/" + "/".join(out)
    if draw(st.booleans()):
        joined = joined.replace("/", draw(st.sampled_from(["//", "/%2F", "/./"])), 1)
        if not joined.startswith("/"):
            joined = "/" + joined
    if draw(st.booleans()):
        joined += "?" + draw(st.text(alphabet="/.%#?&=a2Fe", max_size=12))
    if draw(st.booleans()):
        joined += "#" + draw(st.text(alphabet="/.%#?a", max_size=8))
    return joined


@st.composite
def authorization_variant(draw: st.DrawFn, token: str) -> str:
    scheme = draw(st.sampled_from(["Bearer", "bearer", "BEARER", "bEaReR"]))
    lead = draw(st.sampled_from(["", " ", "  ", "\t", " \t"]))
    gap = draw(st.sampled_from([" ", "  ", "   "]))
    tail = draw(st.sampled_from(["", " ", "\t", " \t "]))
    return f"{lead}{scheme}{gap}{token}{tail}"


JUNK_NAMES = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz-_0123456789", min_size=1, max_size=12
).filter(lambda name: name != "authorization" and not name.startswith((":", "x-auth-")))
JUNK_VALUES = st.text(max_size=30) | st.binary(max_size=30)


@dataclass(frozen=True)
class Pair:
    hostile: external_auth_pb2.CheckRequest
    canonical: external_auth_pb2.CheckRequest


@st.composite
def hostile_and_canonical(draw: st.DrawFn) -> Pair:
    path = draw(st.sampled_from(CANONICAL_PATHS))
    method = draw(st.sampled_from(METHODS))
    token = draw(TOKENS)
    hostile_path = draw(rewritten_path(path))
    host = draw(
        st.sampled_from(["app.example", "APP.example", "app.example:8080", "App.Example:1"])
    )
    smuggled = draw(st.lists(st.sampled_from(SMUGGLED_VARIANTS), max_size=6))
    junk = draw(st.lists(st.tuples(JUNK_NAMES, JUNK_VALUES), max_size=6))
    canonical_headers = {"authorization": f"Bearer {token}"} if token else {}
    canonical = check_request(path, method=method, headers=canonical_headers)
    entries: list[tuple[str, str | bytes]] = []
    if token:
        entries.append(("authorization", draw(authorization_variant(token))))
    entries += smuggled
    entries += junk
    entries = draw(st.permutations(entries))
    if draw(st.booleans()):
        # encode_raw_headers: any case, repeats, raw bytes.
        return Pair(
            check_request(hostile_path, method=method, host=host, header_map=entries), canonical
        )
    joined: dict[str, str] = {}
    for name, value in entries:
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        name = name.lower()
        joined[name] = f"{joined[name]},{text}" if name in joined else text
    return Pair(check_request(hostile_path, method=method, host=host, headers=joined), canonical)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_and_canonical())
def test_meaning_preserving_rewrites_keep_the_decision(pair: Pair) -> None:
    harness = Harness.create()
    decision = harness.decide(pair.hostile)

    assert_safe(decision, harness.source)
    assert comparable(decision) == comparable(Harness.create().decide(pair.canonical))


# --- Arbitrary garbage: safety only ----------------------------------------------------------

ANY_TEXT = st.text(max_size=60)
AUTH_GARBAGE = (
    st.none()
    | ANY_TEXT
    | st.builds(
        "{}{}{}".format,
        st.sampled_from(["Bearer ", "bearer", "Bearer  ", "Basic ", ""]),
        st.sampled_from(ALL_TOKENS) | ANY_TEXT,
        st.sampled_from(["", ",Bearer tok-admin", "\x00", "\r\n", " x", "=", ", "]) | ANY_TEXT,
    )
)
PATH_GARBAGE = ANY_TEXT | st.builds(
    "{}{}{}".format,
    st.sampled_from([*CANONICAL_PATHS, "/", "//", "/..", "/public/..", "/admin;", "/public/..;"]),
    st.sampled_from(["", "/..", "/%2e%2e", ";", "%", "%00", "\\", "?", "#", "%3f", "/./", "//"]),
    ANY_TEXT,
)


@settings(max_examples=400, deadline=None)
@given(
    path=PATH_GARBAGE,
    method=st.sampled_from(METHODS) | st.text(max_size=6),
    host=st.text(max_size=20),
    authorization=AUTH_GARBAGE,
    extra=st.lists(
        st.tuples(
            st.sampled_from([*IDENTITY_HEADERS, "Authorization", "X-Auth-Roles"]) | ANY_TEXT,
            JUNK_VALUES,
        ),
        max_size=5,
    ),
    raw_headers=st.booleans(),
)
def test_any_request_is_decided_safely(
    path: str,
    method: str,
    host: str,
    authorization: str | None,
    extra: list[tuple[str, str | bytes]],
    raw_headers: bool,
) -> None:
    entries: list[tuple[str, str | bytes]] = list(extra)
    if authorization is not None:
        entries.append(("authorization", authorization))
    if raw_headers:
        request = check_request(path, method=method, host=host, header_map=entries)
    else:
        headers = {
            name: value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            for name, value in entries
        }
        request = check_request(path, method=method, host=host, headers=headers)
    harness = Harness.create()

    decision = harness.decide(request)

    assert_safe(decision, harness.source)
    try:
        normalise_path(path)
    except PathError:
        assert decision.reason is Reason.BAD_REQUEST
    # The provider is only ever asked about one whole, well-formed token.
    for token in harness.source.asked:
        assert token.isascii()
        assert token.isprintable()
        assert " " not in token
        assert "," not in token
        assert len(token) <= 8192
    # Only a token the source vouched for yields its subject.
    subject = dict(decision.upstream_headers).get("x-auth-subject")
    if subject is not None:
        assert subject in {IDENTITIES[t].subject for t in harness.source.asked}
