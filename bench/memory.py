"""Memory of the in-process cache (L1) holding many identities: RSS growth against the byte
estimate that `cache.max_bytes` bounds.

    .venv/bin/python -m bench.memory [--entries 100000]
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

from extauthz_server.cache.entries import CacheEntry
from extauthz_server.cache.local_cache import LocalIdentityCache
from extauthz_server.core.identity import Identity
from extauthz_server.core.tokens import token_digest


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def identity(index: int, now: float) -> Identity:
    user = f"user-{index:06d}"
    return Identity(
        subject=f"{index:08x}-15a2-459b-9b29-3bce996095a0",
        username=user,
        email=f"{user}@example.com",
        client_id="web-app",
        scopes=frozenset({"openid", "email", "profile"}),
        provider_roles=frozenset(
            {"default-roles-demo", "offline_access", "uma_authorization", "manager"}
        ),
        expires_at=now + 300,
        session_id=f"{index:08x}-0fb9-4e92-ac40-510569fdd8b2",
        audience=("ext-authz", "account"),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=100_000)
    args = parser.parse_args()
    now = time.time()
    gc.collect()
    before = rss_bytes()
    cache = LocalIdentityCache(args.entries, 1 << 40, revoked_horizon_s=600)
    for index in range(args.entries):
        entry = CacheEntry(identity(index, now), now + 60, now + 60)
        cache.put(token_digest(f"token-{index}"), entry)
    gc.collect()
    grown = rss_bytes() - before
    per_identity = grown / len(cache)
    print(f"L1 with {len(cache)} identities:")
    print(f"  RSS growth        {grown / 2**20:7.1f} MiB  ({per_identity:.0f} bytes per identity)")
    print(f"  byte estimate     {cache.size_bytes / 2**20:7.1f} MiB  (what cache.max_bytes bounds)")


if __name__ == "__main__":
    main()
