"""server.workers: N processes share the ports, are restarted when they die, stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import grpc

from extauthz_server._proto.envoy.service.auth.v3 import external_auth_pb2
from tests.support.authz_process import AuthzProcess
from tests.support.check_requests import CHECK_METHOD, check_request
from tests.support.configs import seed_config_text
from tests.support.net import free_port


def one_check_on_a_new_connection(port: int) -> None:
    # A new channel is a new TCP connection, which SO_REUSEPORT hands to some worker.
    with grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
    ) as channel:
        check = channel.unary_unary(
            CHECK_METHOD,
            request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
            response_deserializer=external_auth_pb2.CheckResponse.FromString,
        )
        reply = check(check_request("/healthz"), timeout=5)
    assert reply.HasField("ok_response")


def pids(lines: list[str], message: str) -> set[int]:
    found = set()
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("message") == message:
            found.add(int(entry["pid"]))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def start_pool(tmp_path: Path) -> AuthzProcess:
    issuer = f"http://127.0.0.1:{free_port()}/realms/demo"
    text = seed_config_text(
        issuer,
        server={
            "grpc_listen": f"127.0.0.1:{free_port()}",
            "http_listen": f"127.0.0.1:{free_port()}",
            "workers": 2,
        },
    )
    pool = AuthzProcess.start(text, tmp_path)
    deadline = time.monotonic() + 20
    while len(pids(pool.log_lines(), "serving")) < 2:
        assert time.monotonic() < deadline, "two workers did not start"
        time.sleep(0.1)
    return pool


def test_checks_are_spread_over_the_workers_and_sigterm_stops_them_all(tmp_path: Path) -> None:
    pool = start_pool(tmp_path)
    workers = pids(pool.log_lines(), "serving")

    for _ in range(60):
        one_check_on_a_new_connection(pool.grpc_port)
    served_by = pids(pool.log_lines(), "decision")

    assert served_by == workers
    assert pool.stop() == 0
    assert not any(alive(pid) for pid in workers)


def test_a_worker_that_dies_is_replaced(tmp_path: Path) -> None:
    pool = start_pool(tmp_path)
    try:
        victim = min(pids(pool.log_lines(), "serving"))
        os.kill(victim, signal.SIGKILL)

        deadline = time.monotonic() + 10
        while len(pids(pool.log_lines(), "serving") - {victim}) < 2:
            assert time.monotonic() < deadline, "the dead worker was not replaced"
            time.sleep(0.1)
        for _ in range(10):
            one_check_on_a_new_connection(pool.grpc_port)
    finally:
        assert pool.stop() == 0
