"""What every edge needs to answer a check: the Authorizer and its denials, the time a check
may take when the proxy sets none, and where each decision is counted and audited."""

from __future__ import annotations

import time
from dataclasses import dataclass

from extauthz_server.cache.resolver import lookup_level
from extauthz_server.core.authorizer import Authorizer
from extauthz_server.core.decision import Decision, Denials
from extauthz_server.core.request import AuthRequest
from extauthz_server.ops.logs import Auditor
from extauthz_server.ops.metrics import CheckMetrics


@dataclass(frozen=True, slots=True)
class Checking:
    authorizer: Authorizer
    denials: Denials
    provider_timeout_s: float
    metrics: CheckMetrics
    auditor: Auditor

    def record(self, request: AuthRequest, decision: Decision, started: float) -> None:
        """Count and audit a decision reached since `started` (time.perf_counter)."""
        elapsed = time.perf_counter() - started
        self.metrics.record_decision(decision, elapsed)
        self.auditor.record(request, decision, elapsed, lookup_level.get())
