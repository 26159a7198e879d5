"""Logging: one JSON object per line, and one audit line per decision (never a token or secret)."""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from collections.abc import Callable

from extauthz_server.core.decision import Decision
from extauthz_server.core.request import AuthRequest

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


def configure_logging(level: str, audit_enabled: bool = True) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    audit_log.disabled = not audit_enabled


class Auditor:
    """One line per decision: who, what, which rule, the outcome. Every deny is written;
    allows are sampled at `allow_sample_rate`. Never a token or a header value other than
    the request id."""

    def __init__(
        self, allow_sample_rate: float = 1.0, sample: Callable[[], float] = random.random
    ) -> None:
        self._allow_sample_rate = allow_sample_rate
        self._sample = sample

    def record(
        self, request: AuthRequest, decision: Decision, elapsed_s: float, cache_level: str
    ) -> None:
        if not audit_log.isEnabledFor(logging.INFO):
            return
        sampled_out = self._allow_sample_rate < 1.0 and self._sample() >= self._allow_sample_rate
        if decision.allowed and sampled_out:
            return
        extra = {
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
        audit_log.info("decision", extra=extra)
