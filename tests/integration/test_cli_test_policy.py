"""`extauthz-server test-policy`: users' policy cases run through the real decision path,
one line per case, exit 1 when a case fails and 2 when the cases file is wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = ROOT / "examples" / "config.yaml"
EXAMPLE_CASES = ROOT / "examples" / "policy-cases.yaml"


def run_cases(cases: Path, config: Path = EXAMPLE_CONFIG) -> subprocess.CompletedProcess[str]:
    command = ["-m", "extauthz_server", "test-policy", "--config", str(config), str(cases)]
    return subprocess.run(
        [sys.executable, *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "EXTAUTHZ_CLIENT_SECRET": "not-used-by-test-policy"},
    )


def write_cases(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cases.yaml"
    path.write_text(text)
    return path


def test_the_examples_cases_all_pass_against_the_example_configuration() -> None:
    result = run_cases(EXAMPLE_CASES)

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert all(line.startswith("PASS  ") for line in lines[:-1])
    assert lines[-1] == f"test-policy: {len(lines) - 1} passed, 0 failed"
    assert "PASS  a Europe manager is kept out of Asia's forms" in lines


def test_a_failing_case_says_what_differed_and_exits_1(tmp_path: Path) -> None:
    cases = write_cases(
        tmp_path,
        """\
cases:
  - name: europe manager expected in asia
    request: {path: /api/regions/asia/forms/1}
    identity: {claims: {sub: u-1, realm_access: {roles: [Manager for Europe]}}}
    expect: {status: 200, headers: {x-auth-roles: "manager:asia"}}
  - name: roles header as expected
    request: {path: /api/regions/europe/forms/1}
    identity: {claims: {sub: u-1, realm_access: {roles: [Manager for Europe]}}}
    expect: {status: 200, reason: allowed, headers: {x-auth-roles: "manager:europe"}}
  - name: wrong reason
    request: {path: /api/forms}
    expect: {status: 401, reason: insufficient_role}
""",
    )

    result = run_cases(cases)

    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "FAIL  europe manager expected in asia: status 403 (insufficient_role), expected 200; "
        "header x-auth-roles absent, expected 'manager:asia'",
        "PASS  roles header as expected",
        "FAIL  wrong reason: reason missing_token, expected insufficient_role",
        "test-policy: 1 passed, 2 failed",
    ]


def test_a_mistake_in_the_cases_file_names_the_key_and_exits_2(tmp_path: Path) -> None:
    cases = write_cases(
        tmp_path,
        "cases:\n  - name: a\n    request: {path: /x}\n    expect: {stauts: 200}\n",
    )

    result = run_cases(cases)

    assert result.returncode == 2
    assert "cases[0].expect.stauts: unknown key" in result.stderr
    assert result.stdout == ""


KEYCLOAK_DECIDES = """\
provider:
  issuer: "http://127.0.0.1:9/realms/facts"
  client_id: ext-authz
  client_secret: s3cret
  authorization_services: {audience: forms-api}
routes:
  - name: region-forms
    path_template: "/api/regions/{region}/forms/{rest=**}"
    permission: {resource: "region-{region}", scope: {GET: read, POST: write}}
"""


def test_a_case_states_what_keycloak_answers_for_a_pair(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(KEYCLOAK_DECIDES)
    cases = write_cases(
        tmp_path,
        """\
cases:
  - name: bob reads Europe
    request: {path: /api/regions/europe/forms/1}
    identity: {claims: {sub: u-bob}}
    keycloak: {"region-europe#read": granted}
    expect: {status: 200}
  - name: bob may not write Europe
    request: {method: POST, path: /api/regions/europe/forms/1}
    identity: {claims: {sub: u-bob}}
    keycloak: {"region-europe#write": denied}
    expect: {status: 403, reason: permission_denied}
  - name: the case forgot Keycloak's answer
    request: {path: /api/regions/asia/forms/1}
    identity: {claims: {sub: u-bob}}
    expect: {status: 403}
""",
    )

    result = run_cases(cases, config)

    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "PASS  bob reads Europe",
        "PASS  bob may not write Europe",
        "FAIL  the case forgot Keycloak's answer: no Keycloak answer for region-asia#read "
        "(keycloak:); status 503 (provider_unavailable), expected 403",
        "test-policy: 2 passed, 1 failed",
    ]
