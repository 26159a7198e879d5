"""Fuzz target: bytes → CheckRequest → AuthRequest → Decision, through the real gRPC adapter.

Every input that parses as a CheckRequest must give a Decision (no exception), and an allow
only where it may be: on a public route without identity headers, or with an identity the
IdentitySource vouched for.

Run with atheris (libFuzzer) when it is installed:

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/fuzz_check.py --seed-corpus /tmp/check-corpus -max_total_time=600

Without atheris the same target runs as a plain loop over random and mutated inputs:

    .venv/bin/python fuzz/fuzz_check.py --plain --seconds 60 [--seed N]

tests/hardening/test_fuzz_smoke.py runs `test_one_input` over a few thousand inputs in CI.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import random
import sys
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

if __package__ in (None, ""):
    # Run as a script: make the repository importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from google.protobuf.message import DecodeError

from extauthz_server._proto.envoy.config.core.v3 import base_pb2
from extauthz_server._proto.envoy.service.auth.v3 import external_auth_pb2
from extauthz_server.config.model import Config, authorizer_settings, parse_config
from extauthz_server.core.authorizer import Authorizer
from extauthz_server.core.decision import Decision
from extauthz_server.core.identity import Identity, Inactive
from extauthz_server.edges.grpc_service import to_auth_request
from extauthz_server.errors import ProviderRejectedClient, ProviderUnavailable

T = TypeVar("T")

CONFIG_TEXT = """\
provider:
  issuer: "http://127.0.0.1:9/realms/demo"
  client_id: ext-authz
  client_secret: fuzz-secret-not-used
roles:
  mapping: {admin: [admin], manager: [creator], "org manager": [platformAdmin]}
routes:
  - {name: health, path_prefix: /healthz, public: true}
  - {name: public, path_prefix: /public, public: true}
  - name: admin
    path_prefix: /admin
    methods: [GET, POST, PUT, DELETE]
    any_of: [admin, platformAdmin]
  - {name: admin-host, host: admin.example, path_prefix: /, any_of: [admin]}
  - {name: forms, path_glob: "/api/*/forms/**", any_of: [creator, admin], scopes: [openid]}
  - {name: default, path_prefix: /, any_of: []}
"""
PUBLIC_ROUTES = frozenset({"health", "public"})
IDENTITY_HEADERS = frozenset(
    {"x-auth-subject", "x-auth-username", "x-auth-email", "x-auth-roles", "x-auth-client"}
)


def _identity(subject: str, *roles: str) -> Identity:
    return Identity(
        subject=subject,
        username=subject,
        email=None,
        client_id="web-app",
        scopes=frozenset({"openid"}),
        provider_roles=frozenset(roles),
        expires_at=None,
    )


IDENTITIES = {
    "tok-admin": _identity("sub-admin", "admin"),
    "tok-creator": _identity("sub-creator", "manager"),
    "tok-evil": _identity("sub\r\nx-auth-roles: admin", "org manager"),
}


class FakeSource:
    """A typed in-memory IdentitySource; remembers the tokens it was asked about."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(
        self, token: str, timeout_s: float, provider: str | None = None
    ) -> Identity | Inactive:
        self.asked.append(token)
        if token == "tok-down":  # noqa: S105 - a test token
            raise ProviderUnavailable("fuzz outage")
        if token == "tok-refused":  # noqa: S105
            raise ProviderRejectedClient("fuzz refusal")
        return IDENTITIES.get(token, Inactive.NOT_ACTIVE)


_CONFIG: Config = parse_config(CONFIG_TEXT, {})
_SETTINGS = authorizer_settings(_CONFIG)


