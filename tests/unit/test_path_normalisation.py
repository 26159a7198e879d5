"""Request-path normalisation: what route policy matches is what the upstream will serve."""

from __future__ import annotations

import pytest

from extauthz_server.core.paths import PathError, normalise_path, split_query

NORMALISED = [
    ("/", "/"),
    ("/admin", "/admin"),
    ("/admin/", "/admin/"),
    ("/public/../admin", "/admin"),
    ("/public/../../admin", "/admin"),
    ("/a/./b", "/a/b"),
    ("/a/b/./", "/a/b/"),
    ("/a/b/.", "/a/b/"),
    ("/a/b/..", "/a/"),
    ("/a/..", "/"),
    ("/..", "/"),
    ("/../..", "/"),
    ("/.", "/"),
    ("/../admin", "/admin"),
    ("/a/.../b", "/a/.../b"),
    ("/a/..b/c", "/a/..b/c"),
    ("/a/.b", "/a/.b"),
    ("/public/%2e%2e/admin", "/admin"),
    ("/public/%2E%2E/admin", "/admin"),
    ("/public/.%2e/admin", "/admin"),
    ("/a/%2e/b", "/a/b"),
    ("/public%2F..%2Fadmin", "/admin"),
    ("/a%2fb", "/a/b"),
    ("/a%2F%2Fb", "/a/b"),
    ("//admin", "/admin"),
    ("///admin//x", "/admin/x"),
    ("/public//../admin", "/admin"),
    ("/admin?role=admin", "/admin"),
    ("/admin?next=/../x", "/admin"),
    ("/admin#frag", "/admin"),
    ("/admin#frag?x=1", "/admin"),
    ("/public/..?x=/admin", "/"),
    ("/caf%C3%A9", "/café"),
    ("/café", "/café"),
    ("/a%20b", "/a b"),
    ("/%252e%252e/admin", "/%2e%2e/admin"),
]
NORMALISED_IDS = [
    "root",
    "plain",
    "trailing-slash-kept",
    "dot-dot-climbs-out-of-public",
    "dot-dot-beyond-root-stays-at-root",
    "single-dot-removed",
    "single-dot-at-end-keeps-slash",
    "bare-single-dot-at-end-keeps-slash",
    "dot-dot-at-end-keeps-slash",
    "dot-dot-back-to-root",
    "dot-dot-at-root",
    "dot-dot-twice-at-root",
    "single-dot-at-root",
    "leading-dot-dot",
    "three-dots-is-a-name",
    "dot-dot-prefix-is-a-name",
    "dotfile-is-a-name",
    "percent-encoded-dot-dot",
    "percent-encoded-dot-dot-upper-case",
    "half-encoded-dot-dot",
    "percent-encoded-single-dot",
    "encoded-slashes-are-separators",
    "encoded-slash-lower-case",
    "encoded-double-slash-merged",
    "double-slash-at-start",
    "many-slashes",
    "double-slash-before-dot-dot",
    "query-dropped",
    "dot-dot-in-query-ignored",
    "fragment-dropped",
    "fragment-before-question-mark-dropped",
    "query-after-dot-dot",
    "utf8-escape-decoded",
    "raw-non-ascii-kept",
    "encoded-space-decoded",
    "decoded-once-only",
]


@pytest.mark.parametrize(("raw", "expected"), NORMALISED, ids=NORMALISED_IDS)
def test_path_is_normalised(raw: str, expected: str) -> None:
    assert normalise_path(raw) == expected


REFUSED = [
    "/a%zz",
    "/a%4",
    "/a%",
    "/a%%41",
    "/a%g0",
    "/a%00",
    "/a%00/../b",
    "/a\x00b",
    "/a%01",
    "/a%0a",
    "/a%0D%0Ab",
    "/a\nb",
    "/a\tb",
    "/a%7f",
    "/a\\b",
    "/a%5cb",
    "/a%5C..%5Cadmin",
    "/a%ff",
    "/a%c3%28",
    "/a%c3",
    "/a%ed%a0%80",
    "*",
    "http://x/",
    "https://example.com/admin",
    "admin",
    "",
    "?x=/admin",
    "%2fadmin",
    "/admin%3Fx=/api/forms",
    "/admin%3fx=/api/forms",
    "/admin%23/../public",
]
REFUSED_IDS = [
    "invalid-hex-escape",
    "truncated-escape",
    "lone-percent-at-end",
    "double-percent",
    "half-hex-escape",
    "encoded-nul",
    "encoded-nul-before-dot-dot",
    "raw-nul",
    "encoded-control-char",
    "encoded-line-feed",
    "encoded-crlf",
    "raw-line-feed",
    "raw-tab",
    "encoded-del",
    "raw-backslash",
    "encoded-backslash",
    "encoded-backslash-traversal",
    "invalid-utf8-byte",
    "invalid-utf8-sequence",
    "truncated-utf8",
    "utf8-encoded-surrogate",
    "asterisk-form",
    "absolute-form",
    "absolute-form-https",
    "relative-path",
    "empty-path",
    "query-only",
    "encoded-leading-slash",
    "encoded-question-mark",
    "encoded-question-mark-lower",
    "encoded-hash",
]


@pytest.mark.parametrize("raw", REFUSED, ids=REFUSED_IDS)
def test_unsafe_path_raises_path_error(raw: str) -> None:
    with pytest.raises(PathError):
        normalise_path(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/a?b=1", ("/a", "b=1")),
        ("/a?b=1?c", ("/a", "b=1?c")),
        ("/a#f", ("/a", "")),
        ("/a", ("/a", "")),
    ],
    ids=["query", "second-question-mark-stays-in-query", "fragment-dropped", "no-query"],
)
def test_split_query_separates_path_and_query(raw: str, expected: tuple[str, str]) -> None:
    assert split_query(raw) == expected


def test_path_error_is_a_value_error() -> None:
    assert issubclass(PathError, ValueError)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/admin;x", "/admin"),
        ("/admin;jsessionid=1/users", "/admin/users"),
        ("/public/..;/admin", "/admin"),
        ("/public/%2e%2e;x/admin", "/admin"),
        ("/a;b=c;d/e", "/a/e"),
    ],
    ids=["param", "param-mid-path", "dot-dot-param", "encoded-dots-param", "several-params"],
)
def test_path_parameters_are_dropped_as_servlet_containers_do(raw: str, expected: str) -> None:
    assert normalise_path(raw) == expected
