"""Pinning for the peer rows: the Check server on one CPU, the load generator on another, so
neither takes the other's core and a Go server cannot spread over both."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

SERVER_CPU = 0
CLIENT_CPU = 1


@dataclass(frozen=True, slots=True)
class Pinning:
    taskset: str | None  # None: nothing is pinned

    @classmethod
    def detect(cls) -> Pinning:
        """taskset with at least two CPUs this process may use; else no pinning."""
        usable = os.sched_getaffinity(0)
        taskset = shutil.which("taskset")
        if taskset is None or not {SERVER_CPU, CLIENT_CPU} <= usable:
            return cls(None)
        return cls(taskset)

    @property
    def active(self) -> bool:
        return self.taskset is not None

    def describe(self) -> str:
        if not self.active:
            return "not pinned (needs taskset and CPUs 0 and 1)"
        return f"server on CPU {SERVER_CPU}, load generator on CPU {CLIENT_CPU}"

    def server_argv(self, argv: list[str]) -> list[str]:
        """`argv` started on the server's CPU."""
        if self.taskset is None:
            return argv
        return [self.taskset, "--cpu-list", str(SERVER_CPU), *argv]

    def pin_server(self, pid: int) -> None:
        """Move a running server, every thread of it, to the server's CPU."""
        if self.taskset is None:
            return
        subprocess.run(
            [self.taskset, "--all-tasks", "--pid", "--cpu-list", str(SERVER_CPU), str(pid)],
            check=True,
            capture_output=True,
        )

    @contextmanager
    def clients(self) -> Iterator[None]:
        """Processes started inside run on the load generator's CPU: a child inherits the
        affinity of the thread that starts it, so this thread is moved there meanwhile."""
        if self.taskset is None:
            yield
            return
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {CLIENT_CPU})
        try:
            yield
        finally:
            os.sched_setaffinity(0, before)
