"""The whole stack on loopback for fault and soak runs, and a bounded load loop through it.

Real Envoy (envoy/envoy.yaml) → our server as a process → the Keycloak stand-in (on its own
event loop in a thread, so faults can be switched from the test) and a real redis-server.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import http.client
import json
import random
import re
import secrets
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.authz_process import AuthzProcess
from tests.support.configs import DEMO_CLIENT_SECRET, seed_config_text
from tests.support.echo_upstream import BackgroundEchoUpstream
from tests.support.envoy import LOOPBACK, EnvoyProcess
from tests.support.keycloak_standin import Fault, KeycloakStandIn
from tests.support.keycloak_standin import active_document as standin_active_document

_THREAD_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 5.0
# Statuses a client may see through Envoy: our decisions, and Envoy's fail-closed 503.
CLEAN_STATUSES = frozenset({200, 401, 403, 503})


class BackgroundStandIn:
    """The Keycloak stand-in on its own event loop in a daemon thread.

    `fault` and `documents` are plain attributes read by the handler on each call, so the
    test thread switches them directly; `go_down()` closes the port, `come_back()` reopens
    the same one.
    """

    def __init__(self) -> None:
        self.standin = KeycloakStandIn()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="standin", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._run(self.standin.start())

    def _run(self, coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(_THREAD_TIMEOUT_S)

    def go_down(self) -> None:
        self._run(self.standin.stop())

    def come_back(self) -> None:
        self._run(self.standin.start())

    def set_fault(self, fault: Fault, delay_s: float = 1.0) -> None:
        self.standin.delay_s = delay_s
        self.standin.fault = fault

    def stop(self) -> None:
        self._run(self.standin.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_THREAD_TIMEOUT_S)
        self._loop.close()


def active_document(subject: str, roles: Iterable[str]) -> dict[str, object]:
    """The stand-in's answer for `subject`, valid for longer than any run here."""
    return standin_active_document(subject, roles, subject=subject, lifetime_s=3600)


# Kinds of request the load sends; only the first two may ever be allowed.
CACHED, FRESH = "cached", "fresh"
VALID_KINDS = frozenset({CACHED, FRESH})
INACTIVE, UNKNOWN, REFRESH_TYPE, EXPIRED = "inactive", "unknown", "refresh", "expired"
MALFORMED, NO_TOKEN, IN_QUERY = "malformed", "none", "query"
KIND_WEIGHTS = {
    CACHED: 25,
    FRESH: 25,
    INACTIVE: 10,
    UNKNOWN: 15,
    REFRESH_TYPE: 5,
    EXPIRED: 5,
    MALFORMED: 5,
    NO_TOKEN: 5,
    IN_QUERY: 5,
}
SMUGGLED_SUBJECT = "smuggled-root"


@dataclass
class Tokens:
    """The token population of one run: every token handed out is remembered (for the secrets
    check), valid ones with their subject (for the upstream check)."""

    standin: KeycloakStandIn
    cached_pool: int = 8
    valid: dict[str, str] = field(default_factory=dict)  # token → subject
    all_tokens: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _serial: int = 0
    cached: list[str] = field(default_factory=list)

    def _mint(self, kind: str) -> str:
        with self._lock:
            self._serial += 1
            serial = self._serial
        token = f"hz{kind}{serial}x{secrets.token_hex(16)}"
        with self._lock:
            self.all_tokens.add(token)
        return token

    def valid_token(self, kind: str) -> str:
        token = self._mint(kind)
        subject = f"sub-{kind}-{token[-8:]}"
        self.standin.documents[token] = active_document(subject, ["manager"])
        with self._lock:
            self.valid[token] = subject
        return token

    def make_cached_pool(self) -> None:
        self.cached = [self.valid_token(CACHED) for _ in range(self.cached_pool)]

    def token_for(self, kind: str, rng: random.Random) -> str | None:
        if kind == CACHED:
            return rng.choice(self.cached)
        if kind == FRESH:
            return self.valid_token(FRESH)
        if kind in (NO_TOKEN,):
            return None
        token = self._mint(kind)
        if kind == INACTIVE:
            self.standin.documents[token] = {"active": False}
        elif kind == REFRESH_TYPE:
            self.standin.documents[token] = {
                **active_document("sub-refresh", ["manager", "admin"]),
                "token_type": "Refresh",
            }
        elif kind == EXPIRED:
            self.standin.documents[token] = {
                **active_document("sub-expired", ["manager"]),
                "exp": int(time.time()) - 60,
            }
        return token


