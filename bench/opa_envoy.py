"""The OPA-Envoy plugin (OPA with the Envoy ext_authz gRPC server built in) as a peer of our
server: built from its Go module once into a cache outside the repository, then started
with a configuration written into the benchmark's work directory.

The build is a throw-away module that requires one tagged version and builds the plugin's
`cmd/opa-envoy-plugin` package (`go install …@latest` needs the version list, which the
module proxy here refuses).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.peer.cpus import Pinning
from bench.stack import stop_process
from tests.support.net import free_port

MODULE = "github.com/open-policy-agent/opa-envoy-plugin"
MAIN_PACKAGE = f"{MODULE}/cmd/opa-envoy-plugin"
# The newest tag the module proxy serves here; the others are tried, once each, only if it
# is refused.
VERSIONS = ("v1.15.2-envoy", "v1.15.1-envoy", "v1.15.0-envoy", "v1.14.0-envoy")
CACHE_ROOT = Path.home() / ".cache" / "extauthz-bench" / "opa-envoy"
BINARY_NAME = "opa-envoy-plugin"
PLUGIN_NAME = "envoy_ext_authz_grpc"
GO_FALLBACK = Path("/usr/local/go/bin/go")
BUILD_TIMEOUT_S = 900
START_TIMEOUT_S = 20.0


class PeerUnavailable(RuntimeError):
    """The peer cannot be built or started; its rows are skipped."""


def binary_path(version: str, cache_root: Path = CACHE_ROOT) -> Path:
    return cache_root / version / BINARY_NAME


def cached_binary(cache_root: Path = CACHE_ROOT) -> Path | None:
    """A plugin built earlier, the newest version first; None when there is none."""
    for version in VERSIONS:
        path = binary_path(version, cache_root)
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def go_tool() -> str | None:
    found = shutil.which("go")
    if found is not None:
        return found
    return str(GO_FALLBACK) if GO_FALLBACK.is_file() else None


@dataclass(frozen=True, slots=True)
class Built:
    path: Path
    seconds: float  # 0.0 when the cached binary was reused


def ensure_binary(progress: Callable[[str], None], cache_root: Path = CACHE_ROOT) -> Built:
    """The cached plugin, or one built now; PeerUnavailable when Go is missing or every
    version fails to fetch or build."""
    cached = cached_binary(cache_root)
    if cached is not None:
        return Built(cached, 0.0)
    go = go_tool()
    if go is None:
        raise PeerUnavailable("no Go toolchain (go on PATH or /usr/local/go/bin/go)")
    refused: list[str] = []
    for version in VERSIONS:
        progress(f"building the OPA-Envoy plugin {version} (Go module, once)")
        started = time.monotonic()
        workdir = cache_root / version
        try:
            _fetch(go, version, workdir)
        except PeerUnavailable as exc:
            refused.append(f"{version}: {exc}")
            continue
        _build(go, workdir)
        return Built(binary_path(version, cache_root), time.monotonic() - started)
    raise PeerUnavailable("no version could be fetched: " + "; ".join(refused))


def _go(go: str, argv: Sequence[str], workdir: Path) -> None:
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    with (workdir / "build.log").open("ab") as log:
        try:
            completed = subprocess.run(
                [go, *argv],
                cwd=workdir / "module",
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=BUILD_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise PeerUnavailable(f"go {argv[0]} took over {BUILD_TIMEOUT_S} s") from None
    if completed.returncode != 0:
        tail = (workdir / "build.log").read_text(errors="replace").strip().splitlines()[-1:]
        raise PeerUnavailable(f"go {argv[0]} failed: {' '.join(tail)} (see {workdir}/build.log)")


def _fetch(go: str, version: str, workdir: Path) -> None:
    module_dir = workdir / "module"
    module_dir.mkdir(parents=True, exist_ok=True)
    (module_dir / "go.mod").write_text("module extauthz-bench/opa-envoy-build\n\ngo 1.24\n")
    _go(go, ["get", f"{MODULE}@{version}"], workdir)


def _build(go: str, workdir: Path) -> None:
    partial = workdir / f"{BINARY_NAME}.partial"
    _go(go, ["build", "-trimpath", "-o", str(partial), MAIN_PACKAGE], workdir)
    partial.replace(workdir / BINARY_NAME)  # a half-written binary is never taken as cached


def plugin_config(grpc_port: int, decision_path: str) -> dict[str, Any]:
    """One envoy_ext_authz_grpc server on loopback; no decision logs (none are configured).

    No JWT cache: OPA's `caching.inter_query_builtin_value_cache.named.io_jwt` is accepted,
    but this plugin version hands its evaluations no value cache (the field it passes is
    never set), so io.jwt verifications are not cached whatever it says.
    """
    return {
        "plugins": {
            PLUGIN_NAME: {
                "addr": f"127.0.0.1:{grpc_port}",
                "path": decision_path,
                "dry-run": False,
                "enable-reflection": False,
            }
        },
    }


@dataclass(slots=True)
class OpaEnvoyProcess:
    process: subprocess.Popen[bytes]
    grpc_port: int
    http_port: int
    log_path: Path

    @classmethod
    def start(
        cls,
        binary: Path,
        workdir: Path,
        *,
        policy_files: Sequence[Path],
        decision_path: str,
        data: dict[str, Any] | None = None,
        gomaxprocs: int = 1,
        pinning: Pinning,
    ) -> OpaEnvoyProcess:
        workdir.mkdir(parents=True, exist_ok=True)
        grpc_port, http_port = free_port(), free_port()
        config_path = workdir / "opa-envoy.json"
        config = plugin_config(grpc_port, decision_path)
        config_path.write_text(json.dumps(config, indent=2))
        loaded = [str(path) for path in policy_files]
        if data is not None:
            data_path = workdir / "data.json"
            data_path.write_text(json.dumps(data))
            loaded.append(str(data_path))
        argv = [
            str(binary),
            "run",
            "--server",
            f"--addr=127.0.0.1:{http_port}",
            f"--config-file={config_path}",
            "--log-level=error",
            "--skip-version-check",
            *loaded,
        ]
        log_path = workdir / "opa-envoy.log"
        env = {**os.environ, "GOMAXPROCS": str(gomaxprocs)}
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                pinning.server_argv(argv), stdout=log, stderr=subprocess.STDOUT, env=env
            )
        started = cls(process, grpc_port, http_port, log_path)
        started._wait_until_ready()
        return started

    def _wait_until_ready(self) -> None:
        """OPA's /health?plugins answers 200 once the gRPC plugin is serving."""
        url = f"http://127.0.0.1:{self.http_port}/health?plugins"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PeerUnavailable(f"OPA-Envoy exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise PeerUnavailable(f"OPA-Envoy not ready in {START_TIMEOUT_S:g} s: {self.log_tail()}")

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-1500:]

    def stop(self) -> None:
        stop_process(self.process)
