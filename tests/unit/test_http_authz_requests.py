"""What the HTTP edge reads from a proxy's authorization request: the original method, host,
path and headers, per proxy convention."""

from __future__ import annotations

import pytest

from extauthz_server.edges.http_authz import MissingOriginal, NotAnAuthzPath, to_auth_request


def headers(*lines: tuple[str, str]) -> dict[str, str]:
    """As the HTTP server hands them over: names lower-cased (repeats are joined there)."""
    return {name.lower(): value for name, value in lines}


@pytest.mark.parametrize(
    ("raw_path", "original"),
    [
        ("/envoy/api/forms?draft=1", "/api/forms?draft=1"),
        ("/envoy", "/"),
        ("/envoy?x=1", "/?x=1"),
        ("/envoy//api", "//api"),
    ],
)
def test_envoy_mode_judges_what_follows_the_prefix(raw_path: str, original: str) -> None:
    request = to_auth_request("DELETE", raw_path, headers(("Host", "App.Example")), "10.0.0.1")

    assert (request.method, request.host, request.path) == ("DELETE", "App.Example", original)


def test_forward_auth_reads_the_x_forwarded_set_and_upper_cases_the_method() -> None:
    request = to_auth_request(
        "GET",
        "/forward-auth",
        headers(
            ("Host", "authz:9192"),
            ("X-Forwarded-Method", "post"),
            ("X-Forwarded-Host", "app.example"),
            ("X-Forwarded-Uri", "/api/forms/1?x=2"),
        ),
        "10.0.0.1",
    )

    assert (request.method, request.host, request.path) == (
        "POST",
        "app.example",
        "/api/forms/1?x=2",
    )


@pytest.mark.parametrize("raw_path", ["/", "/envoyx/a", "/forward-auth/a", "/forward-authx"])
def test_other_paths_are_not_authorization_requests(raw_path: str) -> None:
    with pytest.raises(NotAnAuthzPath):
        to_auth_request("GET", raw_path, headers(), "10.0.0.1")


def test_forward_auth_without_the_original_method_is_refused_not_guessed() -> None:
    with pytest.raises(MissingOriginal):
        to_auth_request("GET", "/forward-auth", headers(("X-Original-URI", "/admin")), "")


def test_the_client_address_is_the_last_hop_the_proxy_appended() -> None:
    request = to_auth_request(
        "GET",
        "/envoy/",
        headers(("X-Forwarded-For", "203.0.113.7, 198.51.100.2"), ("X-Request-Id", "r-1")),
        "10.0.0.1",
    )
    direct = to_auth_request("GET", "/envoy/", headers(), "10.0.0.1")

    assert (request.source_address, request.request_id) == ("198.51.100.2", "r-1")
    assert direct.source_address == "10.0.0.1"


@pytest.mark.parametrize(
    "spoofed",
    [
        # A client's X-Forwarded-Uri passed on by an nginx that sets only X-Original-URI.
        (
            ("X-Forwarded-Uri", "/healthz"),
            ("X-Original-URI", "/admin"),
            ("X-Original-Method", "GET"),
        ),
        # A client's X-Original-URI passed on by Traefik or Caddy, which set X-Forwarded-Uri.
        (
            ("X-Original-URI", "/healthz"),
            ("X-Forwarded-Uri", "/admin"),
            ("X-Forwarded-Method", "GET"),
        ),
        (("X-Forwarded-Method", "GET"), ("X-Original-Method", "DELETE"), ("X-Original-URI", "/a")),
    ],
    ids=["forwarded-uri-through-nginx", "original-uri-through-traefik", "methods-disagree"],
)
def test_two_names_for_the_original_that_disagree_are_refused(
    spoofed: tuple[tuple[str, str], ...],
) -> None:
    with pytest.raises(MissingOriginal):
        to_auth_request("GET", "/forward-auth", headers(*spoofed), "")


def test_both_names_agreeing_are_one_original() -> None:
    request = to_auth_request(
        "GET",
        "/forward-auth",
        headers(
            ("X-Forwarded-Uri", "/admin"),
            ("X-Original-URI", "/admin"),
            ("X-Forwarded-Method", "PUT"),
            ("X-Original-Method", "PUT"),
        ),
        "",
    )

    assert (request.method, request.path) == ("PUT", "/admin")
