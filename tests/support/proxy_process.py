"""What the nginx and Caddy launchers share: a shipped configuration file with its addresses
rewritten for loopback, and a running proxy on a free port with its logs."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.support.net import start_on_a_free_port, stop_process

LOOPBACK = "127.0.0.1"
_READY_TIMEOUT_S = 20.0


def rewrite_addresses(source: Path, replacements: Iterable[tuple[str, str]]) -> str:
    """The file's text with each deployed address replaced; each must occur exactly once,
    so that a changed file fails loudly instead of running unrewritten."""
    text = source.read_text(encoding="utf-8")
    for deployed, loopback in replacements:
        if text.count(deployed) != 1:
            raise ValueError(f"{source}: expected exactly one {deployed!r}")
        text = text.replace(deployed, loopback)
    return text


@dataclass(slots=True)
class ProxyProcess:
    process: subprocess.Popen[bytes]
    workdir: Path
    listen_port: int
    # Log files in `workdir`, for the tail shown when something fails.
    logs: tuple[str, ...]

    def url(self, path: str = "/") -> str:
        return f"http://{LOOPBACK}:{self.listen_port}{path}"

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.workdir, self.logs, lines)

    def stop(self) -> None:
        stop_process(self.process)


def start_proxy(
    name: str,
    launch: Callable[[int], subprocess.Popen[bytes]],
    workdir: Path,
    logs: tuple[str, ...],
) -> ProxyProcess:
    """`launch(port)` starts the proxy listening on `port`; waits until it does."""
    started = start_on_a_free_port(launch, _READY_TIMEOUT_S)
    if started is None:
        raise RuntimeError(f"{name} did not start:\n{log_tail(workdir, logs)}")
    return ProxyProcess(started[0], workdir, started[1], logs)


def log_tail(workdir: Path, logs: tuple[str, ...], lines: int = 40) -> str:
    parts = []
    for name in logs:
        path = workdir / name
        if path.exists():
            text = path.read_text(encoding="utf-8", errors="replace")
            parts.append("\n".join(text.splitlines()[-lines:]))
    return "\n".join(parts) or "(no log written)"
