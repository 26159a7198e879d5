"""`provider:` and `providers:` configuration: strategies, JWT rules, several providers, and
errors that name the key."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
import yaml

from extauthz_server.app.strategy_context import StrategyContext, build_strategy, jwks_cache
from extauthz_server.config.model import Config, parse_config
from extauthz_server.errors import ConfigError
from extauthz_server.identity.discovery import EndpointSource
from extauthz_server.ops.metrics import CheckMetrics

DEMO = {
    "name": "demo",
    "issuer": "https://sso.example.test/realms/demo",
    "client_id": "ext-authz",
    "client_secret": "s3cret",
}
PARTNERS = {
    "name": "partners",
    "issuer": "https://sso.example.test/realms/partners",
    "strategy": "jwt",
}
ROUTES = [{"name": "all", "path_prefix": "/", "any_of": []}]


def parse(document: dict[str, Any]) -> Config:
    return parse_config(yaml.safe_dump({"routes": ROUTES} | document), {})


def error_key(document: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(document)
    return caught.value.key_path


def test_single_provider_form_defaults_to_introspection() -> None:
    config = parse({"provider": {k: v for k, v in DEMO.items() if k != "name"}})

    assert [p.name for p in config.providers] == ["default"]
    assert config.provider.strategy == "introspection"
    assert config.provider.jwt.rules.leeway_s == 0


def test_providers_list_keeps_order_and_each_its_settings() -> None:
    config = parse({"providers": [DEMO | {"strategy": "jwt_then_introspection"}, PARTNERS]})

    demo, partners = config.providers
    assert (demo.name, demo.strategy) == ("demo", "jwt_then_introspection")
    assert (partners.name, partners.strategy) == ("partners", "jwt")
    assert partners.client_secret is None
    assert config.provider is demo


def test_jwt_rules_are_read() -> None:
    jwt_section = {
        "algorithms": ["ES256", "RS256"],
        "leeway_seconds": 30,
        "audiences": ["ext-authz"],
        "header_types": ["at+JWT"],
        "jwks_refetch_interval_seconds": 2,
    }
    config = parse({"providers": [PARTNERS | {"jwt": jwt_section}]})

    settings = config.provider.jwt
    assert settings.rules.algorithms == {"ES256", "RS256"}
    assert settings.rules.leeway_s == 30
    assert settings.rules.audiences == {"ext-authz"}
    assert settings.rules.header_types == {"at+jwt"}
    assert settings.jwks_refetch_interval_s == 2


def test_each_provider_may_read_roles_from_its_own_claims() -> None:
    config = parse(
        {
            "roles": {"claims": ["realm_access.roles"]},
            "providers": [DEMO, PARTNERS | {"role_claims": ["groups"]}],
        }
    )

    assert [c.text for c in config.providers[0].role_claims] == ["realm_access.roles"]
    assert [c.text for c in config.providers[1].role_claims] == ["groups"]


def test_route_may_name_its_provider() -> None:
    routes = [{"name": "partners", "path_prefix": "/partners", "provider": "partners"}]
    config = parse({"providers": [DEMO, PARTNERS], "routes": routes})

    assert config.policy.routes[0].provider == "partners"


def test_custom_strategy_is_imported_at_load() -> None:
    strategy = "examples.api_key_strategy:ApiKeysOrKeycloak"

    config = parse({"providers": [DEMO | {"strategy": strategy, "strategy_options": {"a": 1}}]})

    assert config.provider.strategy == strategy
    assert config.provider.strategy_options == {"a": 1}


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("both forms", {"provider": DEMO, "providers": [DEMO]}, "providers"),
    ("empty list", {"providers": []}, "providers"),
    (
        "duplicate name",
        {"providers": [DEMO, DEMO | {"issuer": "https://x.test"}]},
        "providers[1].name",
    ),
    ("duplicate issuer", {"providers": [DEMO, DEMO | {"name": "again"}]}, "providers[1].issuer"),
    (
        "name missing in list",
        {"providers": [{k: v for k, v in DEMO.items() if k != "name"}]},
        "providers[0].name",
    ),
    ("bad name", {"providers": [DEMO | {"name": "Demo Realm"}]}, "providers[0].name"),
    ("unknown strategy", {"provider": DEMO | {"strategy": "magic"}}, "provider.strategy"),
    (
        "unimportable",
        {"provider": DEMO | {"strategy": "no_such_pkg.mod:Thing"}},
        "provider.strategy",
    ),
    (
        "missing attribute",
        {"provider": DEMO | {"strategy": "json:NoSuchFactory"}},
        "provider.strategy",
    ),
    (
        "introspection needs a secret",
        {"provider": {"issuer": DEMO["issuer"], "client_id": "x"}},
        "provider.client_secret",
    ),
    (
        "algorithm none",
        {"provider": DEMO | {"jwt": {"algorithms": ["none"]}}},
        "provider.jwt.algorithms",
    ),
    (
        "algorithm HS256",
        {"provider": DEMO | {"jwt": {"algorithms": ["HS256"]}}},
        "provider.jwt.algorithms",
    ),
    (
        "empty algorithms",
        {"provider": DEMO | {"jwt": {"algorithms": []}}},
        "provider.jwt.algorithms",
    ),
    (
        "complete_when with jwt",
        {"providers": [PARTNERS | {"jwt": {"complete_when_claims": ["x"]}}]},
        "providers[0].jwt.complete_when_claims",
    ),
    ("unknown jwt key", {"provider": DEMO | {"jwt": {"leeway": 3}}}, "provider.jwt.leeway"),
    (
        "leeway too big",
        {"provider": DEMO | {"jwt": {"leeway_seconds": 9999}}},
        "provider.jwt.leeway_seconds",
    ),
    (
        "options not a map",
        {"provider": DEMO | {"strategy_options": [1]}},
        "provider.strategy_options",
    ),
    (
        "route names no provider",
        {"providers": [DEMO], "routes": [{"name": "r", "path_prefix": "/", "provider": "nope"}]},
        "routes[0].provider",
    ),
]


@pytest.mark.parametrize(
    ("document", "key"), [(d, k) for _, d, k in BAD], ids=[n for n, _, _ in BAD]
)
def test_bad_provider_configuration_names_the_key(document: dict[str, Any], key: str) -> None:
    assert error_key(document) == key


async def test_a_factory_that_makes_no_strategy_is_refused_naming_its_provider_key() -> None:
    config = parse({"providers": [DEMO, PARTNERS | {"strategy": "builtins:repr"}]})
    provider = config.providers[1]

    async with aiohttp.ClientSession() as session:
        endpoints = EndpointSource(session, provider.issuer, None)
        context = StrategyContext(
            provider, session, endpoints, jwks_cache(session, endpoints, provider), CheckMetrics()
        )
        with pytest.raises(ConfigError) as caught:
            build_strategy(context)

    assert caught.value.key_path == "providers[1].strategy"
