"""Run real `redis-server` processes on loopback for tests: one server, or a three-master cluster.

Everything here is synchronous (subprocess plus a blocking redis-py client for readiness
checks), so sync tests, async tests and fixtures of any scope can share it.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.net import free_port, stop_process

LOOPBACK = "127.0.0.1"
CLUSTER_SIZE = 3
CLUSTER_SLOTS = 16384

_READY_TIMEOUT_S = 10.0
_CREATE_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 5.0
_COMMAND_TIMEOUT_S = 1.0
_POLL_INTERVAL_S = 0.01
_BIND_ATTEMPTS = 5
_LOG_TAIL_LINES = 30
_ADDRESS_IN_USE = "Address already in use"
_CLUSTER_NODE_TIMEOUT_MS = 2000


class RedisStartError(RuntimeError):
    """redis-server exited, never answered, or the cluster never converged; carries the log tail."""


class _PortTaken(Exception):
    """Another process owns one of our ports: pick again (start) or wait and retry (restart)."""


class RedisServer:
    """A `redis-server` child process without persistence. Build with `RedisServer.start`."""

    __slots__ = ("_cluster_port", "_port", "_process", "_workdir")

    def __init__(self, workdir: Path, port: int, cluster_port: int | None) -> None:
        self._workdir = workdir
        self._port = port
        self._cluster_port = cluster_port
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(
        cls, workdir: Path, *, cluster: bool = False, ready_timeout_s: float = _READY_TIMEOUT_S
    ) -> RedisServer:
        """Start on a free port with its dir and log in `workdir`; return once PING answers.

        `cluster=True` enables cluster mode with an explicit bus port (`cluster-port`),
        since the default `port + 10000` overflows for high ephemeral ports.
        """
        executable = _executable("redis-server", "redis-server")
        workdir = workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        problem = "no attempt made"
        for _ in range(_BIND_ATTEMPTS):
            port = free_port()
            server = cls(workdir, port, _distinct_free_port(port) if cluster else None)
            try:
                server._launch(executable, ready_timeout_s)
            except _PortTaken as exc:
                problem = str(exc)
                continue
            return server
        raise RedisStartError(f"no usable port after {_BIND_ATTEMPTS} attempts\n{problem}")

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self._port}/0"

    @property
    def workdir(self) -> Path:
        return self._workdir

    @property
    def log_path(self) -> Path:
        return self._workdir / "redis.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self, *args: str | int) -> object:
        """Send one command through a short-lived blocking client; replies decoded to str."""
        return _command(self._port, *args)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log written)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, a bounded wait, then SIGKILL. Idempotent."""
        if self._process is not None:
            stop_process(self._process, _STOP_TIMEOUT_S)

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown, clients see their connections drop."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait(timeout=_STOP_TIMEOUT_S)

    def restart(self, *, ready_timeout_s: float = _READY_TIMEOUT_S) -> None:
        """Stop if running, then start again on the same port(s) with an empty dataset.

        Something else may have bound the port in between; retry for a bounded time
        rather than move, because clients under test hold this address.
        """
        self.stop()
        executable = _executable("redis-server", "redis-server")
        problem = "no attempt made"
        for _ in range(_BIND_ATTEMPTS):
            try:
                self._launch(executable, ready_timeout_s)
            except _PortTaken as exc:
                problem = str(exc)
                time.sleep(0.2)
                continue
            return
        raise RedisStartError(
            f"port {self._port} still taken after {_BIND_ATTEMPTS} attempts\n{problem}"
        )

    def _argv(self, executable: str) -> list[str]:
        argv = [
            executable,
            "--port", str(self._port),
            "--bind", LOOPBACK,
            "--protected-mode", "yes",
            # No RDB snapshots and no AOF: a restart or crash always comes back empty.
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._workdir),
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        if self._cluster_port is not None:
            argv += [
                "--cluster-enabled", "yes",
                "--cluster-port", str(self._cluster_port),
                "--cluster-config-file", f"nodes-{self._port}.conf",
                "--cluster-node-timeout", str(_CLUSTER_NODE_TIMEOUT_MS),
            ]  # fmt: skip
        return argv

    def _launch(self, executable: str, ready_timeout_s: float) -> None:
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        # Errors before the logfile is configured go to stderr: append both to the same file.
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._argv(executable), stdout=log, stderr=subprocess.STDOUT, cwd=self._workdir
            )
        try:
            self._wait_until_ready(ready_timeout_s, log_offset)
        except BaseException:
            self.kill()
            raise

    def _wait_until_ready(self, timeout_s: float, log_offset: int) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout_s
        last_problem = "no PING attempted"
        while True:
            if self._process.poll() is not None:
                new_log = self._log_since(log_offset)
                if _ADDRESS_IN_USE in new_log:
                    raise _PortTaken(new_log)
                raise RedisStartError(
                    f"redis-server on port {self._port} exited with "
                    f"{self._process.returncode} during startup\n{self.log_tail()}"
                )
            try:
                if self.command("PING") is True:
                    self._check_pid()
                    return
            except redis.RedisError as exc:
                last_problem = repr(exc)
            if time.monotonic() >= deadline:
                break
            # Doubles as the poll interval and returns at once if redis-server exits.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=_POLL_INTERVAL_S)
        raise RedisStartError(
            f"redis-server on port {self._port} not answering PING after {timeout_s:.0f}s: "
            f"{last_problem}\n{self.log_tail()}"
        )

    def _check_pid(self) -> None:
        # A PONG may come from whoever won a bind race for our port; make sure it is ours.
        assert self._process is not None
        info = self.command("INFO", "server")
        pid = info.get("process_id") if isinstance(info, dict) else None
        if pid != self._process.pid:
            raise _PortTaken(f"port {self._port} answered by process {pid}, not ours")

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(offset)
                return fh.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""


