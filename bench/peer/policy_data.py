"""The data document authz.rego decides with, read from the configuration our `jwt` server
runs with, so both sides have the same issuer, routes, role mapping and header names. A
configuration using something authz.rego does not implement is refused here, rather than
compared unequal later."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import yaml

# What authz.rego implements of our configuration.
ROLE_CLAIMS = ["realm_access.roles", "resource_access.{client_id}.roles"]
ROUTE_KEYS = frozenset({"name", "path_prefix", "methods", "public", "any_of"})
HEADER_KEYS = ("subject", "username", "email", "roles", "client")


class PolicyGap(ValueError):
    """The configuration uses a feature authz.rego does not implement."""


def policy_data(config_text: str, jwks_text: str) -> dict[str, Any]:
    """`data` for authz.rego (under `extauthz_bench`) from our server's YAML configuration."""
    document = yaml.safe_load(config_text)
    provider, roles = document["provider"], document["roles"]
    if provider.get("strategy") != "jwt":
        raise PolicyGap("provider.strategy must be jwt")
    audiences = provider.get("jwt", {}).get("audiences", [])
    if len(audiences) != 1:
        raise PolicyGap("provider.jwt.audiences must name one audience")
    if roles["claims"] != ROLE_CLAIMS or roles.get("pass_through_unmapped"):
        raise PolicyGap(f"roles: only claims {ROLE_CLAIMS}, nothing passed through unmapped")
    if any("{" in role for role in roles["mapping"]):
        raise PolicyGap("roles.mapping: no role templates")
    routes = [_route(route) for route in document["routes"]]
    headers = document["headers"]
    if headers.get("strip_authorization"):
        raise PolicyGap("headers.strip_authorization must be off")
    issuer = provider["issuer"].rstrip("/")
    return {
        "extauthz_bench": {
            "issuer": issuer,
            "audience": audiences[0],
            "jwks": jwks_text,
            # As our server names the realm of its challenges: the issuer's last segment.
            "realm": provider.get("realm") or urlsplit(issuer).path.rstrip("/").rsplit("/")[-1],
            "client_id": provider["client_id"],
            "role_mapping": roles["mapping"],
            "headers": {key: headers[key] for key in HEADER_KEYS},
            "routes": routes,
        }
    }


def _route(route: dict[str, Any]) -> dict[str, Any]:
    unknown = set(route) - ROUTE_KEYS
    if unknown:
        raise PolicyGap(f"route {route.get('name')!r}: {sorted(unknown)} not implemented")
    shaped: dict[str, Any] = {
        "name": route["name"],
        "path_prefix": route["path_prefix"],
        "public": bool(route.get("public", False)),
        "any_of": list(route.get("any_of", [])),
    }
    if route.get("methods") is not None:
        shaped["methods"] = list(route["methods"])
    # For authz_lean.rego: one startswith on "<path>/" decides a segment-aware prefix, and
    # one lookup the method, with no function bodies to evaluate.
    prefix = shaped["path_prefix"]
    if prefix != "/" and prefix.endswith("/"):
        raise PolicyGap(f"route {route.get('name')!r}: a path_prefix ending in '/' other than '/'")
    shaped["match_prefix"] = prefix if prefix.endswith("/") else prefix + "/"
    shaped["method_allowed"] = {method: True for method in shaped.get("methods", [])}
    shaped["any_method"] = "methods" not in shaped
    return shaped
