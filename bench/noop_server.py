"""Limit A of the benchmark: a Check server on the same stack (grpc.aio, one process) that
answers every request with one fixed OK response and does nothing else.

    python -m bench.noop_server PORT_FILE [asyncio|uvloop]
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc

from extauthz_server._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from extauthz_server._proto.grpc.health.v1 import health_pb2_grpc
from extauthz_server.edges.grpc_service import HealthServicer

_OK = external_auth_pb2.CheckResponse()
_OK.ok_response.SetInParent()


class NoopAuthorization(external_auth_pb2_grpc.AuthorizationServicer):
    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        return _OK


async def serve(port_file: Path) -> None:
    server = grpc.aio.server()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(NoopAuthorization(), server)  # type: ignore[no-untyped-call]
    # grpc.health.v1 as our server has it: envoy/envoy.yaml health-checks the Check service.
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await asyncio.to_thread(port_file.write_text, str(port))
    await server.wait_for_termination()


if __name__ == "__main__":
    loop_factory = None
    if sys.argv[2:] == ["uvloop"]:
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(Path(sys.argv[1])))
