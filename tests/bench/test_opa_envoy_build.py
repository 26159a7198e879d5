"""How the benchmark finds or builds the OPA-Envoy plugin, and the configuration it gives it,
without building Go here."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import opa_envoy
from bench.opa_envoy import (
    BINARY_NAME,
    PLUGIN_NAME,
    VERSIONS,
    PeerUnavailable,
    cached_binary,
    ensure_binary,
    plugin_config,
)


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_without_go_the_peer_is_unavailable_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(opa_envoy, "go_tool", lambda: None)
    with pytest.raises(PeerUnavailable, match="no Go toolchain"):
        ensure_binary(lambda _: None, cache_root=tmp_path)


def test_a_cached_build_is_reused_without_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(opa_envoy, "go_tool", lambda: None)
    binary = _executable(tmp_path / VERSIONS[0] / BINARY_NAME)
    built = ensure_binary(lambda _: None, cache_root=tmp_path)
    assert (built.path, built.seconds) == (binary, 0.0)


def test_an_older_version_is_used_only_when_the_newest_is_not_built(tmp_path: Path) -> None:
    older = _executable(tmp_path / VERSIONS[1] / BINARY_NAME)
    assert cached_binary(tmp_path) == older
    newest = _executable(tmp_path / VERSIONS[0] / BINARY_NAME)
    assert cached_binary(tmp_path) == newest


def test_a_build_cut_short_is_not_taken_for_a_binary(tmp_path: Path) -> None:
    _executable(tmp_path / VERSIONS[0] / f"{BINARY_NAME}.partial")
    assert cached_binary(tmp_path) is None


def test_the_plugin_serves_one_grpc_listener_on_loopback_without_decision_logs() -> None:
    config = plugin_config(45123, "extauthz/bench/authz/result")
    assert config["plugins"] == {
        PLUGIN_NAME: {
            "addr": "127.0.0.1:45123",
            "path": "extauthz/bench/authz/result",
            "dry-run": False,
            "enable-reflection": False,
        }
    }
    assert "decision_logs" not in config
