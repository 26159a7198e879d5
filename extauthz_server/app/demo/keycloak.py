"""`demo --keycloak`: a real Keycloak (Quarkus distribution from Maven Central, dev mode,
in-memory database) on loopback with the demo realm, as the tests run it.

The distribution is cached in `$EXTAUTHZ_CACHE_DIR/keycloak` (default
`~/.cache/extauthz/keycloak`), shared with the test suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from extauthz_server.app.demo.idp import (
    INTROSPECTING_CLIENT_ID,
    INTROSPECTING_CLIENT_SECRET,
    PUBLIC_CLIENT_ID,
    basic_authorization,
)

KEYCLOAK_VERSION = "26.7.3"
REALM = "demo"
START_TIMEOUT_S = 180.0
FETCH_TIMEOUT_S = 600.0
WARM_UP_INTROSPECTIONS = 30


class KeycloakUnavailable(Exception):
    """Something Keycloak needs is missing; the message says what."""


def _cache_dir(environ: Mapping[str, str]) -> Path:
    base = environ.get("EXTAUTHZ_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "extauthz") / "keycloak"


def _realm_file() -> Path | None:
    """keycloak/demo-realm.json of the working directory, else of the source checkout."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = root / "keycloak" / "demo-realm.json"
        if candidate.is_file():
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalKeycloak:
    def __init__(self, cache_dir: Path, realm_file: Path, http_port: int = 0) -> None:
        self._cache_dir = cache_dir
        self._realm_file = realm_file
        self._http_port = http_port or _free_port()
        self._management_port = _free_port()
        self._workdir: Path | None = None
        self._process: asyncio.subprocess.Process | None = None

    @classmethod
    def prepare(cls, environ: Mapping[str, str], http_port: int = 0) -> LocalKeycloak:
        """Check the prerequisites up front, so the user hears at once what is missing."""
        cache_dir = _cache_dir(environ)
        missing = []
        if shutil.which("java") is None:
            missing.append(
                "java (a JDK 17 or newer; Debian: apt-get install openjdk-17-jdk-headless)"
            )
        if not cls._dist_zip(cache_dir).is_file() and shutil.which("mvn") is None:
            missing.append(
                f"mvn, to fetch Keycloak {KEYCLOAK_VERSION} once into {cache_dir} "
                "(Debian: apt-get install maven)"
            )
        realm_file = _realm_file()
        if realm_file is None:
            missing.append(
                "keycloak/demo-realm.json (run from the extauthz-server source checkout)"
            )
        if missing or realm_file is None:
            raise KeycloakUnavailable("missing " + "; ".join(missing))
        return cls(cache_dir, realm_file, http_port)

    @staticmethod
    def _dist_zip(cache_dir: Path) -> Path:
        return cache_dir / f"keycloak-quarkus-dist-{KEYCLOAK_VERSION}.zip"

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self._http_port}/realms/{REALM}"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/token"

    async def start(self) -> None:
        zip_path = await self._fetch()
        self._workdir = Path(tempfile.mkdtemp(prefix="extauthz-demo-keycloak-"))
        home = await asyncio.to_thread(self._lay_out, zip_path, self._workdir)
        log_path = self._workdir / "keycloak.log"
        with log_path.open("wb") as log:
            self._process = await asyncio.create_subprocess_exec(
                str(home / "bin" / "kc.sh"),
                "start-dev",
                "--import-realm",
                "--db=dev-mem",
                "--http-host=127.0.0.1",
                f"--http-port={self._http_port}",
                f"--http-management-port={self._management_port}",
                "--health-enabled=true",
                cwd=home,
                env={
                    **os.environ,
                    "KC_BOOTSTRAP_ADMIN_USERNAME": "admin",
                    "KC_BOOTSTRAP_ADMIN_PASSWORD": "admin",
                },
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        print(f"starting Keycloak {KEYCLOAK_VERSION} (log: {log_path})…", flush=True)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await self._wait_ready()
        except TimeoutError:
            raise RuntimeError(
                f"Keycloak not ready after {START_TIMEOUT_S:.0f}s; see {log_path}"
            ) from None

    async def _fetch(self) -> Path:
        zip_path = self._dist_zip(self._cache_dir)
        if zip_path.is_file():
            return zip_path
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        print(f"fetching Keycloak {KEYCLOAK_VERSION} with Maven (once)…", flush=True)
        process = await asyncio.create_subprocess_exec(
            "mvn",
            "-q",
            "-B",
            "dependency:copy",
            f"-Dartifact=org.keycloak:keycloak-quarkus-dist:{KEYCLOAK_VERSION}:zip",
            f"-DoutputDirectory={self._cache_dir}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), FETCH_TIMEOUT_S)
        if process.returncode != 0 or not zip_path.is_file():
            tail = output.decode(errors="replace")[-2000:]
            raise RuntimeError(f"mvn could not fetch Keycloak:\n{tail}")
        return zip_path

    def _lay_out(self, zip_path: Path, workdir: Path) -> Path:
        # The tests leave an augmented copy (no data/) beside the zip; it starts faster.
        prepared = self._cache_dir / f"keycloak-{KEYCLOAK_VERSION}-dev"
        if prepared.is_dir():
            home = workdir / prepared.name
            shutil.copytree(prepared, home, symlinks=True)
        else:
            with zipfile.ZipFile(zip_path) as archive:
                archive.extractall(workdir)
                for info in archive.infolist():
                    mode = (info.external_attr >> 16) & 0o777
                    if mode:
                        (workdir / info.filename).chmod(mode)
            (home,) = [p for p in workdir.iterdir() if (p / "bin" / "kc.sh").is_file()]
        import_dir = home / "data" / "import"
        import_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._realm_file, import_dir / self._realm_file.name)
        return home

    async def _wait_ready(self) -> None:
        ready = f"http://127.0.0.1:{self._management_port}/health/ready"
        discovery = f"{self.issuer}/.well-known/openid-configuration"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while True:
                if self._process is not None and self._process.returncode is not None:
                    raise RuntimeError(f"Keycloak exited with {self._process.returncode}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(ready) as health, session.get(discovery) as doc:
                        if health.status == 200 and doc.status == 200:
                            await self._warm_up(session)
                            return
                await asyncio.sleep(0.5)

    async def _warm_up(self, session: aiohttp.ClientSession) -> None:
        """A fresh JVM answers its first introspections slower than Envoy's 250 ms budget."""
        form = {
            "grant_type": "password",
            "client_id": PUBLIC_CLIENT_ID,
            "username": "bob",
            "password": "bob-pw",
        }
        async with session.post(self.token_endpoint, data=form) as resp:
            token = (await resp.json())["access_token"]
        auth = {
            "Authorization": basic_authorization(
                INTROSPECTING_CLIENT_ID, INTROSPECTING_CLIENT_SECRET
            )
        }
        for _ in range(WARM_UP_INTROSPECTIONS):
            url = f"{self.token_endpoint}/introspect"
            async with session.post(url, data={"token": token}, headers=auth) as resp:
                await resp.read()

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        if self._workdir is not None:
            await asyncio.to_thread(shutil.rmtree, self._workdir, True)
            self._workdir = None
