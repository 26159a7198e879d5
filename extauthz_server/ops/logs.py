"""Logging: one JSON object per line, and one audit line per decision (never a token or secret)."""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable

from extauthz_server.core.decision import Decision
from extauthz_server.core.request import AuthRequest
from extauthz_server.ops.log_writer import LineWriter

AUDIT_LOGGER = "extauthz_server.audit"
audit_log = logging.getLogger(AUDIT_LOGGER)

_STANDARD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        entry.update(
            (key, value)
            for key, value in record.__dict__.items()
            if key not in _STANDARD_ATTRIBUTES
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, audit_enabled: bool = True) -> LineWriter:
    """Every log line, audit lines included, goes to stdout through one LineWriter: written
    off the event loop, in batches."""
    global _writer
    sys.stdout.flush()
    if _writer is not None:
        _writer.close()
    writer = LineWriter(sys.stdout.fileno())
    handler = LineHandler(writer)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    audit_log.disabled = not audit_enabled
    _writer = writer
    return writer


def lines_dropped() -> int:
    """Log lines the writer could not take (0 without configure_logging)."""
    return _writer.dropped if _writer is not None else 0


def audit_sink() -> Callable[[str], None] | None:
    """Where the Auditor writes finished lines: the writer configure_logging set up, or None
    (lines then go through the `extauthz_server.audit` logger, e.g. in tests)."""
    return _writer.put if _writer is not None else None


class LineHandler(logging.Handler):
    """A logging handler that queues formatted lines on a LineWriter."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._writer.put(self.format(record))
        except Exception:
            self.handleError(record)


_writer: LineWriter | None = None
# Decision fields kept per allow Decision (the Authorizer hands the same object back for a
# remembered allow): (its Decision, the text before the request fields, between, after).
MAX_KEPT_DECISIONS = 10_000
_ascii = json.encoder.encode_basestring_ascii


class Auditor:
    """One line per decision: who, what, which rule, the outcome. Every deny is written;
    allows are sampled at `allow_sample_rate`. Never a token or a header value other than
    the request id.

    With a `sink`, the line is built here, in the JsonFormatter's shape, with the fields of
    an allow kept per Decision, and handed over finished; without one it goes through the
    `extauthz_server.audit` logger like any log line.
    """

    def __init__(
        self,
        allow_sample_rate: float = 1.0,
        sample: Callable[[], float] = random.random,
        sink: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._allow_sample_rate = allow_sample_rate
        self._sample = sample
        self._sink = sink
        self._clock = clock
        self._head = f'", "level": "INFO", "logger": "{AUDIT_LOGGER}", "pid": {os.getpid()}, '
        self._second = -1
        self._stamp = ""
        self._kept: dict[int, tuple[Decision, tuple[str, str, str]]] = {}

    @property
    def writes_lines(self) -> bool:
        """False when audit lines are off (`logging.audit: false`)."""
        return audit_log.isEnabledFor(logging.INFO)

    def record(
        self, request: AuthRequest, decision: Decision, elapsed_s: float, cache_level: str
    ) -> None:
        if not audit_log.isEnabledFor(logging.INFO):
            return
        sampled_out = self._allow_sample_rate < 1.0 and self._sample() >= self._allow_sample_rate
        if decision.allowed and sampled_out:
            return
        if self._sink is not None:
            self._sink(self._line(request, decision, elapsed_s, cache_level))
            return
        audit_log.info("decision", extra=_fields(request, decision, elapsed_s, cache_level))

    def _line(
        self, request: AuthRequest, decision: Decision, elapsed_s: float, cache_level: str
    ) -> str:
        now = self._clock()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        before, between, after = self._decision_parts(decision)
        request_id = request.headers.get("x-request-id") or request.request_id
        return (
            f'{{"time": "{self._stamp}.{int((now - second) * 1000):03d}Z{self._head}'
            f'"message": "decision", {before}'
            f'"method": {_ascii(request.method)}, "host": {_ascii(request.host)}, '
            f'"path": {_ascii(request.path.partition("?")[0].partition("#")[0])}, {between}'
            f'"source": {_ascii(request.source_address)}, "request_id": {_ascii(request_id)}, '
            f'"cache": {_ascii(cache_level)}, "elapsed_ms": {round(elapsed_s * 1000, 3)!r}'
            f"{after}}}"
        )

    def _decision_parts(self, decision: Decision) -> tuple[str, str, str]:
        kept = self._kept.get(id(decision))
        if kept is not None and kept[0] is decision:
            return kept[1]
        parts = _decision_parts(decision)
        if decision.allowed:
            if len(self._kept) >= MAX_KEPT_DECISIONS:
                self._kept.clear()
            self._kept[id(decision)] = (decision, parts)
        return parts


def _decision_parts(decision: Decision) -> tuple[str, str, str]:
    """The decision's fields, in the places _fields puts them."""
    fields = _fields(_NO_REQUEST, decision, 0.0, "")
    before = "".join(
        f"{_ascii(key)}: {_json(fields[key])}, "
        for key in ("decision", "status", "reason", "route")
    )
    between = "".join(
        f"{_ascii(key)}: {_json(fields[key])}, " for key in ("subject", "roles", "client")
    )
    after = "".join(
        f", {_ascii(key)}: {_json(fields[key])}" for key in ("permission", "dpop") if key in fields
    )
    return before, between, after


def _json(value: object) -> str:
    return json.dumps(value, default=str)


def _fields(
    request: AuthRequest, decision: Decision, elapsed_s: float, cache_level: str
) -> dict[str, object]:
    extra: dict[str, object] = {
        "decision": "allow" if decision.allowed else "deny",
        "status": decision.status,
        "reason": decision.reason.value,
        "route": decision.route,
        "method": request.method,
        "host": request.host,
        "path": request.path.partition("?")[0].partition("#")[0],
        "subject": decision.subject,
        "roles": ",".join(decision.roles),
        "client": decision.client,
        "source": request.source_address,
        "request_id": request.headers.get("x-request-id") or request.request_id,
        "cache": cache_level,
        "elapsed_ms": round(elapsed_s * 1000, 3),
    }
    if decision.permission is not None:
        extra["permission"] = decision.permission
    proof_problem = decision.metadata.get("dpop")
    if proof_problem is not None:
        extra["dpop"] = proof_problem
    return extra


_NO_REQUEST = AuthRequest("", "", "", {})