class RedisCluster:
    """Three cluster-mode masters sharing all 16384 slots, no replicas. Build with `start`."""

    __slots__ = ("_nodes",)

    def __init__(self, nodes: tuple[RedisServer, ...]) -> None:
        self._nodes = nodes

    @classmethod
    def start(cls, workdir: Path, *, ready_timeout_s: float = _READY_TIMEOUT_S) -> RedisCluster:
        """Start the nodes, `redis-cli --cluster create` them, wait for `ok` on every node."""
        nodes: list[RedisServer] = []
        try:
            for index in range(CLUSTER_SIZE):
                nodes.append(RedisServer.start(workdir / f"node{index}", cluster=True))
            cluster = cls(tuple(nodes))
            cluster._create()
            cluster._wait_until_converged(ready_timeout_s)
        except BaseException:
            for node in nodes:
                node.stop()
            raise
        return cluster

    @property
    def nodes(self) -> tuple[RedisServer, ...]:
        return self._nodes

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(node.host, node.port) for node in self._nodes]

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self._nodes[0].port}"

    def flushall(self) -> None:
        """Empty every node: the cluster is shared by a whole session."""
        for node in self._nodes:
            node.command("FLUSHALL")

    def stop(self) -> None:
        for node in self._nodes:
            node.stop()

    def _create(self) -> None:
        redis_cli = _executable("redis-cli", "redis-tools")
        argv = [
            redis_cli,
            "--cluster", "create",
            *(f"{host}:{port}" for host, port in self.startup_nodes),
            "--cluster-replicas", "0",
            "--cluster-yes",
        ]  # fmt: skip
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=_CREATE_TIMEOUT_S, check=False
        )
        if result.returncode != 0:
            output = "\n".join((result.stdout + result.stderr).splitlines()[-_LOG_TAIL_LINES:])
            raise RedisStartError(
                f"redis-cli --cluster create exited {result.returncode}\n{output}"
            )

    def _wait_until_converged(self, timeout_s: float) -> None:
        # `cluster_state:ok` alone is not enough for cluster-wide PUBLISH: every node must
        # also have finished the handshake with every other node over a connected bus link.
        deadline = time.monotonic() + timeout_s
        while True:
            problem = self._convergence_problem()
            if problem is None:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(_POLL_INTERVAL_S * 5)
        tails = "\n".join(f"--- node {n.port}\n{n.log_tail(10)}" for n in self._nodes)
        raise RedisStartError(f"cluster not ready after {timeout_s:.0f}s: {problem}\n{tails}")

    def _convergence_problem(self) -> str | None:
        for node in self._nodes:
            try:
                info = _fields(str(node.command("CLUSTER", "INFO")))
                links = str(node.command("CLUSTER", "NODES")).splitlines()
            except redis.RedisError as exc:
                return f"node {node.port}: {exc!r}"
            if info.get("cluster_state") != "ok":
                return f"node {node.port}: cluster_state:{info.get('cluster_state')}"
            if info.get("cluster_slots_ok") != str(CLUSTER_SLOTS):
                return f"node {node.port}: cluster_slots_ok:{info.get('cluster_slots_ok')}"
            # CLUSTER NODES: <id> <addr> <flags> <master> <ping> <pong> <epoch> <link> <slots>
            settled = [
                line
                for line in links
                if line.split()[7] == "connected"
                and not {"handshake", "noaddr", "fail", "fail?"} & set(line.split()[2].split(","))
            ]
            if len(settled) != CLUSTER_SIZE:
                return f"node {node.port}: {len(settled)} of {CLUSTER_SIZE} nodes settled"
        return None


def _fields(text: str) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key: value.strip() for key, value in pairs}


def _executable(name: str, debian_package: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"no {name} on PATH (Debian package {debian_package})")
    return found


def _distinct_free_port(taken: int) -> int:
    while (port := free_port()) == taken:
        pass
    return port


def _command(port: int, *args: str | int) -> object:
    # No retries: readiness polling wants a fast, honest failure on every attempt.
    with redis.Redis(
        host=LOOPBACK,
        port=port,
        socket_timeout=_COMMAND_TIMEOUT_S,
        socket_connect_timeout=_COMMAND_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    ) as client:
        reply: object = client.execute_command(*args)
        return reply
