"""Logging: one JSON object per line, and one audit line per decision (never a token or secret)."""

from __future__ import annotations

import json
import logging
import sys
import time

from extauthz_server.decision import Decision
from extauthz_server.request import AuthRequest

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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    audit_log.disabled = not audit_enabled


def audit(request: AuthRequest, decision: Decision, elapsed_s: float) -> None:
    """One line per decision: who, what, which rule, and the outcome."""
    if not audit_log.isEnabledFor(logging.INFO):
        return
    audit_log.info(
        "decision",
        extra={
            "request_id": request.request_id,
            "method": request.method,
            "host": request.host,
            "path": request.path.partition("?")[0],
            "allowed": decision.allowed,
            "status": decision.status,
            "reason": decision.reason.value,
            "route": decision.route,
            "subject": decision.subject,
            "roles": ",".join(decision.roles),
            "elapsed_ms": round(elapsed_s * 1000, 3),
        },
    )
