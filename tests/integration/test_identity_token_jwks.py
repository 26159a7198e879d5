"""The real server's identity tokens: minted on Check, verifiable with the JWKS its HTTP side
publishes, and re-keyed by a reload while tokens of the retired key still verify."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import jwt
import pytest

from extauthz_server.app.server import Server
from extauthz_server.config.model import load_config
from tests.integration.conftest import Launch
from tests.support.check_requests import call_check, check_request, upstream_headers
from tests.support.configs import seed_config_text
from tests.support.keycloak_standin import KeycloakStandIn, active_document
from tests.support.signing_keys import ec_key, rsa_key, write_private_key

HEADER = "x-auth-identity-token"
JWKS_PATH = "/.well-known/jwks.json"


StartServer = Callable[[str], Awaitable[tuple[Server, grpc.aio.Channel]]]


@pytest.fixture
def start_server(tmp_path: Path, launch: Launch) -> StartServer:
    """Our server from a config file in tmp_path (key files are named relative to it)."""

    async def start(config_text: str) -> tuple[Server, grpc.aio.Channel]:
        path = tmp_path / "config.yaml"
        path.write_text(config_text, encoding="utf-8")
        authz = await launch(load_config(path, {}), None)
        return authz.server, authz.channel

    return start


async def fetch_jwks(server: Server) -> tuple[int, dict[str, str], Any]:
    url = f"http://127.0.0.1:{server.http_port}{JWKS_PATH}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        body = await response.json() if response.status == 200 else None
        return response.status, dict(response.headers), body


def verify(token: str, document: dict[str, Any]) -> dict[str, Any]:
    key = jwt.PyJWKSet.from_dict(document)[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["ES256", "RS256"], issuer="extauthz-server"
    )
    return claims


async def test_jwks_verifies_the_minted_token_and_follows_a_reload(
    standin: KeycloakStandIn, start_server: StartServer, tmp_path: Path
) -> None:
    write_private_key(tmp_path / "a.pem", ec_key())
    write_private_key(tmp_path / "b.pem", rsa_key())
    standin.documents["bob"] = active_document("bob", ["manager"])
    seed = seed_config_text(standin.issuer)
    server, channel = await start_server(seed + "identity_token: {key_file: a.pem}\n")

    status, headers, first_keys = await fetch_jwks(server)
    before = upstream_headers(await call_check(channel, check_request("/api/forms", token="bob")))

    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert headers["Cache-Control"] == "public, max-age=300"
    assert [key["alg"] for key in first_keys["keys"]] == ["ES256"]
    claims = verify(before[HEADER], first_keys)
    assert (claims["sub"], claims["roles"], claims["route"]) == ("sub-bob", ["creator"], "forms")

    # Rotation: b signs from now on, a stays published for the tokens already out there.
    (tmp_path / "config.yaml").write_text(
        seed + "identity_token: {key_file: b.pem, previous_key_files: [a.pem]}\n"
    )
    assert server.reload(tmp_path / "config.yaml")
    _, _, rotated_keys = await fetch_jwks(server)
    after = upstream_headers(await call_check(channel, check_request("/api/forms", token="bob")))

    assert [key["alg"] for key in rotated_keys["keys"]] == ["RS256", "ES256"]
    assert rotated_keys["keys"][1] == first_keys["keys"][0]
    assert jwt.get_unverified_header(after[HEADER])["alg"] == "RS256"
    assert verify(after[HEADER], rotated_keys)["sub"] == "sub-bob"
    assert verify(before[HEADER], rotated_keys)["sub"] == "sub-bob"

    (tmp_path / "config.yaml").write_text(seed)
    assert server.reload(tmp_path / "config.yaml")
    assert (await fetch_jwks(server))[0] == 404


async def test_no_jwks_without_identity_tokens(
    standin: KeycloakStandIn, start_server: StartServer
) -> None:
    server, _ = await start_server(seed_config_text(standin.issuer))

    assert (await fetch_jwks(server))[0] == 404