@dataclass(frozen=True)
class Result:
    kind: str
    token: str | None
    sent: float
    done: float
    status: int  # 0: no HTTP answer at all (connection error, timeout)
    path: str


def _request_line(kind: str, token: str | None, path: str) -> tuple[str, dict[str, str]]:
    headers = {"Host": "app.example", "X-Auth-Subject": SMUGGLED_SUBJECT, "X-Auth-Roles": "admin"}
    if token is None:
        return path, headers
    if kind == IN_QUERY:
        return f"{path}?access_token={token}", headers
    if kind == MALFORMED:
        headers["Authorization"] = f"Bearer {token} extra"
    else:
        headers["Authorization"] = f"Bearer {token}"
    return path, headers


@dataclass
class LoadRunner:
    """A bounded load loop: `threads` clients with keep-alive connections to Envoy, at most
    `max_requests` requests and until `stop()`; every answer is kept as a Result."""

    envoy: EnvoyProcess
    tokens: Tokens
    label: str
    threads: int = 6
    max_requests: int = 4000
    pause_s: float = 0.01
    kinds: dict[str, int] = field(default_factory=lambda: dict(KIND_WEIGHTS))
    results: list[Result] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _issued: int = 0
    _pool: concurrent.futures.ThreadPoolExecutor | None = None
    _futures: list[concurrent.futures.Future[None]] = field(default_factory=list)

    def start(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(self.threads, f"load-{self.label}")
        self._futures = [self._pool.submit(self._client, seed) for seed in range(self.threads)]

    def stop(self) -> list[Result]:
        self._stop.set()
        for future in self._futures:
            future.result(REQUEST_TIMEOUT_S * 3)
        assert self._pool is not None
        self._pool.shutdown()
        return self.snapshot()

    def snapshot(self) -> list[Result]:
        with self._lock:
            return list(self.results)

    def _take(self) -> int | None:
        with self._lock:
            if self._issued >= self.max_requests:
                return None
            self._issued += 1
            return self._issued

    def _client(self, seed: int) -> None:
        rng = random.Random(f"{self.label}-{seed}")
        kinds, weights = list(self.kinds), list(self.kinds.values())
        connection = http.client.HTTPConnection(
            LOOPBACK, self.envoy.listen_port, timeout=REQUEST_TIMEOUT_S
        )
        try:
            while not self._stop.is_set():
                serial = self._take()
                if serial is None:
                    return
                kind = rng.choices(kinds, weights)[0]
                token = self.tokens.token_for(kind, rng)
                path = f"/api/forms/{self.label}/{serial}"
                target, headers = _request_line(kind, token, path)
                sent = time.monotonic()
                try:
                    connection.request("GET", target, headers=headers)
                    response = connection.getresponse()
                    response.read()
                    status = response.status
                    if response.getheader("connection", "").lower() == "close":
                        connection.close()
                except (OSError, http.client.HTTPException):
                    connection.close()
                    status = 0
                result = Result(kind, token, sent, time.monotonic(), status, path)
                with self._lock:
                    self.results.append(result)
                self._stop.wait(self.pause_s)
        finally:
            connection.close()


def status_counts(results: Iterable[Result]) -> dict[str, int]:
    return {
        str(status): count for status, count in sorted(Counter(r.status for r in results).items())
    }


def first_valid_200_after(
    results: Iterable[Result], moment: float, kinds: Iterable[str] = (FRESH,)
) -> float | None:
    """Milliseconds from `moment` to the first 200 for a valid token sent after it."""
    wanted = frozenset(kinds)
    done = [r.done for r in results if r.kind in wanted and r.status == 200 and r.sent >= moment]
    return round((min(done) - moment) * 1000, 1) if done else None


def wait_until(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while time.monotonic() < deadline:
        if condition():
            return True
        pause.wait(poll_s)
    return condition()


def assert_only_valid_identities_upstream(
    upstream: BackgroundEchoUpstream, tokens: Tokens, label: str
) -> int:
    """Every request of this run that reached the upstream carries a valid token and that
    token's subject; a client-sent identity never survives. Returns how many arrived."""
    prefix = f"/api/forms/{label}/"
    arrived = [r for r in upstream.requests if r.path.startswith(prefix)]
    for request in arrived:
        authorization = request.headers.get("authorization", "")
        token = authorization.removeprefix("Bearer ")
        assert token in tokens.valid, f"{request.path} reached the upstream without a valid token"
        assert request.headers.get("x-auth-subject") == tokens.valid[token]
        assert request.headers.get("x-auth-roles") == "creator"
        assert SMUGGLED_SUBJECT not in json.dumps(request.headers)
        assert [v for k, v in request.raw_headers if k == "x-auth-subject"] == [tokens.valid[token]]
    return len(arrived)


def assert_statuses(results: Iterable[Result]) -> None:
    """Only valid tokens are ever allowed, and Envoy answers everything with a clean status."""
    for result in results:
        assert result.status in CLEAN_STATUSES, f"{result.kind} {result.path}: {result.status}"
        if result.kind not in VALID_KINDS:
            assert result.status != 200, f"{result.kind} token allowed: {result.path}"


def scrape_metrics(http_port: int) -> str:
    url = f"http://{LOOPBACK}:{http_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode("utf-8"))


def metric_value(metrics_text: str, name: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


# Every token this suite mints has this shape, so a log or metrics text can be searched for
# any of them (or a recognisable piece of one) in one pass.
TOKEN_SHAPE = re.compile(r"hz[a-z]+[0-9]+x[0-9a-f]{4,}")


def find_secrets(texts: dict[str, str], secret_values: Iterable[str] = ()) -> list[str]:
    """Where a minted token (even a piece of one) or one of `secret_values` occurs in the
    texts (name → content), as "<text name>: <first characters>"."""
    leaks = []
    for name, text in texts.items():
        leaks += [f"{name}: {match[:10]}…" for match in set(TOKEN_SHAPE.findall(text))]
        leaks += [f"{name}: {value[:4]}…" for value in secret_values if value and value in text]
    return leaks


def client_secret_forms(client_id: str, secret: str) -> tuple[str, ...]:
    """The secret as it could leak: plain, and inside the client_secret_basic header."""
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode("ascii")
    return (secret, basic)


def hardening_config_text(issuer: str, *, grpc_port: int, redis_url: str, **cache: object) -> str:
    return seed_config_text(
        issuer,
        timeout_ms=150,
        server={"grpc_listen": f"{LOOPBACK}:{grpc_port}", "grace_period_s": 1},
        cache={"redis_url": redis_url, "negative_ttl_seconds": 5, **cache},
    )


@dataclass
class AuthzRuns:
    """Our server as a process on a fixed gRPC port (Envoy keeps pointing at it across a
    restart); every run's log is kept for the secrets check."""

    config_text: str
    workdir: Path
    current: AuthzProcess | None = None
    logs: list[Path] = field(default_factory=list)
    metrics_texts: list[str] = field(default_factory=list)
    _runs: int = 0

    def start(self) -> AuthzProcess:
        self._runs += 1
        run_dir = self.workdir / f"run{self._runs}"
        run_dir.mkdir(parents=True)
        self.current = AuthzProcess.start(self.config_text, run_dir)
        self.logs.append(self.current.log_path)
        return self.current

    def scrape(self) -> str:
        assert self.current is not None
        text = scrape_metrics(self.current.http_port)
        self.metrics_texts.append(text)
        return text

    def stop(self) -> None:
        if self.current is not None:
            self.current.stop()

    def texts(self) -> dict[str, str]:
        texts = {str(p): p.read_text(encoding="utf-8", errors="replace") for p in self.logs}
        texts.update({f"metrics#{i}": t for i, t in enumerate(self.metrics_texts)})
        return texts


CLIENT_SECRET = DEMO_CLIENT_SECRET
