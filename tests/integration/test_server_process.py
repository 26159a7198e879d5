"""The installed command as an operator runs it: config errors, start-up and SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.authz_process import AuthzProcess
from tests.support.configs import PROVIDER_TIMEOUT_MS, seed_config_text
from tests.support.net import free_port


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "extauthz_server", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )


def dead_issuer() -> str:
    return f"http://127.0.0.1:{free_port()}/realms/demo"


def test_check_config_accepts_the_example_configuration() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "config.yaml"

    result = run_cli(
        "--config", str(example), "--check-config", env={"EXTAUTHZ_CLIENT_SECRET": "s"}
    )

    assert result.returncode == 0, result.stderr
    assert "ok (6 routes)" in result.stdout


def test_config_error_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        seed_config_text(dead_issuer()).replace(
            f"timeout_ms: {PROVIDER_TIMEOUT_MS}", "timeout_ms: fast"
        )
    )

    result = run_cli("--config", str(config))

    assert result.returncode == 2
    assert "provider.timeout_ms: expected an integer" in result.stderr


def test_missing_secret_variable_is_named_and_secret_values_are_not_echoed(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(seed_config_text(dead_issuer(), client_secret="${KC_SECRET_NOT_SET}"))

    result = run_cli("--config", str(config), env={})

    assert result.returncode == 2
    assert (
        "provider.client_secret: environment variable KC_SECRET_NOT_SET is not set" in result.stderr
    )


def test_sigterm_stops_the_server_cleanly(tmp_path: Path) -> None:
    server = AuthzProcess.start(seed_config_text(dead_issuer()), tmp_path)

    exit_code = server.stop()

    assert exit_code == 0
    messages = server.log_lines()
    assert any('"message": "shutting down"' in line for line in messages)
    assert not any('"level": "ERROR"' in line for line in messages)


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_server_runs_on_the_configured_event_loop(tmp_path: Path, event_loop: str) -> None:
    config = seed_config_text(dead_issuer(), server={"event_loop": event_loop})
    server = AuthzProcess.start(config, tmp_path)

    exit_code = server.stop()

    assert exit_code == 0
    serving = [line for line in server.log_lines() if '"message": "serving"' in line]
    assert len(serving) == 1
    assert f'"event_loop": "{event_loop}' in serving[0]


def test_sighup_reloads_the_file_and_keeps_the_old_one_when_it_is_invalid(tmp_path: Path) -> None:
    server = AuthzProcess.start(seed_config_text(dead_issuer()), tmp_path)
    config = tmp_path / "extauthz.yaml"
    try:
        config.write_text(config.read_text().replace("name: public", "name: open"))
        server.process.send_signal(signal.SIGHUP)
        wait_for_line(server, '"message": "configuration reloaded"')
        config.write_text(
            config.read_text().replace(f"timeout_ms: {PROVIDER_TIMEOUT_MS}", "timeout_ms: soon")
        )
        server.process.send_signal(signal.SIGHUP)
        wait_for_line(server, "configuration reload rejected")
    finally:
        assert server.stop() == 0


def wait_for_line(server: AuthzProcess, text: str) -> None:
    deadline = time.monotonic() + 10
    while not any(text in line for line in server.log_lines()):
        assert time.monotonic() < deadline, f"no log line with {text!r}"
        time.sleep(0.05)