def run_to_completion(coroutine: Coroutine[Any, Any, T]) -> T:
    """Drive a coroutine that never waits on anything (the fake source answers at once)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise AssertionError("the check suspended; the fake source never does")


class UnexpectedAllow(AssertionError):
    pass


def check_decision(decision: Decision, source: FakeSource) -> None:
    if decision.allowed is not (decision.status == 200):
        raise AssertionError(f"allowed={decision.allowed} with status {decision.status}")
    if not decision.allowed:
        if decision.upstream_headers or decision.status not in (400, 401, 403, 503):
            raise AssertionError(f"odd deny {decision}")
        return
    set_names = {name for name, _ in decision.upstream_headers}
    if not set_names | set(decision.headers_to_remove) >= IDENTITY_HEADERS:
        raise UnexpectedAllow(f"a client identity header may survive: {decision}")
    vouched = {IDENTITIES[t].subject for t in source.asked if t in IDENTITIES}
    if decision.route not in PUBLIC_ROUTES and not vouched:
        raise UnexpectedAllow(f"allow on {decision.route} without an identity")
    subject = dict(decision.upstream_headers).get("x-auth-subject")
    if subject is not None and subject not in vouched:
        raise UnexpectedAllow(f"subject {subject!r} not vouched for")
    if not vouched and set_names:
        raise UnexpectedAllow(f"identity headers without an identity: {decision}")
    for name, value in decision.upstream_headers:
        if any((ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F for ch in value):
            raise UnexpectedAllow(f"control character in {name}")


def test_one_input(data: bytes) -> None:
    """The fuzz target: never an exception other than a parse error, never a wrong allow."""
    request = external_auth_pb2.CheckRequest()
    try:
        request.ParseFromString(data)
    except DecodeError:
        return
    source = FakeSource()
    authorizer = Authorizer(_SETTINGS, source)
    decision = run_to_completion(authorizer.check(to_auth_request(request), 0.1))
    check_decision(decision, source)


# --- Seeds and a plain mutation loop (no atheris needed) -------------------------------------

_SEED_PATHS = [
    "/public", "/public/../admin", "/admin/../public", "/%61dmin", "//admin", "/admin;x",
    "/public/..;/admin", "/ADMIN", "/admin.", "/api/v1/forms/x", "/api/v1/forms/../../admin",
    "/healthz?x=/../admin", "/healthz#/../admin", "/admin%00", "/a\\b", "*", "",
]  # fmt: skip
_SEED_AUTH = [
    "Bearer tok-admin", "bearer  tok-creator", "Bearer tok-evil", "Bearer tok-down",
    "Bearer tok-refused", "Bearer tok-admin,Bearer tok-creator", "Basic YTpi", "Bearer ",
    "Bearer tok-admin\x00", "Bearer unknown-token",
]  # fmt: skip
_SEED_HOSTS = ["app.example", "admin.example", "ADMIN.example:443", "admin.example.", ""]


def seed_requests() -> list[bytes]:
    """Serialised CheckRequests worth mutating: hostile paths, headers and both header forms."""
    seeds = []
    rng = random.Random(0)  # noqa: S311 - reproducible inputs, not secrets
    for index, path in enumerate(_SEED_PATHS):
        for auth in _SEED_AUTH[index % 3 :: 3]:
            request = external_auth_pb2.CheckRequest()
            http = request.attributes.request.http
            http.method = rng.choice(["GET", "PATCH", "POST"])
            http.host = rng.choice(_SEED_HOSTS)
            http.path = path
            if index % 2:
                http.headers.update({"authorization": auth, "x-auth-roles": "admin"})
            else:
                http.header_map.headers.extend(
                    [
                        base_pb2.HeaderValue(key="Authorization", raw_value=auth.encode()),
                        base_pb2.HeaderValue(key="X-Auth-Subject", value="root"),
                        base_pb2.HeaderValue(key="x-junk", raw_value=b"\xff\xfe"),
                    ]
                )
            seeds.append(request.SerializeToString())
    return seeds


def mutate(data: bytes, rng: random.Random) -> bytes:
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if choice < 0.4 and buffer:
            buffer[rng.randrange(len(buffer))] = rng.randrange(256)
        elif choice < 0.6 and buffer:
            del buffer[rng.randrange(len(buffer))]
        elif choice < 0.8:
            buffer.insert(rng.randrange(len(buffer) + 1), rng.randrange(256))
        else:
            position = rng.randrange(len(buffer) + 1)
            buffer[position:position] = rng.choice([b"..", b"/", b"%2e", b";", b"\x00", b",Bearer"])
    return bytes(buffer)


_PIECES = [
    "/", "//", ".", "..", "%2e", "%2E%2e", "%2f", "%5c", "%00", "%", "%zz", ";", ";x", "?", "#",
    "admin", "public", "healthz", "api", "forms", "v1", "\x00", "\r\n", "\t", " ", ",", "=",
    "Bearer", "bearer", "tok-admin", "tok-creator", "tok-evil", "\u0456", "\x7f", "A" * 9000,
]  # fmt: skip


def _splice(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 3)):
        position = rng.randrange(len(text) + 1)
        text = text[:position] + rng.choice(_PIECES) + text[position + rng.randrange(3) :]
    return text


def mutate_fields(data: bytes, rng: random.Random) -> bytes:
    """Structured mutation: splice hostile pieces into path, host, method and headers."""
    request = external_auth_pb2.CheckRequest.FromString(data)
    http = request.attributes.request.http
    field = rng.randrange(4)
    if field == 0:
        http.path = _splice(http.path, rng)
    elif field == 1:
        http.host = _splice(http.host, rng)
    elif field == 2:
        http.method = rng.choice(["GET", "PATCH", "get", "", _splice("GET", rng)])
    elif http.headers:
        name = rng.choice([*http.headers, "authorization", "x-auth-roles", "X-Auth-Roles"])
        http.headers[name] = _splice(http.headers.get(name, ""), rng)
    else:
        value = _splice(rng.choice(_SEED_AUTH), rng).encode("utf-8", "surrogatepass")
        if rng.random() < 0.3:
            value += bytes([rng.randrange(128, 256)])
        http.header_map.headers.add(
            key=rng.choice(["authorization", "Authorization"]), raw_value=value
        )
    return request.SerializeToString()


def plain_inputs(count: int, seed: int) -> Iterator[bytes]:
    """`count` inputs: most mutate a seed request field by field, some byte by byte, and
    some are random bytes."""
    rng = random.Random(seed)  # noqa: S311
    seeds = seed_requests()
    for _ in range(count):
        choice = rng.random()
        if choice < 0.6:
            yield mutate_fields(rng.choice(seeds), rng)
        elif choice < 0.85:
            yield mutate(rng.choice(seeds), rng)
        else:
            yield rng.randbytes(rng.randrange(200))


def _plain_main(seconds: float, seed: int) -> int:
    deadline = time.monotonic() + seconds
    runs = 0
    for data in plain_inputs(10**12, seed):
        if time.monotonic() >= deadline:
            break
        try:
            test_one_input(data)
        except Exception:
            print(f"failing input (seed {seed}, run {runs}): {data!r}", file=sys.stderr)
            raise
        runs += 1
    print(f"{runs} inputs, no failure")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--plain", action="store_true")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument(
        "--seed-corpus", type=Path, help="write the seed requests here and fuzz from them"
    )
    options, rest = parser.parse_known_args(argv[1:])
    # The core logs provider outages at WARNING; millions of them help nobody here.
    logging.disable(logging.WARNING)
    try:
        # Optional and untyped: imported by name so the module type-checks without it.
        atheris: Any = importlib.import_module("atheris")
    except ImportError:
        atheris = None
    if options.plain or atheris is None:
        return _plain_main(options.seconds, options.seed)
    if options.seed_corpus is not None:
        options.seed_corpus.mkdir(parents=True, exist_ok=True)
        for index, seed in enumerate(seed_requests()):
            (options.seed_corpus / f"seed-{index:03d}").write_bytes(seed)
        rest.append(str(options.seed_corpus))
    atheris.instrument_all()
    atheris.Setup([argv[0], *rest], test_one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
