"""The pure core imports no network library: it can be tested and reasoned about without I/O."""

from __future__ import annotations

import subprocess
import sys

CORE = ["tokens", "paths", "identity", "roles", "policy", "decision", "headers", "request"]
CORE = [f"core.{name}" for name in [*CORE, "authorizer", "identity_token"]]
CORE += ["identity.access_token", "revocation.logout_token"]
PROBE = """
import sys
for name in {core!r}:
    __import__("extauthz_server." + name)
edge = ("aiohttp", "grpc", "redis", "extauthz_server._proto")
print(sorted(m for m in sys.modules if m == "grpc" or m.startswith(tuple(e + "." for e in edge))
             or m in edge))
"""


def test_core_modules_import_no_network_library() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(core=CORE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert result.stdout.strip() == "[]", f"the core pulled in: {result.stdout}"
