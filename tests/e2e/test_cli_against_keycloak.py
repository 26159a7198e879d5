"""`extauthz-server check --token` introspects a real Keycloak token and explains the decision."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.configs import seed_config_text
from tests.support.keycloak import Keycloak

pytestmark = pytest.mark.keycloak


def test_check_with_a_real_token_shows_keycloak_roles_and_the_mapped_ones(
    keycloak: Keycloak, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(seed_config_text(keycloak.issuer, timeout_ms=5000))
    token = keycloak.password_grant("carol")["access_token"]

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "extauthz_server",
            "check",
            "--config",
            str(config),
            "--path",
            "/admin/users",
            "--method",
            "DELETE",
            "--token",
            token,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["route"] == "admin"
    assert "org manager" in report["provider_roles"]
    assert report["internal_roles"] == ["platformAdmin"]
    assert report["headers_set"]["x-auth-username"] == "carol"
    assert token not in result.stdout
