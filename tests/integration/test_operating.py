"""What operators see: Prometheus metrics after real Checks, and the audit line of each decision."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from extauthz_server.ops.logs import AUDIT_LOGGER, JsonFormatter
from tests.integration.conftest import RunningAuthz, StartAuthz
from tests.support.check_requests import call_check, check_request
from tests.support.configs import seed_config_text
from tests.support.keycloak_standin import Fault, KeycloakStandIn, active_document
from tests.support.permissions_api import Fault as PermissionsFault
from tests.support.permissions_api import PermissionsApi


async def scrape(authz: RunningAuthz) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(authz.http_base + "/metrics") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return await response.text()


def sample(text: str, name: str) -> float:
    """The value of one exact sample line `name{labels} value` of the exposition."""
    for line in text.splitlines():
        if line.startswith(name + " ") or line == name:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name!r} in:\n{text}")


async def test_metrics_count_decisions_introspections_and_cache_levels(
    authz: RunningAuthz, standin: KeycloakStandIn
) -> None:
    standin.documents["bob"] = active_document("bob", ["manager"])
    for path, token in [
        ("/api/forms", "bob"),
        ("/api/forms", "bob"),
        ("/admin", "bob"),
        ("/api/forms", None),
        ("/api/forms", "garbage"),
    ]:
        await call_check(authz.channel, check_request(path, token=token))
    standin.fault = Fault.SERVER_ERROR
    await call_check(authz.channel, check_request("/api/forms", token="other"))

    text = await scrape(authz)

    checks = 'extauthz_checks_total{outcome="%s",reason="%s",route="%s"}'
    assert sample(text, checks % ("allowed", "allowed", "forms")) == 2
    assert sample(text, checks % ("denied", "insufficient_role", "admin")) == 1
    assert sample(text, checks % ("denied", "missing_token", "forms")) == 1
    assert sample(text, checks % ("denied", "invalid_token", "forms")) == 1
    assert sample(text, checks % ("denied", "provider_unavailable", "forms")) == 1
    assert sample(text, 'extauthz_introspections_total{outcome="active"}') == 1
    assert sample(text, 'extauthz_introspections_total{outcome="inactive"}') == 1
    assert sample(text, 'extauthz_introspections_total{outcome="error"}') == 1
    assert sample(text, 'extauthz_cache_lookups_total{level="l1",result="hit"}') == 2
    assert sample(text, "extauthz_check_duration_seconds_count") == 6
    assert sample(text, "extauthz_introspections_in_flight") == 0
    assert sample(text, "extauthz_cache_l1_entries") == 2
    assert "bob" not in text


async def test_metrics_show_permission_lookups_and_the_open_circuit(
    start_authz: StartAuthz, standin: KeycloakStandIn
) -> None:
    api = PermissionsApi(fault=PermissionsFault.SERVER_ERROR)
    await api.start()
    try:
        authz = await start_authz(
            provider={
                "permissions": {
                    "url": api.url_template,
                    "circuit_breaker": {"failures": 2, "open_seconds": 60},
                }
            }
        )
        for user in ("u1", "u2", "u3", "u4"):
            standin.documents[user] = active_document(user, ["manager"])
            response = await call_check(authz.channel, check_request("/api/forms", token=user))
            assert response.denied_response.status.code == 503

        text = await scrape(authz)
    finally:
        await api.stop()

    lookups = 'extauthz_permission_lookups_total{result="%s"}'
    assert sample(text, lookups % "call_failed") == 2
    assert sample(text, lookups % "short_circuited") == 2
    assert api.request_count == 2


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def audit_lines() -> Iterator[list[str]]:
    handler = Captured()
    audit = logging.getLogger(AUDIT_LOGGER)
    audit.addHandler(handler)
    audit.setLevel(logging.INFO)
    yield handler.lines
    audit.removeHandler(handler)


async def test_each_decision_has_one_json_audit_line_without_the_token(
    authz: RunningAuthz, standin: KeycloakStandIn, audit_lines: list[str]
) -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.very-secret-token.sig"
    standin.documents[token] = active_document("bob", ["manager"])
    request = check_request(
        "/api/forms/7?access=abc", token=token, headers={"x-request-id": "req-42"}
    )
    request.attributes.source.address.socket_address.address = "203.0.113.9"

    await call_check(authz.channel, request)
    await call_check(authz.channel, request)

    assert len(audit_lines) == 2
    first, second = (json.loads(line) for line in audit_lines)
    assert first["decision"] == "allow"
    assert first["status"] == 200
    assert first["reason"] == "allowed"
    assert first["route"] == "forms"
    assert first["path"] == "/api/forms/7"
    assert first["roles"] == "creator"
    assert first["client"] == "web-app"
    assert first["source"] == "203.0.113.9"
    assert first["request_id"] == "req-42"
    assert first["subject"] == "sub-bob"
    assert (first["cache"], second["cache"]) == ("provider", "l1")
    assert all(token not in line and "very-secret" not in line for line in audit_lines)


async def test_a_deny_for_missing_roles_names_the_callers_roles_and_client(
    authz: RunningAuthz, standin: KeycloakStandIn, audit_lines: list[str]
) -> None:
    standin.documents["bob"] = active_document("bob", ["manager"])

    response = await call_check(authz.channel, check_request("/admin/users", token="bob"))

    [line] = (json.loads(line) for line in audit_lines)
    assert (line["decision"], line["reason"]) == ("deny", "insufficient_role")
    assert (line["subject"], line["roles"], line["client"]) == ("sub-bob", "creator", "web-app")
    # Envoy's dynamic metadata of a deny still names no caller.
    assert dict(response.dynamic_metadata) == {"reason": "insufficient_role", "route": "admin"}


async def test_allows_are_sampled_but_denies_are_always_audited(
    start_authz: StartAuthz, standin: KeycloakStandIn, audit_lines: list[str]
) -> None:
    authz = await start_authz(logging={"audit_allow_sample_rate": 0.0})
    standin.documents["bob"] = active_document("bob", ["manager"])

    await call_check(authz.channel, check_request("/api/forms", token="bob"))
    await call_check(authz.channel, check_request("/admin", token="bob"))

    assert [json.loads(line)["decision"] for line in audit_lines] == ["deny"]


async def test_reload_swaps_routes_at_once_and_a_bad_file_changes_nothing(
    authz: RunningAuthz, standin: KeycloakStandIn, tmp_path: Path
) -> None:
    standin.documents["bob"] = active_document("bob", ["manager"])
    config_path = tmp_path / "config.yaml"
    document = yaml.safe_load(seed_config_text(standin.issuer))
    admin_route = next(route for route in document["routes"] if route["name"] == "admin")
    admin_route["any_of"].append("creator")
    opened = yaml.safe_dump(document)
    stop = asyncio.Event()

    async def keep_checking() -> set[int]:
        seen = set()
        while not stop.is_set():
            response = await call_check(authz.channel, check_request("/admin/x", token="bob"))
            seen.add(response.denied_response.status.code or 200)
        return seen

    checking = asyncio.create_task(keep_checking())
    await asyncio.sleep(0.05)
    config_path.write_text(opened)
    assert authz.server.reload(config_path)
    after_reload = await call_check(authz.channel, check_request("/admin/x", token="bob"))
    config_path.write_text(opened.replace("routes:", "routes: 5\nroutez:"))
    assert not authz.server.reload(config_path)
    still = await call_check(authz.channel, check_request("/admin/x", token="bob"))
    stop.set()

    assert after_reload.HasField("ok_response")
    assert still.HasField("ok_response")
    assert await checking <= {200, 403}
    metrics = await scrape(authz)
    assert sample(metrics, 'extauthz_config_reloads_total{result="ok"}') == 1
    assert sample(metrics, 'extauthz_config_reloads_total{result="failed"}') == 1
