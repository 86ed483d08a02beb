"""Health checks follow the engine: once its worker is gone, ``/health`` answers 503 and gRPC health is
NOT_SERVING (both reported healthy while every request got 503)."""
from __future__ import annotations

import asyncio

import grpc
from fastapi.testclient import TestClient
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runtime.server.grpc_server import SERVICE_NAME, start_grpc_server
from runtime.server.http_server import ServerState, create_app


class _Engine:
    """Just what the health checks read: ``dead`` (None while the worker runs)."""

    dead: str | None = None


def test_http_health_is_503_once_the_engine_stopped():
    engine = _Engine()
    client = TestClient(create_app(ServerState(engine=engine)))
    assert client.get("/health").json() == {"status": "ok"}
    engine.dead = "the sglc worker crashed: ValueError: boom; the traceback is in the server log"
    r = client.get("/health")
    assert r.status_code == 503 and r.json() == {"status": "unavailable", "message": engine.dead}


def test_grpc_health_turns_not_serving_once_the_engine_stopped():
    async def main() -> list[int]:
        engine = _Engine()
        server, port = await start_grpc_server(engine, "127.0.0.1", 0)
        statuses = []
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = health_pb2_grpc.HealthStub(ch)
                check = lambda: stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
                statuses.append((await check()).status)
                engine.dead = "the sglc worker crashed"
                for _ in range(50):   # the watch looks every second
                    await asyncio.sleep(0.1)
                    status = (await check()).status
                    if status != statuses[0]:
                        break
                statuses.append(status)
        finally:
            await server.stop(None)
        return statuses

    assert asyncio.run(main()) == [health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING]
