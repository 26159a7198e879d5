"""`extauthz-server validate-config` and `check`: the "why was I denied" tool."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.configs import seed_config_text
from tests.support.keycloak_standin import KeycloakStandIn
from tests.support.net import free_port


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "extauthz_server", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(seed_config_text(f"http://127.0.0.1:{free_port()}/realms/demo"))
    return path


def claims_file(tmp_path: Path, roles: list[str]) -> Path:
    path = tmp_path / "claims.json"
    document = {
        "active": True,
        "token_type": "Bearer",
        "sub": "sub-bob",
        "preferred_username": "bob",
        "client_id": "web-app",
        "exp": int(time.time()) + 300,
        "realm_access": {"roles": roles},
    }
    path.write_text(json.dumps(document))
    return path


def test_validate_config_accepts_a_good_file_and_names_the_key_of_a_bad_one(
    config: Path, tmp_path: Path
) -> None:
    good = run_cli("validate-config", str(config))
    bad_path = tmp_path / "bad.yaml"
    bad_path.write_text(config.read_text().replace("any_of: []", "any_off: []"))
    bad = run_cli("validate-config", str(bad_path))

    assert (good.returncode, good.stdout.strip()) == (0, f"{config}: ok (5 routes)")
    assert bad.returncode == 2
    assert "routes[4].any_off: unknown key" in bad.stderr


def test_check_explains_an_allow_with_roles_before_and_after_mapping(
    config: Path, tmp_path: Path
) -> None:
    claims = claims_file(tmp_path, ["manager", "offline_access"])

    result = run_cli(
        "check", "--config", str(config), "--path", "/api/forms/1", "--claims", str(claims)
    )

    assert result.returncode == 0, result.stderr
    assert "decision:        allow (200, allowed)" in result.stdout
    assert "route:           forms" in result.stdout
    assert "provider roles:  manager, offline_access" in result.stdout
    assert "internal roles:  creator" in result.stdout
    assert "set header:      x-auth-roles: creator" in result.stdout
    assert "removed header:  x-auth-email" in result.stdout


def test_check_explains_a_deny_and_exits_1(config: Path, tmp_path: Path) -> None:
    claims = claims_file(tmp_path, ["manager"])

    result = run_cli(
        "check", "--config", str(config), "--path", "/admin/x", "--claims", str(claims), "--json"
    )

    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["decision"] == "deny"
    assert (report["status"], report["reason"], report["route"]) == (
        403,
        "insufficient_role",
        "admin",
    )
    assert report["internal_roles"] == ["creator"]
    assert 'error="insufficient_scope"' in report["response_headers"]["www-authenticate"]


def test_check_without_token_shows_the_challenge(config: Path) -> None:
    result = run_cli("check", "--config", str(config), "--path", "/api/forms", "--json")

    assert result.returncode == 1
    assert json.loads(result.stdout)["reason"] == "missing_token"


def test_check_with_an_unreachable_provider_exits_3(config: Path) -> None:
    result = run_cli(
        "check", "--config", str(config), "--path", "/api/forms", "--token", "abc", "--json"
    )

    assert result.returncode == 3
    assert json.loads(result.stdout)["reason"] == "provider_unavailable"
    assert "abc" not in result.stderr


def test_check_shows_what_the_path_template_captured(tmp_path: Path) -> None:
    routes = [
        {
            "name": "region-forms",
            "path_template": "/api/regions/{region}/forms/{rest=**}",
            "any_of": ["creator"],
        }
    ]
    config = tmp_path / "config.yaml"
    issuer = f"http://127.0.0.1:{free_port()}/realms/demo"
    config.write_text(seed_config_text(issuer, routes=routes))
    claims = claims_file(tmp_path, ["manager"])
    path = "/api/regions/europe/forms/7/history"

    text = run_cli("check", "--config", str(config), "--path", path, "--claims", str(claims))
    report = run_cli(
        "check", "--config", str(config), "--path", path, "--claims", str(claims), "--json"
    )

    assert text.returncode == 0, text.stderr
    assert "route:           region-forms" in text.stdout
    assert "captured:        region = europe" in text.stdout
    assert "captured:        rest = 7/history" in text.stdout
    assert json.loads(report.stdout)["params"] == {"region": "europe", "rest": "7/history"}


def test_check_shows_the_scoped_roles_the_route_requires_for_this_path(tmp_path: Path) -> None:
    routes = [
        {
            "name": "region-forms",
            "path_template": "/api/regions/{region}/forms/{rest=**}",
            "any_of": ["manager:{region}", "admin"],
        }
    ]
    config = tmp_path / "config.yaml"
    issuer = f"http://127.0.0.1:{free_port()}/realms/demo"
    mapping = {"Manager for {region}": ["manager:{region}"]}
    config.write_text(seed_config_text(issuer, routes=routes, role_mapping=mapping))
    claims = claims_file(tmp_path, ["Manager for Europe"])
    path = "/api/regions/europe/forms/7"

    text = run_cli("check", "--config", str(config), "--path", path, "--claims", str(claims))

    # The case mismatch that denies is in plain sight: held manager:Europe, needed manager:europe.
    assert text.returncode == 1
    assert "decision:        deny (403, insufficient_role)" in text.stdout
    assert "internal roles:  manager:Europe" in text.stdout
    assert "route requires:  any of admin, manager:europe" in text.stdout


def test_check_shows_the_routes_condition_and_what_it_gave(tmp_path: Path) -> None:
    when = '"/orgs/" + params.org in identity.claims.groups'
    routes = [{"name": "org-api", "path_template": "/api/orgs/{org}/{rest=**}", "when": when}]
    config = tmp_path / "config.yaml"
    config.write_text(
        seed_config_text(f"http://127.0.0.1:{free_port()}/realms/demo", routes=routes)
    )
    claims = claims_file(tmp_path, ["manager"])
    document = json.loads(claims.read_text())
    claims.write_text(json.dumps({**document, "groups": ["/orgs/acme"]}))

    own = run_cli(
        "check", "--config", str(config), "--path", "/api/orgs/acme/x", "--claims", str(claims)
    )
    other = run_cli(
        "check",
        "--config",
        str(config),
        "--path",
        "/api/orgs/globex/x",
        "--claims",
        str(claims),
        "--json",
    )

    assert own.returncode == 0, own.stderr
    assert f"condition:       {when}  →  true" in own.stdout
    assert other.returncode == 1
    report = json.loads(other.stdout)
    assert report["reason"] == "condition_false"
    assert report["condition"] == {"when": when, "result": "false"}


def test_help_lists_every_command_and_a_misspelled_one_is_named() -> None:
    helped = run_cli("--help")
    misspelled = run_cli("chekc", "--config", "x.yaml")

    assert helped.returncode == 0
    for command in ("serve", "validate-config", "check", "test-policy", "demo"):
        assert f"\n  {command} " in helped.stdout
    assert misspelled.returncode == 2
    assert "unknown command 'chekc' (did you mean 'check'?)" in misspelled.stderr
    assert "test-policy" in misspelled.stderr


def test_validate_config_without_secrets_checks_the_structure(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "config.yaml"
    environ = {k: v for k, v in os.environ.items() if k != "EXTAUTHZ_CLIENT_SECRET"}
    broken = tmp_path / "broken.yaml"
    broken.write_text(example.read_text().replace("negative_ttl_seconds", "negative_ttl"))

    plain = run_cli("validate-config", str(example), env=environ)
    placeholders = run_cli("validate-config", "--no-secrets", str(example), env=environ)
    structure = run_cli("validate-config", "--no-secrets", str(broken), env=environ)

    assert plain.returncode == 2
    assert "EXTAUTHZ_CLIENT_SECRET is not set" in plain.stderr
    assert placeholders.returncode == 0, placeholders.stderr
    assert structure.returncode == 2
    assert "cache.negative_ttl: unknown key (did you mean 'negative_ttl_seconds'?)" in (
        structure.stderr
    )


def test_a_bad_claims_file_is_an_input_error_not_a_configuration_error(
    config: Path, tmp_path: Path
) -> None:
    claims = tmp_path / "claims.json"
    claims.write_text("{not json")

    result = run_cli("check", "--config", str(config), "--path", "/x", "--claims", str(claims))

    assert result.returncode == 2
    assert "input error: --claims:" in result.stderr
    assert "configuration error" not in result.stderr


def test_check_with_claims_shows_the_permission_keycloak_would_be_asked(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""\
provider:
  issuer: "http://127.0.0.1:{free_port()}/realms/facts"
  client_id: ext-authz
  client_secret: s3cret
  authorization_services: {{audience: forms-api}}
routes:
  - name: region-forms
    path_template: "/api/regions/{{region}}/forms/{{rest=**}}"
    permission: {{resource: "region-{{region}}", scope: {{GET: read, POST: write}}}}
"""
    )
    claims = claims_file(tmp_path, [])
    path = "/api/regions/europe/forms/1"

    text = run_cli("check", "--config", str(config), "--path", path, "--claims", str(claims))

    assert text.returncode == 1
    assert (
        "keycloak asked:  region-europe#read  →  not asked: Keycloak decides for a real token "
        "(--token)"
    ) in text.stdout


async def test_check_of_an_inactive_token_says_what_the_token_shows(
    tmp_path: Path, standin: KeycloakStandIn
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(seed_config_text(standin.issuer))
    claims = {"iss": standin.issuer.replace("127.0.0.1", "localhost"), "exp": 4_000_000_000}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    token = f"eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln"

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "extauthz_server",
        "check",
        "--config",
        str(config),
        "--path",
        "/api/forms",
        "--token",
        token,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)

    assert process.returncode == 1, stderr
    assert "(401, invalid_token)" in stdout.decode()
    assert "hint:            the token was issued by http://localhost:" in stdout.decode()
