"""The audit line built directly for the log writer is the line the JSON formatter writes for
the same decision, field for field, and costs no write per line."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator

import pytest

from extauthz_server.core.decision import Decision, Denials, Reason
from extauthz_server.core.request import AuthRequest
from extauthz_server.ops.log_writer import LineWriter
from extauthz_server.ops.logs import AUDIT_LOGGER, Auditor, JsonFormatter

REQUEST = AuthRequest(
    "GET",
    "api.example.com",
    "/api/forms/1?draft=1",
    {"authorization": "Bearer secret-token", "x-request-id": "req-1"},
    request_id="envoy-id",
    source_address="10.0.0.7",
)
ALLOW = Decision(
    True, 200, Reason.ALLOWED, route="forms", subject="u-1", roles=("a", "b"), client="web-app"
)
PROOF_DENY = Denials("demo").deny(Reason.INVALID_DPOP_PROOF, route="forms")
PROOF_DENY = Decision(
    **{
        **{f: getattr(PROOF_DENY, f) for f in PROOF_DENY.__slots__},
        "metadata": {"dpop": "replayed"},
    }
)
PERMISSION_DENY = Denials("demo").deny(
    Reason.PERMISSION_DENIED, route="r", subject="u-2", client="c", permission="region-asia#read"
)
ODD = AuthRequest("POST", "hôte.example", '/p"ath/é\n', {}, request_id="", source_address="")


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def through_logging() -> Iterator[Lines]:
    handler = Lines()
    audit = logging.getLogger(AUDIT_LOGGER)
    audit.addHandler(handler)
    audit.setLevel(logging.INFO)
    yield handler
    audit.removeHandler(handler)


@pytest.mark.parametrize(
    ("request_", "decision"),
    [(REQUEST, ALLOW), (REQUEST, PROOF_DENY), (REQUEST, PERMISSION_DENY), (ODD, ALLOW)],
    ids=["allow", "dpop-deny", "permission-deny", "escaped-text"],
)
def test_the_built_line_is_the_formatters_line(
    through_logging: Lines, request_: AuthRequest, decision: Decision
) -> None:
    built: list[str] = []
    Auditor(sink=built.append).record(request_, decision, 0.0012345, "l1")
    Auditor().record(request_, decision, 0.0012345, "l1")

    [line] = built
    [expected] = through_logging.lines
    assert list(json.loads(line)) == list(json.loads(expected))  # the same fields, in order
    without_time = [
        {k: v for k, v in json.loads(x).items() if k != "time"} for x in (line, expected)
    ]
    assert without_time[0] == without_time[1]
    assert "secret-token" not in line
    assert json.loads(line)["time"].endswith("Z")


def test_a_remembered_allow_reuses_its_fields_but_not_the_requests() -> None:
    built: list[str] = []
    auditor = Auditor(sink=built.append)
    auditor.record(REQUEST, ALLOW, 0.001, "l1")
    other = AuthRequest("PUT", "b.example", "/other", {}, source_address="10.0.0.8")
    auditor.record(other, ALLOW, 0.002, "l2")

    first, second = (json.loads(line) for line in built)
    assert (first["subject"], second["subject"]) == ("u-1", "u-1")
    assert (second["method"], second["host"], second["path"], second["cache"]) == (
        "PUT",
        "b.example",
        "/other",
        "l2",
    )


def test_denies_are_always_written_and_allows_sampled() -> None:
    built: list[str] = []
    auditor = Auditor(0.0, sink=built.append)
    auditor.record(REQUEST, ALLOW, 0.001, "l1")
    auditor.record(REQUEST, PERMISSION_DENY, 0.001, "l1")
    assert [json.loads(line)["decision"] for line in built] == ["deny"]


def test_the_writer_keeps_order_and_writes_on_close() -> None:
    read_end, write_end = os.pipe()
    writer = LineWriter(write_end, interval_s=60)
    for index in range(100):
        writer.put(f"line {index}")
    writer.close()
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        assert pipe.read().splitlines() == [f"line {index}" for index in range(100)]


def test_a_stalled_output_never_blocks_and_drops_what_does_not_fit() -> None:
    read_end, write_end = os.pipe()
    writer = LineWriter(write_end, max_lines=100, interval_s=0.001)
    try:
        # Nobody reads: the pipe fills and the writer thread blocks in its write.
        started = time.monotonic()
        for _ in range(50_000):
            writer.put("x" * 200)
        assert time.monotonic() - started < 30  # returned, never waited on the pipe
        assert writer.dropped > 0
    finally:
        # The blocked write fails once nobody can read, and the writer stops.
        os.close(read_end)
        writer.close()
        os.close(write_end)
