"""Run extauthz-server as users do: `python -m extauthz_server --config FILE` in its own process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0


class AuthzProcessError(Exception):
    pass


@dataclass
class AuthzProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    grpc_port: int
    http_port: int
    # The HTTP authorization listener's port; 0 when it is off.
    http_authz_port: int = 0

    @classmethod
    def start(
        cls, config_text: str, workdir: Path, env: dict[str, str] | None = None
    ) -> AuthzProcess:
        config_path = workdir / "extauthz.yaml"
        config_path.write_text(config_text, encoding="utf-8")
        log_path = workdir / "extauthz.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "extauthz_server", "--config", str(config_path)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        serving = _wait_for_serving(process, log_path)
        return cls(
            process,
            log_path,
            int(serving["grpc_port"]),
            int(serving["http_port"]),
            int(serving.get("http_authz_port") or 0),
        )

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()

    def stop(self) -> int:
        """SIGTERM, as an orchestrator would; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)
        return self.process.returncode


def _wait_for_serving(process: subprocess.Popen[bytes], log_path: Path) -> dict[str, Any]:
    """The server logs a `serving` line with its bound ports once its listeners are up."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AuthzProcessError(
                f"extauthz-server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}"
            )
        for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("message") == "serving":
                return entry
        time.sleep(0.05)
    process.kill()
    raise AuthzProcessError(f"extauthz-server did not start:\n{log_path.read_text()[-3000:]}")
