"""Path templates (Envoy's URI-template syntax): what they match, what they capture, and the
templates refused at load."""

from __future__ import annotations

import pytest

from extauthz_server.config.model import parse_config
from extauthz_server.core.path_template import PathTemplate, TemplateError
from extauthz_server.core.routes import PathKind
from tests.unit.test_config import config_error, with_routes

REGION_FORMS = "/api/regions/{region}/forms/{rest=**}"


@pytest.mark.parametrize(
    ("template", "path", "captures"),
    [
        (REGION_FORMS, "/api/regions/europe/forms/1", {"region": "europe", "rest": "1"}),
        (REGION_FORMS, "/api/regions/europe/forms/a/b", {"region": "europe", "rest": "a/b"}),
        (REGION_FORMS, "/api/regions/europe/forms/", {"region": "europe", "rest": ""}),
        (REGION_FORMS, "/api/regions/europe/forms", None),
        (REGION_FORMS, "/api/regions//forms/1", None),
        (REGION_FORMS, "/api/regions/europe/form/1", None),
        ("/api/{id=*}", "/api/7", {"id": "7"}),
        ("/api/{id}", "/api/7/more", None),
        ("/api/{id}", "/api/", None),
        ("/api/*/forms", "/api/x/forms", {}),
        ("/api/*/forms", "/api/x/y/forms", None),
        ("/files/**", "/files/a/b/c.txt", {}),
        ("/files/**", "/files", None),
        ("/**", "/", {}),
        ("/**", "/anything/at/all", {}),
        ("/{all=**}", "/a/b", {"all": "a/b"}),
        ("/", "/", {}),
        ("/", "/a", None),
        ("/exact/path", "/exact/path", {}),
        ("/exact/path", "/exact/path/", None),
        ("/users/{name}", "/users/Zoë Ünicode", {"name": "Zoë Ünicode"}),
    ],
    ids=[
        "one-and-rest",
        "rest-spans-segments",
        "rest-may-be-empty",
        "rest-needs-its-slash",
        "one-is-never-empty",
        "literal-differs",
        "name-equals-star",
        "one-is-one-segment",
        "one-not-empty-at-end",
        "bare-star",
        "bare-star-one-segment",
        "bare-double-star",
        "double-star-needs-slash",
        "catch-all-root",
        "catch-all-deep",
        "named-catch-all",
        "root",
        "root-only",
        "literal",
        "literal-trailing-slash",
        "decoded-text-captured",
    ],
)
def test_a_template_matches_and_captures(
    template: str, path: str, captures: dict[str, str] | None
) -> None:
    found = PathTemplate.parse(template).match(path)

    assert (dict(found) if found is not None else None) == captures


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("api/{x}", "must start with '/'"),
        ("/a/**/b", "'**' must be the last segment"),
        ("/a/{rest=**}/b", "'**' must be the last segment"),
        ("/{id}/{id}", "{id} is captured twice"),
        ("/a*", "an operator must be a whole segment"),
        ("/{id}.json", "an operator must be a whole segment"),
        ("/{1st}", "a variable name is"),
        ("/{}", "a variable name is"),
        ("/{id=foo}", "a variable matches '*' or '**'"),
        ("/{id", "an operator must be a whole segment"),
        ("/a//b", "empty segment"),
        ("/a/../b", "dot segments"),
    ],
    ids=[
        "relative",
        "double-star-not-last",
        "named-rest-not-last",
        "duplicate-name",
        "partial-segment-star",
        "partial-segment-variable",
        "bad-name",
        "empty-name",
        "unsupported-operator",
        "unclosed",
        "empty-segment",
        "dot-segment",
    ],
)
def test_a_bad_template_is_refused_with_the_reason(template: str, problem: str) -> None:
    with pytest.raises(TemplateError) as caught:
        PathTemplate.parse(template)

    assert problem in str(caught.value)


def test_a_bad_template_is_a_configuration_error_naming_the_route_key() -> None:
    error = config_error(
        with_routes(
            "{name: a, path_prefix: /a}",
            "{name: b, path_template: '/api/{id}/{id}', any_of: [creator]}",
        )
    )

    assert error.key_path == "routes[1].path_template"
    assert "{id} is captured twice" in error.problem


def test_a_route_takes_exactly_one_kind_of_path() -> None:
    error = config_error(with_routes("{name: a, path_prefix: /a, path_template: '/a/{x}'}"))

    assert error.key_path == "routes[0]"
    assert "path_template" in error.problem


def test_a_template_route_is_loaded_with_its_captures_named() -> None:
    config = parse_config(
        with_routes("{name: forms, path_template: '" + REGION_FORMS + "', any_of: [creator]}"),
        {},
    )

    [route] = config.policy.routes
    assert route.path.kind is PathKind.TEMPLATE
    assert route.path.template is not None
    assert route.path.template.names == ("region", "rest")


def test_the_first_matching_route_gives_its_captures_and_later_routes_still_match() -> None:
    config = parse_config(
        with_routes(
            "{name: forms, path_template: '" + REGION_FORMS + "', any_of: [creator]}",
            "{name: region, path_template: '/api/regions/{region}', methods: [GET]}",
            "{name: rest, path_prefix: /api}",
        ),
        {},
    )

    forms = config.policy.match("app.example.com", "/api/regions/asia/forms/9", "GET")
    region = config.policy.match("app.example.com", "/api/regions/asia", "GET")
    refused = config.policy.match("app.example.com", "/api/regions/asia", "DELETE")
    other = config.policy.match("app.example.com", "/api/regions", "GET")

    assert forms is not None
    assert (forms.route.name, dict(forms.params)) == ("forms", {"region": "asia", "rest": "9"})
    assert region is not None
    assert (region.route.name, dict(region.params)) == ("region", {"region": "asia"})
    assert refused is None
    assert other is not None
    assert (other.route.name, dict(other.params)) == ("rest", {})
