"""The `dpop:` and `mtls:` sections: how proofs of possession are checked (RFC 9449, RFC 8705).

Which providers require DPoP is each provider's `dpop:` key (config.providers).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from extauthz_server.config.reader import Section
from extauthz_server.core.dpop import PROOF_ALGORITHMS, DpopRules
from extauthz_server.core.replay import DEFAULT_MAX_ENTRIES
from extauthz_server.errors import ConfigError

_SCHEMES = ("http", "https")


@dataclass(frozen=True, slots=True)
class SenderConstraintsConfig:
    dpop: DpopRules = field(default_factory=DpopRules)
    # Proofs one process remembers when no Redis is configured (with Redis, Redis keeps them).
    replay_max_entries: int = DEFAULT_MAX_ENTRIES
    # The HTTP authorization listener reads the client certificate the proxy saw from this
    # header (the gRPC listener gets it from Envoy's attributes); None: not read.
    certificate_header: str | None = None


def parse_sender_constraints(dpop: Section, mtls: Section) -> SenderConstraintsConfig:
    algorithms = dpop.subset("algorithms", PROOF_ALGORITHMS)
    scheme = dpop.choice("external_scheme", _SCHEMES, "") if dpop.has("external_scheme") else None
    rules = DpopRules(
        algorithms=algorithms,
        max_age_s=dpop.number("max_age_seconds", 25, 1, 600),
        future_skew_s=dpop.number("clock_skew_seconds", 15, 0, 300),
        external_scheme=scheme,
    )
    replay_max_entries = dpop.integer("replay_max_entries", DEFAULT_MAX_ENTRIES, 1, 100_000_000)
    dpop.finish()
    header = mtls.optional_string("certificate_header")
    if header is not None:
        header = header.lower()
        if not header or not all(ch.isalnum() or ch == "-" for ch in header):
            raise ConfigError(mtls.key("certificate_header"), f"{header!r} is not a header name")
    mtls.finish()
    return SenderConstraintsConfig(rules, replay_max_entries, header)
