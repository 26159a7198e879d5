"""The gRPC Check service end to end in-process: real grpc.aio server, real HTTP to the stand-in."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import grpc
import pytest

from extauthz_server._proto.grpc.health.v1 import health_pb2
from tests.integration.conftest import RunningAuthz, StartAuthz
from tests.support.check_requests import call_check, check_request, denied_headers, upstream_headers
from tests.support.keycloak_standin import Fault, KeycloakStandIn, active_document

GRPC_OK, GRPC_PERMISSION_DENIED, GRPC_UNAVAILABLE, GRPC_UNAUTHENTICATED = 0, 7, 14, 16


async def test_manager_token_is_allowed_with_creator_role_header(
    authz: RunningAuthz, standin: KeycloakStandIn
) -> None:
    standin.documents["bob-token"] = active_document("bob", ["manager"])

    response = await call_check(authz.channel, check_request("/api/forms/1", token="bob-token"))

    assert response.status.code == GRPC_OK
    assert response.HasField("ok_response")
    headers = upstream_headers(response)
    assert headers["x-auth-roles"] == "creator"
    assert headers["x-auth-username"] == "bob"
    assert headers["x-auth-subject"] == "sub-bob"
    assert headers["x-auth-client"] == "web-app"
    assert dict(response.dynamic_metadata) == {
        "reason": "allowed",
        "route": "forms",
        "subject": "sub-bob",
        "roles": "creator",
        "client": "web-app",
    }


async def test_introspection_request_follows_rfc_7662_with_basic_client_auth(
    authz: RunningAuthz, standin: KeycloakStandIn
) -> None:
    standin.documents["bob-token"] = active_document("bob", ["manager"])

    await call_check(authz.channel, check_request("/api/forms", token="bob-token"))

    [call] = standin.calls
    assert call.form == {"token": "bob-token", "token_type_hint": "access_token"}
    assert call.authorization is not None
    assert call.authorization.startswith("Basic ")


async def test_client_secret_post_sends_credentials_in_the_form(
    start_authz: StartAuthz, standin: KeycloakStandIn
) -> None:
    authz = await start_authz(auth_method="client_secret_post", client_secret="p@ss word")
    standin.documents["t"] = active_document("bob", ["manager"])

    await call_check(authz.channel, check_request("/api/forms", token="t"))

    [call] = standin.calls
    assert call.authorization is None
    assert call.form["client_id"] == "ext-authz"
    assert call.form["client_secret"] == "p@ss word"


async def test_second_check_with_same_token_is_served_from_cache(
    authz: RunningAuthz, standin: KeycloakStandIn
) -> None:
    standin.documents["bob-token"] = active_document("bob", ["manager"])

    for _ in range(3):
        response = await call_check(authz.channel, check_request("/api/forms", token="bob-token"))
        assert response.status.code == GRPC_OK

    assert len(standin.calls) == 1


async def test_an_introspection_answer_sent_in_chunks_is_read_whole(
    authz: RunningAuthz, standin: KeycloakStandIn
) -> None:
    # Padded past what one read returns, as a document with many roles would be.
    roles = [f"role-{n}" for n in range(300)]
    standin.documents["bob-token"] = active_document("bob", ["manager", *roles])
    standin.fault = Fault.CHUNKED

    response = await call_check(authz.channel, check_request("/api/forms", token="bob-token"))

    assert response.status.code == GRPC_OK


async def test_concurrent_checks_of_one_token_introspect_once(
    start_authz: StartAuthz, standin: KeycloakStandIn
) -> None:
    # The provider timeout is far above the stand-in's delay, so that a loaded host slows the
    # one introspection down without failing it: what is measured is the coalescing.
    authz = await start_authz(timeout_ms=5000)
    standin.documents["bob-token"] = active_document("bob", ["manager"])
    standin.fault, standin.delay_s = Fault.SLOW, 0.05

    responses = await asyncio.gather(
        *(
            call_check(authz.channel, check_request("/api/forms", token="bob-token"))
            for _ in range(10)
        )
    )

    assert {r.status.code for r in responses} == {GRPC_OK}
    assert len(standin.calls) == 1


async def test_inactive_token_is_denied_401_invalid_token(
    authz: RunningAuthz, standin: KeycloakStandIn
) -> None:
    response = await call_check(authz.channel, check_request("/api/forms", token="unknown"))

    assert response.status.code == GRPC_UNAUTHENTICATED
    assert response.denied_response.status.code == 401
    assert 'error="invalid_token"' in denied_headers(response)["www-authenticate"]


async def test_refresh_token_reported_active_is_still_denied(
    authz: RunningAuthz, standin: KeycloakStandIn
) -> None:
    standin.documents["refresh"] = active_document(
        "bob", ["manager"], token_type="Refresh", typ="Refresh"
    )

    response = await call_check(authz.channel, check_request("/api/forms", token="refresh"))

    assert response.denied_response.status.code == 401


async def test_lacking_role_is_denied_403_insufficient_scope(
    authz: RunningAuthz, standin: KeycloakStandIn
) -> None:
    standin.documents["bob-token"] = active_document("bob", ["manager"])

    response = await call_check(authz.channel, check_request("/admin/users", token="bob-token"))

    assert response.status.code == GRPC_PERMISSION_DENIED
    assert response.denied_response.status.code == 403
    assert 'error="insufficient_scope"' in denied_headers(response)["www-authenticate"]


async def test_missing_token_is_denied_401_with_bare_challenge(authz: RunningAuthz) -> None:
    response = await call_check(authz.channel, check_request("/api/forms"))

    assert response.denied_response.status.code == 401
    assert denied_headers(response)["www-authenticate"] == 'Bearer realm="demo"'
    assert denied_headers(response)["content-type"] == "application/json"
    assert dict(response.dynamic_metadata) == {"reason": "missing_token", "route": "forms"}


@pytest.mark.parametrize(
    "fault",
    [
        Fault.SERVER_ERROR,
        Fault.HTML,
        Fault.MALFORMED_JSON,
        Fault.NOT_AN_OBJECT,
        Fault.REJECT_CLIENT_OLD,
        Fault.REJECT_CLIENT_NEW,
        Fault.CLIENT_NOT_ALLOWED,
        Fault.RESET,
    ],
    ids=lambda fault: fault.value,
)
async def test_provider_fault_fails_closed_with_503(
    authz: RunningAuthz, standin: KeycloakStandIn, fault: Fault
) -> None:
    standin.documents["bob-token"] = active_document("bob", ["manager"])
    standin.fault = fault

    response = await call_check(authz.channel, check_request("/api/forms", token="bob-token"))

    assert response.status.code == GRPC_UNAVAILABLE
    assert response.denied_response.status.code == 503
    assert "Internal error" not in response.denied_response.body
    assert "Authentication failed" not in response.denied_response.body


async def test_non_json_number_in_the_answer_fails_closed(
    authz: RunningAuthz, standin: KeycloakStandIn
) -> None:
    # json.dumps writes NaN, which is not JSON; an `exp` of NaN would otherwise never expire.
    standin.documents["nan"] = active_document("bob", ["manager"], exp=float("nan"))

    response = await call_check(authz.channel, check_request("/api/forms", token="nan"))

    assert response.denied_response.status.code == 503


async def test_provider_fault_is_not_cached(authz: RunningAuthz, standin: KeycloakStandIn) -> None:
    standin.documents["bob-token"] = active_document("bob", ["manager"])
    standin.fault = Fault.SERVER_ERROR
    first = await call_check(authz.channel, check_request("/api/forms", token="bob-token"))
    standin.fault = Fault.NONE

    second = await call_check(authz.channel, check_request("/api/forms", token="bob-token"))

    assert first.denied_response.status.code == 503
    assert second.status.code == GRPC_OK


async def test_one_5xx_is_retried_once(authz: RunningAuthz, standin: KeycloakStandIn) -> None:
    standin.documents["bob-token"] = active_document("bob", ["manager"])
    standin.fault = Fault.SERVER_ERROR_ONCE

    response = await call_check(authz.channel, check_request("/api/forms", token="bob-token"))

    assert response.status.code == GRPC_OK
    assert len(standin.calls) == 2


async def test_4xx_is_not_retried(authz: RunningAuthz, standin: KeycloakStandIn) -> None:
    standin.fault = Fault.REJECT_CLIENT_NEW

    await call_check(authz.channel, check_request("/api/forms", token="bob-token"))

    assert len(standin.calls) == 1


async def test_rejected_credentials_are_logged_as_misconfiguration_without_secrets(
    authz: RunningAuthz, standin: KeycloakStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    standin.fault = Fault.REJECT_CLIENT_OLD
    caplog.set_level(logging.INFO)

    await call_check(authz.channel, check_request("/api/forms", token="bob-token"))

    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("refused our client credentials" in message for message in errors)
    everything = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert "bob-token" not in everything
    assert "extauthzdemosecret" not in everything


async def test_slow_provider_is_cut_off_at_the_configured_timeout(
    start_authz: StartAuthz, standin: KeycloakStandIn
) -> None:
    authz = await start_authz(timeout_ms=100)
    standin.documents["bob-token"] = active_document("bob", ["manager"])
    standin.fault, standin.delay_s = Fault.SLOW, 2.0

    started = time.monotonic()
    response = await call_check(authz.channel, check_request("/api/forms", token="bob-token"))
    elapsed = time.monotonic() - started

    assert response.denied_response.status.code == 503
    assert elapsed < 0.5


async def test_grpc_deadline_shorter_than_timeout_is_honoured(
    start_authz: StartAuthz, standin: KeycloakStandIn
) -> None:
    authz = await start_authz(timeout_ms=2000)
    standin.fault, standin.delay_s = Fault.SLOW, 2.0

    response = await call_check(
        authz.channel, check_request("/api/forms", token="bob-token"), timeout_s=1.0
    )

    assert response.denied_response.status.code == 503


async def test_provider_down_fails_closed(authz: RunningAuthz, standin: KeycloakStandIn) -> None:
    standin.documents["bob-token"] = active_document("bob", ["manager"])
    await call_check(authz.channel, check_request("/api/forms", token="warm-up"))
    await standin.stop()

    response = await call_check(authz.channel, check_request("/api/forms", token="bob-token"))

    assert response.denied_response.status.code == 503


async def test_health_service_reports_serving(authz: RunningAuthz) -> None:
    check = authz.channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )

    for service in ("", "envoy.service.auth.v3.Authorization"):
        reply = await check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await check(health_pb2.HealthCheckRequest(service="nope"), timeout=2)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_readyz_turns_ready_once_discovery_succeeded(authz: RunningAuthz) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(authz.http_base + "/healthz") as live:
            assert live.status == 200
        deadline = time.monotonic() + 5
        status = 0
        while time.monotonic() < deadline:
            async with session.get(authz.http_base + "/readyz") as ready:
                status = ready.status
            if status == 200:
                break
            await asyncio.sleep(0.05)
        assert status == 200


async def test_readyz_is_503_while_the_provider_cannot_be_discovered(
    start_authz: StartAuthz, standin: KeycloakStandIn
) -> None:
    await standin.stop()
    authz = await start_authz()

    async with (
        aiohttp.ClientSession() as session,
        session.get(authz.http_base + "/readyz") as ready,
    ):
        assert ready.status == 503


async def test_in_flight_check_completes_during_graceful_stop(
    authz: RunningAuthz, standin: KeycloakStandIn
) -> None:
    standin.documents["bob-token"] = active_document("bob", ["manager"])
    standin.fault, standin.delay_s = Fault.SLOW, 0.1
    in_flight = asyncio.create_task(
        call_check(authz.channel, check_request("/api/forms", token="bob-token"))
    )
    await asyncio.sleep(0.03)

    await authz.server.stop()

    response = await in_flight
    assert response.status.code == GRPC_OK
