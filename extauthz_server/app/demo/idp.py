"""A small development identity provider that answers like Keycloak's demo realm.

For trying the server out on a laptop, never for anything real: fixed users and passwords,
a fixed client secret, and a signing key made up at start. It serves what extauthz-server
and a curl session need, at Keycloak's paths under `/realms/demo`: discovery, the token
endpoint (password grant for the public client `web-app`), RFC 7662 introspection for the
confidential client `ext-authz` (client_secret_basic), and the JWKS.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote_plus, unquote_plus

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

REALM = "demo"
PUBLIC_CLIENT_ID = "web-app"
INTROSPECTING_CLIENT_ID = "ext-authz"
INTROSPECTING_CLIENT_SECRET = "extauthzdemosecret0123456789abcd"  # noqa: S105 - demo only
ACCESS_TOKEN_LIFESPAN_S = 300
SCOPE = "openid profile email"
_KEY_ID = "demo-rs256"


@dataclass(frozen=True, slots=True)
class DemoUser:
    username: str
    realm_roles: tuple[str, ...]
    client_roles: tuple[str, ...] = ()

    @property
    def password(self) -> str:
        return f"{self.username}-pw"

    @property
    def subject(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"extauthz-demo:{self.username}"))

    @property
    def email(self) -> str:
        return f"{self.username}@example.com"


# The same people as keycloak/demo-realm.json.
USERS: Mapping[str, DemoUser] = {
    user.username: user
    for user in (
        DemoUser("alice", ("admin",), ("orders.read", "orders.write")),
        DemoUser("bob", ("manager",), ("orders.read",)),
        DemoUser("carol", ("org manager",), ("orders.read",)),
        DemoUser("dave", ()),
        DemoUser("maria", ("Manager for Europe",)),
    )
}


@dataclass(frozen=True, slots=True)
class _Grant:
    user: DemoUser
    session_id: str
    token_id: str
    issued_at: int
    expires_at: int


class DevIdentityProvider:
    """`await start()` binds 127.0.0.1 (port 0: the kernel chooses); `issuer` is then known.

    Access tokens are RS256 JWTs shaped like Keycloak's lightweight tokens, or with
    `opaque=True` random strings; either way only introspection tells who and what.
    """

    def __init__(
        self,
        *,
        opaque: bool = False,
        port: int = 0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.opaque = opaque
        self.port = port
        self._now = now
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._grants: dict[str, _Grant] = {}
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/realms/{REALM}"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/token"

    async def start(self) -> None:
        prefix = f"/realms/{REALM}"
        app = web.Application()
        app.router.add_get(f"{prefix}/.well-known/openid-configuration", self._discovery)
        app.router.add_post(f"{prefix}/protocol/openid-connect/token", self._token)
        app.router.add_post(f"{prefix}/protocol/openid-connect/token/introspect", self._introspect)
        app.router.add_get(f"{prefix}/protocol/openid-connect/certs", self._jwks)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- endpoints --------------------------------------------------------------------------

    async def _discovery(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "token_endpoint": self.token_endpoint,
                "introspection_endpoint": f"{self.token_endpoint}/introspect",
                "jwks_uri": f"{self.issuer}/protocol/openid-connect/certs",
                "grant_types_supported": ["password"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "password":
            return _oauth_error(400, "unsupported_grant_type", "only the password grant")
        if form.get("client_id") != PUBLIC_CLIENT_ID:
            return _oauth_error(401, "invalid_client", f"use client_id={PUBLIC_CLIENT_ID}")
        user = USERS.get(str(form.get("username", "")))
        password = str(form.get("password", ""))
        if user is None or not hmac.compare_digest(password.encode(), user.password.encode()):
            return _oauth_error(401, "invalid_grant", "Invalid user credentials")
        token, grant = self._issue(user)
        return web.json_response(
            {
                "access_token": token,
                "expires_in": grant.expires_at - grant.issued_at,
                "token_type": "Bearer",
                "session_state": grant.session_id,
                "scope": SCOPE,
            },
            headers={"Cache-Control": "no-store"},
        )

    async def _introspect(self, request: web.Request) -> web.Response:
        if not _is_introspecting_client(request.headers.get("Authorization", "")):
            return _oauth_error(
                401, "invalid_client", "Invalid client or Invalid client credentials"
            )
        form = await request.post()
        grant = self._grants.get(str(form.get("token", "")))
        if grant is None or grant.expires_at <= self._now():
            return web.json_response({"active": False})
        return web.json_response(self._introspection_document(grant))

    async def _jwks(self, _request: web.Request) -> web.Response:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        jwk.update({"kid": _KEY_ID, "use": "sig", "alg": "RS256"})
        return web.json_response({"keys": [jwk]})

    # -- tokens -----------------------------------------------------------------------------

    def _issue(self, user: DemoUser) -> tuple[str, _Grant]:
        issued_at = int(self._now())
        grant = _Grant(
            user=user,
            session_id=str(uuid.uuid4()),
            token_id=f"onltro:{uuid.uuid4()}",
            issued_at=issued_at,
            expires_at=issued_at + ACCESS_TOKEN_LIFESPAN_S,
        )
        if self.opaque:
            token = secrets.token_urlsafe(32)
        else:
            # Like Keycloak's lightweight access tokens: no roles, no audience; those come
            # from introspection only.
            claims = {
                "exp": grant.expires_at,
                "iat": grant.issued_at,
                "jti": grant.token_id,
                "iss": self.issuer,
                "sub": user.subject,
                "typ": "Bearer",
                "azp": PUBLIC_CLIENT_ID,
                "sid": grant.session_id,
                "scope": SCOPE,
            }
            token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": _KEY_ID})
        self._grants[token] = grant
        return token, grant

    def _introspection_document(self, grant: _Grant) -> dict[str, object]:
        user = grant.user
        document: dict[str, object] = {
            "active": True,
            "exp": grant.expires_at,
            "iat": grant.issued_at,
            "jti": grant.token_id,
            "iss": self.issuer,
            "aud": [INTROSPECTING_CLIENT_ID],
            "sub": user.subject,
            "typ": "Bearer",
            "azp": PUBLIC_CLIENT_ID,
            "sid": grant.session_id,
            "scope": SCOPE,
            "realm_access": {"roles": [f"default-roles-{REALM}", *user.realm_roles]},
            "email_verified": True,
            "preferred_username": user.username,
            "email": user.email,
            "client_id": PUBLIC_CLIENT_ID,
            "username": user.username,
            "token_type": "Bearer",
        }
        if user.client_roles:
            document["resource_access"] = {
                INTROSPECTING_CLIENT_ID: {"roles": list(user.client_roles)}
            }
        return document


def basic_authorization(client_id: str, secret: str) -> str:
    """An `Authorization: Basic` value per RFC 6749 §2.3.1 (form-encoded, then base64)."""
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def _is_introspecting_client(authorization: str) -> bool:
    """client_secret_basic (RFC 6749 §2.3.1: id and secret form-encoded before base64)."""
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(credentials, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    client_id, _, secret = decoded.partition(":")
    return unquote_plus(client_id) == INTROSPECTING_CLIENT_ID and hmac.compare_digest(
        unquote_plus(secret).encode(), INTROSPECTING_CLIENT_SECRET.encode()
    )


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)
