"""What every edge needs to answer a check: the Authorizer and its denials, the time a check
may take when the proxy sets none, and where each decision is counted and audited; and the
answers an edge prepares once for the allows the Authorizer hands back again and again."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from extauthz_server.cache.resolver import lookup_level
from extauthz_server.core.authorizer import Authorizer
from extauthz_server.core.decision import Decision, Denials
from extauthz_server.core.request import AuthRequest
from extauthz_server.ops.logs import Auditor
from extauthz_server.ops.metrics import CheckMetrics

R = TypeVar("R")


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

    def record_repeat(
        self, decision: Decision, started: float, request_of: Callable[[R], AuthRequest], raw: R
    ) -> None:
        """`record` for a decision repeated before its request was built: `request_of(raw)`
        builds it, for an audit line only."""
        elapsed = time.perf_counter() - started
        self.metrics.record_decision(decision, elapsed)
        if self.auditor.writes_lines:
            self.auditor.record(request_of(raw), decision, elapsed, lookup_level.get())


T = TypeVar("T")


class PreparedAnswers(Generic[T]):
    """An edge's answer to an allow, built once per Decision object: the Authorizer hands the
    same object back for a remembered allow. Keyed by identity (the object is checked, not
    only its id, which a new object may reuse) and cleared past the Authorizer's memo size."""

    def __init__(self, authorizer: Authorizer) -> None:
        self._authorizer = authorizer
        self._answers: dict[tuple[int, Hashable], tuple[Decision, T]] = {}

    def kept(self, decision: Decision, form: Hashable = None) -> T | None:
        """The answer built before for this allow (and `form`), if it is still kept."""
        kept = self._answers.get((id(decision), form))
        return kept[1] if kept is not None and kept[0] is decision else None

    def answer(self, decision: Decision, build: Callable[[], T], form: Hashable = None) -> T:
        """`build()`'s answer; for an allow, the one built before for this decision (and
        `form`, when an edge answers one decision in several forms)."""
        if not decision.allowed:
            return build()
        kept = self.kept(decision, form)
        if kept is not None:
            return kept
        answer = build()
        # With no memo (`decision_memo_size` 0) nothing is reused: at most this one is kept.
        if len(self._answers) >= self._authorizer.settings.decision_memo_size:
            self._answers.clear()
        self._answers[(id(decision), form)] = (decision, answer)
        return answer
