"""Bearer-token extraction from the Authorization header (RFC 6750 §2.1) and token digests."""

from __future__ import annotations

import hashlib

import pytest

from extauthz_server.core.tokens import (
    DEFAULT_MAX_TOKEN_BYTES,
    AccessToken,
    TokenProblem,
    extract_token,
    log_id,
    token_digest,
)

JWT_LIKE = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"

# (header value, expected token or problem)
CASES: list[tuple[str | None, AccessToken | TokenProblem]] = [
    (None, TokenProblem.MISSING),
    ("", TokenProblem.MISSING),
    ("   \t ", TokenProblem.MISSING),
    ("Basic YWxpY2U6c2VjcmV0", TokenProblem.MISSING),
    ("Digest username=alice", TokenProblem.MISSING),
    ("Bearer " + JWT_LIKE, AccessToken(JWT_LIKE)),
    ("bearer abc", AccessToken("abc")),
    ("BEARER abc", AccessToken("abc")),
    ("bEaReR abc", AccessToken("abc")),
    ("  Bearer    abc   ", AccessToken("abc")),
    ("\tBearer abc\t", AccessToken("abc")),
    ("Bearer", TokenProblem.MALFORMED),
    ("Bearer ", TokenProblem.MALFORMED),
    ("Bearer     ", TokenProblem.MALFORMED),
    ("Bearer a-b.c_d~e+f/g", AccessToken("a-b.c_d~e+f/g")),
    ("Bearer abc=", AccessToken("abc=")),
    ("Bearer abc==", AccessToken("abc==")),
    ("Bearer ab=c", TokenProblem.MALFORMED),
    ("Bearer =abc", TokenProblem.MALFORMED),
    ("Bearer ===", TokenProblem.MALFORMED),
    ("Bearer a,b", TokenProblem.MALFORMED),
    ('Bearer "abc"', TokenProblem.MALFORMED),
    ("Bearer a'b", TokenProblem.MALFORMED),
    ("Bearer abc def", TokenProblem.MALFORMED),
    ("Bearer abc\tdef", TokenProblem.MALFORMED),
    ("Bearer abc\n", TokenProblem.MALFORMED),
    ("Bearer tök", TokenProblem.MALFORMED),
    ("Bearer a;b", TokenProblem.MALFORMED),
    ("Bearer\tabc", TokenProblem.MALFORMED),
    ("Bearer abc, Bearer def", TokenProblem.MALFORMED),
    ("Bearer abc,Bearer def", TokenProblem.MALFORMED),
    ("Bearer abc, Basic YWxpY2U6c2VjcmV0", TokenProblem.MALFORMED),
    ("Bearerabc", TokenProblem.MISSING),
    ("Bearer: abc", TokenProblem.MALFORMED),
]
IDS = [
    "no-header",
    "empty-header",
    "whitespace-only",
    "basic-scheme-is-missing",
    "digest-scheme-is-missing",
    "jwt",
    "lower-case-scheme",
    "upper-case-scheme",
    "mixed-case-scheme",
    "surrounding-and-separating-spaces",
    "surrounding-tabs",
    "scheme-without-token",
    "scheme-and-space-only",
    "scheme-and-spaces-only",
    "every-token68-punctuation",
    "one-padding",
    "two-padding",
    "padding-in-middle",
    "padding-only-at-start",
    "padding-only",
    "comma-inside",
    "quoted-token",
    "single-quote-inside",
    "space-inside",
    "tab-inside",
    "trailing-newline",
    "non-ascii",
    "semicolon-inside",
    "tab-after-scheme",
    "two-bearer-headers-joined",
    "two-bearer-headers-joined-no-space",
    "bearer-then-basic-joined",
    "scheme-run-into-token-is-another-scheme",
    "scheme-with-colon",
]


@pytest.mark.parametrize(("header", "expected"), CASES, ids=IDS)
def test_authorization_header_gives_token_or_problem(
    header: str | None, expected: AccessToken | TokenProblem
) -> None:
    assert extract_token(header) == expected


def test_basic_then_bearer_joined_headers_are_malformed() -> None:
    assert extract_token("Basic YWxpY2U6c2VjcmV0, Bearer abc") is TokenProblem.MALFORMED


@pytest.mark.parametrize(
    ("length", "expected_ok"),
    [(1, True), (99, True), (100, True), (101, False), (1000, False)],
    ids=["one", "below-max", "exactly-max", "max-plus-one", "far-above-max"],
)
def test_token_length_limit_is_inclusive(length: int, expected_ok: bool) -> None:
    token = "a" * length
    result = extract_token(f"Bearer {token}", max_bytes=100)
    assert result == (AccessToken(token) if expected_ok else TokenProblem.MALFORMED)


def test_default_limit_accepts_exactly_max_and_refuses_one_more() -> None:
    at_limit = "x" * DEFAULT_MAX_TOKEN_BYTES
    assert extract_token(f"Bearer {at_limit}") == AccessToken(at_limit)
    assert extract_token(f"Bearer {at_limit}x") is TokenProblem.MALFORMED


def test_length_limit_counts_the_token_not_the_padding_spaces() -> None:
    assert extract_token("Bearer     " + "a" * 10 + "     ", max_bytes=10) == AccessToken("a" * 10)


def test_token_digest_is_sha256_of_the_token() -> None:
    assert token_digest(JWT_LIKE) == hashlib.sha256(JWT_LIKE.encode("ascii")).digest()
    assert len(token_digest(JWT_LIKE)) == 32


def test_different_tokens_have_different_digests() -> None:
    assert token_digest("abc") != token_digest("abd")


@pytest.mark.parametrize(
    "token",
    ["abc", JWT_LIKE, "0123456789abcdef0123456789abcdef", "a" * 12],
    ids=["short", "jwt", "hex-looking", "twelve-chars"],
)
def test_log_id_is_twelve_hex_chars_that_do_not_reveal_the_token(token: str) -> None:
    reference = log_id(token_digest(token))
    assert len(reference) == 12
    assert all(ch in "0123456789abcdef" for ch in reference)
    assert reference == hashlib.sha256(token.encode()).hexdigest()[:12]
    assert reference not in token
    assert token not in reference
