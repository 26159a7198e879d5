"""Launch a real Keycloak (Quarkus distribution, dev mode, in-memory H2) on loopback ports.

Used by the test session fixture and by local demo scripts. Every launch runs in a fresh
directory, so no run ever sees another run's realm data.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.net import free_port

KEYCLOAK_VERSION = "26.7.3"
REALM = "demo"
REALM_FILE = Path(__file__).resolve().parents[2] / "keycloak" / "demo-realm.json"
# A second realm, for several providers on one Keycloak: its client issues full access
# tokens (roles included), unlike demo's lightweight ones.
PARTNERS_REALM = "partners"
PARTNERS_REALM_FILE = REALM_FILE.with_name("partners-realm.json")
# Keycloak Authorization Services: resources region-europe / region-asia of forms-api, scopes
# read and write, a group policy for /regions/europe/managers (users' password: Passw0rd!).
AUTHZ_REALM_FILE = REALM_FILE.with_name("facts-realm.json")
AUTHZ_REALM = "facts"
AUTHZ_PASSWORD = "Passw0rd!"
AUTHZ_EXT_AUTHZ_SECRET = "ext-authz-secret-0123456789abcdef"
PARTNERS_EXT_AUTHZ_SECRET = "partnersextauthzsecret0123456789"
PARTNER_PORTAL_CLIENT_ID = "partner-portal"

EXT_AUTHZ_CLIENT_ID = "ext-authz"
EXT_AUTHZ_SECRET = "extauthzdemosecret0123456789abcd"
REPORTING_JOB_CLIENT_ID = "reporting-job"
REPORTING_JOB_SECRET = "reportingjobdemosecret0123456789"
WEB_APP_CLIENT_ID = "web-app"
# Its access tokens are bound to the DPoP key of the token request (dpop.bound.access.tokens).
DPOP_APP_CLIENT_ID = "dpop-app"
USER_PASSWORDS: Mapping[str, str] = {
    "alice": "alice-pw",
    "bob": "bob-pw",
    "carol": "carol-pw",
    "dave": "dave-pw",
    "erin": "erin-pw",
    "frank": "frank-pw",
    "maria": "maria-pw",
}

_LOG_TAIL_LINES = 60
_HTTP_TIMEOUT_S = 10.0


Progress = Callable[[str], None]


def print_nothing(message: str) -> None:
    """The default progress report: none."""


class KeycloakError(Exception):
    """Keycloak could not be fetched, started or asked something."""


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """`$EXTAUTHZ_CACHE_DIR/keycloak`, else `~/.cache/extauthz/keycloak`."""
    base = environ.get("EXTAUTHZ_CACHE_DIR")
    root = Path(base) if base else Path.home() / ".cache" / "extauthz"
    return root / "keycloak"


@dataclass(frozen=True, slots=True)
class KeycloakSettings:
    cache_dir: Path
    version: str = KEYCLOAK_VERSION
    realm_file: Path = REALM_FILE
    extra_realm_files: tuple[Path, ...] = (PARTNERS_REALM_FILE, AUTHZ_REALM_FILE)
    admin_username: str = "admin"
    admin_password: str = "admin"
    fetch_timeout_s: float = 600.0
    startup_timeout_s: float = 180.0
    stop_timeout_s: float = 30.0
    keep_workdir: bool = False
    # Options added to `start-dev`. Build-time ones (https-client-auth) make Keycloak redo
    # its augmentation, so such a variant names a prepared tree of its own.
    extra_options: tuple[str, ...] = ()
    prepared_variant: str = ""
    # Startup is over once this realm serves its discovery document.
    ready_realm: str = REALM

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> KeycloakSettings:
        return cls(cache_dir=default_cache_dir(environ))

    @property
    def dist_zip(self) -> Path:
        return self.cache_dir / f"keycloak-quarkus-dist-{self.version}.zip"

    @property
    def prepared_home(self) -> Path:
        # An unpacked tree whose Quarkus augmentation (lib/quarkus) was already done by an
        # earlier dev-mode start: copying it skips the ~25 s re-augmentation. It never
        # contains data/, so it carries no realm state.
        variant = f"-{self.prepared_variant}" if self.prepared_variant else ""
        return self.cache_dir / f"keycloak-{self.version}-dev{variant}"


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int
    body: bytes

    def json(self) -> dict[str, Any]:
        doc = json.loads(self.body)
        if not isinstance(doc, dict):
            raise KeycloakError(f"expected a JSON object, got {self.body[:200]!r}")
        return doc


def ensure_dist(settings: KeycloakSettings, progress: Progress = print_nothing) -> Path:
    """Return the distribution zip, fetching it with Maven into the cache when missing."""
    if settings.dist_zip.is_file():
        return settings.dist_zip
    progress(
        f"fetching Keycloak {settings.version} with Maven into {settings.cache_dir} "
        f"(once; can take minutes, at most {settings.fetch_timeout_s:.0f} s)"
    )
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    artifact = f"org.keycloak:keycloak-quarkus-dist:{settings.version}:zip"
    command = [
        "mvn",
        "-q",
        "-B",
        "dependency:copy",
        f"-Dartifact={artifact}",
        f"-DoutputDirectory={settings.cache_dir}",
    ]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=settings.fetch_timeout_s,
            check=False,
        )
    except FileNotFoundError as exc:
        raise KeycloakError(f"cannot fetch {artifact}: mvn is not on PATH") from exc
    except subprocess.TimeoutExpired as exc:
        output = _text(exc.stdout) + _text(exc.stderr)
        raise KeycloakError(
            f"mvn did not fetch {artifact} within {settings.fetch_timeout_s:.0f}s:\n{_tail(output)}"
        ) from exc
    if done.returncode != 0 or not settings.dist_zip.is_file():
        raise KeycloakError(
            f"mvn failed to fetch {artifact} (exit {done.returncode}):\n"
            f"{_tail(done.stdout + done.stderr)}"
        )
    return settings.dist_zip


def _unpack(zip_path: Path, into: Path) -> Path:
    """Extract the distribution into `into` and return its home directory."""
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(into)
        # zipfile drops Unix permission bits; restore them so bin/kc.sh is executable.
        for info in archive.infolist():
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                (into / info.filename).chmod(mode)
    homes = [p for p in into.iterdir() if p.is_dir() and (p / "bin" / "kc.sh").is_file()]
    if len(homes) != 1:
        raise KeycloakError(f"{zip_path} does not contain exactly one Keycloak home")
    return homes[0]


def _save_prepared_home(settings: KeycloakSettings, home: Path) -> None:
    """Publish `home` (minus data/) as the prepared tree, atomically; losing a race is fine."""
    if settings.prepared_home.exists():
        return
    staging = settings.cache_dir / f".staging-{uuid.uuid4().hex}"
    try:
        shutil.copytree(home, staging, symlinks=True, ignore=_ignore_top_level_data(home))
        staging.rename(settings.prepared_home)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)


def _ignore_top_level_data(home: Path) -> Any:
    def ignore(directory: str, names: list[str]) -> set[str]:
        return {"data"} if Path(directory) == home else set()

    return ignore


@dataclass(slots=True)
class Keycloak:
    """One running Keycloak process; build it with `Keycloak.start(settings)`."""

    settings: KeycloakSettings
    http_port: int
    management_port: int
    workdir: Path
    home: Path
    log_path: Path
    startup_seconds: float = 0.0
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def start(cls, settings: KeycloakSettings, progress: Progress = print_nothing) -> Keycloak:
        zip_path = ensure_dist(settings, progress)
        began = time.monotonic()
        workdir = Path(tempfile.mkdtemp(prefix="extauthz-keycloak-"))
        try:
            try:
                home, prepared = cls._lay_out(settings, zip_path, workdir)
            except (OSError, zipfile.BadZipFile) as exc:
                raise KeycloakError(f"cannot lay out Keycloak in {workdir}: {exc}") from exc
            http_port = free_port()
            management_port = free_port()
            while management_port == http_port:
                management_port = free_port()
            server = cls(
                settings=settings,
                http_port=http_port,
                management_port=management_port,
                workdir=workdir,
                home=home,
                log_path=workdir / "keycloak.log",
            )
            server._spawn()
            realms = ", ".join(f.stem for f in (settings.realm_file, *settings.extra_realm_files))
            progress(
                f"starting Keycloak {settings.version} on port {http_port} ({realms}); "
                f"usually 30-60 s, at most {settings.startup_timeout_s:.0f} s"
            )
            try:
                server._wait_ready(began + settings.startup_timeout_s)
            except BaseException:
                server.stop()
                raise
        except BaseException:
            if not settings.keep_workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            raise
        server.startup_seconds = time.monotonic() - began
        progress(f"Keycloak ready in {server.startup_seconds:.0f} s")
        if not prepared:
            _save_prepared_home(settings, home)
        return server

    @staticmethod
    def _lay_out(settings: KeycloakSettings, zip_path: Path, workdir: Path) -> tuple[Path, bool]:
        if settings.prepared_home.is_dir():
            home = workdir / settings.prepared_home.name
            shutil.copytree(settings.prepared_home, home, symlinks=True)
            prepared = True
        else:
            home = _unpack(zip_path, workdir)
            prepared = False
        import_dir = home / "data" / "import"
        import_dir.mkdir(parents=True, exist_ok=True)
        for realm_file in (settings.realm_file, *settings.extra_realm_files):
            shutil.copyfile(realm_file, import_dir / realm_file.name)
        return home, prepared

    def _spawn(self) -> None:
        command = [
            str(self.home / "bin" / "kc.sh"),
            "start-dev",
            "--import-realm",
            "--db=dev-mem",
            "--http-host=127.0.0.1",
            f"--http-port={self.http_port}",
            f"--http-management-port={self.management_port}",
            "--health-enabled=true",
            *self.settings.extra_options,
        ]
        env = {
            **os.environ,
            "KC_BOOTSTRAP_ADMIN_USERNAME": self.settings.admin_username,
            "KC_BOOTSTRAP_ADMIN_PASSWORD": self.settings.admin_password,
        }
        with self.log_path.open("wb") as log:
            # A new session makes the JVM the leader of its own process group, so stop()
            # reaches kc.sh and java together.
            try:
                self._process = subprocess.Popen(
                    command,
                    cwd=self.home,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise KeycloakError(f"cannot run {command[0]}: {exc}") from exc
        atexit.register(self.stop)

    def _wait_ready(self, deadline: float) -> None:
        ready_url = f"http://127.0.0.1:{self.management_port}/health/ready"
        last_problem = "no attempt made"
        while time.monotonic() < deadline:
            assert self._process is not None
            code = self._process.poll()
            if code is not None:
                raise KeycloakError(
                    f"Keycloak exited with code {code} before it was ready; log "
                    f"{self.log_path}:\n{self.log_tail()}"
                )
            reply = _request("GET", ready_url, timeout_s=2.0)
            if reply is not None and reply.status == 200:
                issuer = self.issuer_of(self.settings.ready_realm)
                discovery = _request("GET", f"{issuer}/.well-known/openid-configuration")
                if discovery is not None and discovery.status == 200:
                    return
                last_problem = f"realm {self.settings.ready_realm} not served"
            else:
                last_problem = "no answer" if reply is None else f"status {reply.status}"
            time.sleep(0.5)
        raise KeycloakError(
            f"Keycloak not ready after {self.settings.startup_timeout_s:.0f}s "
            f"({last_problem}); log {self.log_path}:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(log unreadable: {exc})"
        return _tail(text, lines)

    def stop(self) -> None:
        """Terminate the process group, wait (bounded), kill if needed, remove the workdir."""
        process, self._process = self._process, None
        if process is not None:
            atexit.unregister(self.stop)
            _terminate_group(process, self.settings.stop_timeout_s)
        if not self.settings.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Keycloak:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- endpoints ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def issuer(self) -> str:
        return self.issuer_of(REALM)

    def issuer_of(self, realm: str) -> str:
        return f"{self.base_url}/realms/{realm}"

    @property
    def token_endpoint(self) -> str:
        return self.token_endpoint_of(REALM)

    def token_endpoint_of(self, realm: str) -> str:
        return f"{self.issuer_of(realm)}/protocol/openid-connect/token"

    @property
    def introspection_endpoint(self) -> str:
        return f"{self.token_endpoint}/introspect"

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/certs"

    # -- grants --------------------------------------------------------------------------------

    def password_grant(
        self,
        username: str,
        password: str | None = None,
        client_id: str = WEB_APP_CLIENT_ID,
        scope: str = "openid",
        realm: str = REALM,
    ) -> dict[str, Any]:
        """Resource-owner password grant; the full token response (with id_token for openid)."""
        form = {
            "grant_type": "password",
            "client_id": client_id,
            "username": username,
            "password": USER_PASSWORDS[username] if password is None else password,
            "scope": scope,
        }
        return self._token_request(form, realm=realm)

    def dpop_password_grant(
        self,
        username: str,
        proof_for: Callable[[str, str], str],
        client_id: str = DPOP_APP_CLIENT_ID,
    ) -> dict[str, Any]:
        """A password grant with a DPoP proof: the access token comes back bound to the key
        that `proof_for(method, url)` signs with (RFC 9449 §5)."""
        endpoint = self.token_endpoint_of(REALM)
        form = {
            "grant_type": "password",
            "client_id": client_id,
            "username": username,
            "password": USER_PASSWORDS[username],
        }
        reply = self._must_answer(
            "POST", endpoint, form=form, headers={"DPoP": proof_for("POST", endpoint)}
        )
        if reply.status != 200:
            raise KeycloakError(
                f"DPoP token request failed with {reply.status}: {reply.body[:500]!r}"
            )
        return reply.json()

    def client_credentials(self, client_id: str, secret: str) -> dict[str, Any]:
        form = {"grant_type": "client_credentials"}
        return self._token_request(form, basic=(client_id, secret))

    def refresh(self, refresh_token: str, client_id: str = WEB_APP_CLIENT_ID) -> dict[str, Any]:
        form = {"grant_type": "refresh_token", "client_id": client_id}
        form["refresh_token"] = refresh_token
        return self._token_request(form)

    def _token_request(
        self, form: Mapping[str, str], basic: tuple[str, str] | None = None, realm: str = REALM
    ) -> dict[str, Any]:
        reply = self._must_answer("POST", self.token_endpoint_of(realm), form=form, basic=basic)
        if reply.status != 200:
            raise KeycloakError(
                f"token request ({form.get('grant_type')}) failed with {reply.status}: "
                f"{reply.body[:500]!r}"
            )
        return reply.json()

    def introspect(
        self,
        token: str,
        client_id: str = EXT_AUTHZ_CLIENT_ID,
        secret: str = EXT_AUTHZ_SECRET,
        token_type_hint: str | None = "access_token",  # noqa: S107 - not a secret
    ) -> HttpReply:
        """Raw RFC 7662 introspection with client_secret_basic; any status is returned."""
        form = {"token": token}
        if token_type_hint is not None:
            form["token_type_hint"] = token_type_hint
        return self._must_answer(
            "POST", self.introspection_endpoint, form=form, basic=(client_id, secret)
        )

    # -- admin REST API --------------------------------------------------------------------------

    def admin_token(self) -> str:
        form = {
            "grant_type": "password",
            "client_id": "admin-cli",
            "username": self.settings.admin_username,
            "password": self.settings.admin_password,
        }
        url = f"{self.base_url}/realms/master/protocol/openid-connect/token"
        reply = self._must_answer("POST", url, form=form)
        if reply.status != 200:
            raise KeycloakError(f"admin token request failed with {reply.status}: {reply.body!r}")
        return str(reply.json()["access_token"])

    def user_id(self, username: str, admin_token: str | None = None, realm: str = REALM) -> str:
        query = urllib.parse.urlencode({"username": username, "exact": "true"})
        url = f"{self.base_url}/admin/realms/{realm}/users?{query}"
        reply = self._must_answer("GET", url, bearer=admin_token or self.admin_token())
        users = json.loads(reply.body) if reply.status == 200 else None
        if not isinstance(users, list) or len(users) != 1:
            raise KeycloakError(f"user {username!r} lookup gave {reply.status}: {reply.body!r}")
        return str(users[0]["id"])

    def logout_user(self, username: str, realm: str = REALM) -> None:
        """Admin sign-out: removes every session of the user (POST .../users/{id}/logout)."""
        token = self.admin_token()
        user_id = self.user_id(username, token, realm)
        url = f"{self.base_url}/admin/realms/{realm}/users/{user_id}/logout"
        reply = self._must_answer("POST", url, bearer=token)
        if reply.status != 204:
            raise KeycloakError(
                f"logout of {username!r} failed with {reply.status}: {reply.body!r}"
            )

    def client_representation(
        self, client_id: str, admin_token: str | None = None
    ) -> dict[str, Any]:
        """The admin REST representation of a client of the demo realm."""
        token = admin_token or self.admin_token()
        query = urllib.parse.urlencode({"clientId": client_id})
        reply = self._must_answer(
            "GET", f"{self.base_url}/admin/realms/{REALM}/clients?{query}", bearer=token
        )
        clients = json.loads(reply.body) if reply.status == 200 else None
        if not isinstance(clients, list) or len(clients) != 1:
            raise KeycloakError(f"client {client_id!r} lookup gave {reply.status}: {reply.body!r}")
        representation: dict[str, Any] = clients[0]
        return representation

    def update_client(self, representation: Mapping[str, Any]) -> None:
        """PUT a (modified) client representation back through the admin REST API."""
        url = f"{self.base_url}/admin/realms/{REALM}/clients/{representation['id']}"
        reply = self._must_answer("PUT", url, bearer=self.admin_token(), json_body=representation)
        if reply.status != 204:
            raise KeycloakError(f"client update failed with {reply.status}: {reply.body!r}")

    def add_signing_key(self, realm: str, name: str, priority: int) -> None:
        """Key rotation: a new generated RS256 key that outranks the realm's current one, so
        tokens issued from now on carry its (new) `kid`."""
        token = self.admin_token()
        reply = self._must_answer("GET", f"{self.base_url}/admin/realms/{realm}", bearer=token)
        if reply.status != 200:
            raise KeycloakError(f"realm {realm!r} lookup gave {reply.status}: {reply.body!r}")
        component = {
            "name": name,
            "providerId": "rsa-generated",
            "providerType": "org.keycloak.keys.KeyProvider",
            "parentId": reply.json()["id"],
            "config": {
                "priority": [str(priority)],
                "enabled": ["true"],
                "active": ["true"],
                "keySize": ["2048"],
                "algorithm": ["RS256"],
            },
        }
        url = f"{self.base_url}/admin/realms/{realm}/components"
        reply = self._must_answer("POST", url, bearer=token, json_body=component)
        if reply.status != 201:
            raise KeycloakError(f"adding a key failed with {reply.status}: {reply.body!r}")

    def _must_answer(
        self,
        method: str,
        url: str,
        *,
        form: Mapping[str, str] | None = None,
        basic: tuple[str, str] | None = None,
        bearer: str | None = None,
        json_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpReply:
        reply = _request(
            method, url, form=form, basic=basic, bearer=bearer, json_body=json_body, headers=headers
        )
        if reply is None:
            raise KeycloakError(f"{method} {url}: no answer from Keycloak")
        return reply


def _request(
    method: str,
    url: str,
    *,
    form: Mapping[str, str] | None = None,
    basic: tuple[str, str] | None = None,
    bearer: str | None = None,
    json_body: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = _HTTP_TIMEOUT_S,
) -> HttpReply | None:
    """One HTTP exchange; any status is a reply, a connection failure is None."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    if json_body is not None:
        data = json.dumps(json_body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback
    request.add_header("Accept", "application/json")
    if json_body is not None:
        request.add_header("Content-Type", "application/json")
    elif data is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    if basic is not None:
        # RFC 6749 §2.3.1: form-encode id and secret before base64.
        pair = f"{urllib.parse.quote_plus(basic[0])}:{urllib.parse.quote_plus(basic[1])}"
        request.add_header("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())
    if bearer is not None:
        request.add_header("Authorization", f"Bearer {bearer}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:  # noqa: S310 - loopback
            return HttpReply(status=resp.status, body=resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return HttpReply(status=exc.code, body=exc.read())
    except (urllib.error.URLError, OSError):
        return None


def _terminate_group(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout_s)


def _text(output: str | bytes | None) -> str:
    if output is None:
        return ""
    return output.decode(errors="replace") if isinstance(output, bytes) else output


def _tail(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])
