"""Several worker processes sharing the gRPC and HTTP ports (SO_REUSEPORT), so one node uses
all its cores. The parent only starts, restarts and stops the workers."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

WORKER_FLAG = "--worker"
RESTART_DELAY_MAX_S = 10.0
STOP_MARGIN_S = 5.0


class WorkerPool:
    def __init__(self, config_path: Path, workers: int, grace_period_s: float) -> None:
        self._argv = [sys.executable, "-m", "extauthz_server", "--config", str(config_path)]
        self._count = workers
        self._grace_period_s = grace_period_s
        self._stopping = threading.Event()
        self._processes: list[subprocess.Popen[bytes]] = []

    def run(self) -> int:
        """Run until SIGTERM or SIGINT; returns the exit code for the parent."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self._stopping.set())
        signal.signal(signal.SIGHUP, lambda *_: self._forward(signal.SIGHUP))
        self._processes = [self._spawn(index) for index in range(self._count)]
        delays = [0.5] * self._count
        while not self._stopping.wait(0.2):
            for index, process in enumerate(self._processes):
                if process.poll() is None:
                    continue
                log.error(
                    "worker %d (pid %d) exited with %s; restarting in %.1fs",
                    index,
                    process.pid,
                    process.returncode,
                    delays[index],
                )
                if self._stopping.wait(delays[index]):
                    break
                delays[index] = min(delays[index] * 2, RESTART_DELAY_MAX_S)
                self._processes[index] = self._spawn(index)
        return self._stop()

    def _forward(self, signum: signal.Signals) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signum)

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        process = subprocess.Popen([*self._argv, WORKER_FLAG], env=os.environ.copy())  # noqa: S603
        log.info("started worker %d (pid %d)", index, process.pid)
        return process

    def _stop(self) -> int:
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._grace_period_s + STOP_MARGIN_S
        code = 0
        for process in self._processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker pid %d did not stop in time; killing it", process.pid)
                process.kill()
                process.wait()
                code = 1
        return code
