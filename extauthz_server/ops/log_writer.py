"""Log lines written off the event loop: a bounded queue drained by a writer thread.

A decision's audit line must not cost the decision: formatting is cheap, but a write and a
flush per line is a system call per Check, and a stalled stdout (a slow log collector)
would block the event loop. Lines are queued (bounded; what does not fit is counted and
dropped, never waited for) and written in batches, one system call per batch.
"""

from __future__ import annotations

import atexit
import collections
import os
import threading

MAX_QUEUED_LINES = 65_536
FLUSH_INTERVAL_S = 0.02


class LineWriter:
    def __init__(
        self, fd: int, max_lines: int = MAX_QUEUED_LINES, interval_s: float = FLUSH_INTERVAL_S
    ) -> None:
        self._fd = fd
        self._max_lines = max_lines
        self._interval_s = interval_s
        # deque.append and popleft are atomic: the event loop appends, the thread pops.
        self._lines: collections.deque[str] = collections.deque()
        self._stopping = threading.Event()
        self._write_lock = threading.Lock()
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def put(self, line: str) -> None:
        """Queue one line (without its newline); never blocks."""
        if len(self._lines) >= self._max_lines:
            self.dropped += 1
            return
        self._lines.append(line)

    def flush(self) -> None:
        """Write every queued line now (also from the thread that queued them)."""
        with self._write_lock:
            lines = self._lines
            batch: list[str] = []
            while lines:
                batch.append(lines.popleft())
            if not batch:
                return
            data = ("\n".join(batch) + "\n").encode("utf-8", "backslashreplace")
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError:
                # stdout closed or broken: nothing useful can be done with log lines.
                self.dropped += len(batch)

    def close(self) -> None:
        """Stop the thread and write what is queued."""
        self._stopping.set()
        self.flush()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=1.0)
        atexit.unregister(self.close)

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            self.flush()
