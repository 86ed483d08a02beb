"""The ``sglc.v1.Runtime`` gRPC service (proto/sglc.proto) over one Engine, plus gRPC health.

Mapping only: each RPC calls one Engine method. Input errors (``EngineError``) become
INVALID_ARGUMENT (UNIMPLEMENTED when the engine says a feature is unsupported); a cancelled call
or a passed deadline aborts the engine request so its KV is freed.
"""
from __future__ import annotations

import asyncio
import functools
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from proto import sglc_pb2 as pb
from proto import sglc_pb2_grpc as pb_grpc
from runtime.errors import EngineError

from . import engine_calls, proto_convert

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Runtime"].full_name


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Rejects Runtime calls without ``authorization: Bearer KEY`` metadata (health checks are exempt)."""

    def __init__(self, api_key: str) -> None:
        self._expected = f"Bearer {api_key}".encode()

    async def intercept_service(self, continuation: Callable[..., Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        if details.method.startswith("/grpc.health.v1.Health/"):
            return await continuation(details)
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        given_bytes = given.encode() if isinstance(given, str) else given
        if hmac.compare_digest(given_bytes, self._expected):
            return await continuation(details)
        return _deny_handler(await continuation(details))


def _deny_handler(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
    """A handler of the same shape as ``handler`` that fails with UNAUTHENTICATED."""
    if handler is None:
        return None
    msg = "missing or wrong API key: send metadata 'authorization: Bearer <key>'"

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, msg)

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, msg)
        yield  # pragma: no cover - makes this an async generator

    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream, handler.request_deserializer,
                                                    handler.response_serializer)
    return grpc.unary_unary_rpc_method_handler(unary, handler.request_deserializer,
                                               handler.response_serializer)


_GRPC_CODES = {"invalid": grpc.StatusCode.INVALID_ARGUMENT, "unsupported": grpc.StatusCode.UNIMPLEMENTED,
               "unavailable": grpc.StatusCode.UNAVAILABLE, "internal": grpc.StatusCode.INTERNAL}


async def _abort_for(context: grpc.aio.ServicerContext, err: Exception) -> NoReturn:
    kind = engine_calls.classify(err)
    if kind == "internal":
        logger.exception("internal error in an RPC", exc_info=err)
    await context.abort(_GRPC_CODES[kind], str(err) or type(err).__name__)
    raise AssertionError("unreachable: context.abort raises")


def _unary(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Map a unary RPC's exceptions onto status codes (EngineError → INVALID_ARGUMENT, ...)."""
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(self, request, context)
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as err:  # noqa: BLE001 - every failure becomes a status code
            await _abort_for(context, err)
    return wrapper


def _streaming(fn: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    """``_unary`` for server-streaming RPCs."""
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for msg in fn(self, request, context):
                yield msg
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as err:  # noqa: BLE001 - every failure becomes a status code
            await _abort_for(context, err)
    return wrapper


def _need(value: Any, message: str) -> Any:
    if value is None:
        raise EngineError(message)
    return value


class RuntimeServicer(pb_grpc.RuntimeServicer):
    """Maps each RPC onto the Engine."""

    def __init__(self, engine: Any, chat_template: str | None = None) -> None:
        self.engine = engine
        self.chat_template = chat_template

    @_streaming
    async def Generate(self, request: pb.GenerateRequest,
                       context: grpc.aio.ServicerContext) -> AsyncIterator[pb.GenerateResponse]:
        rid = request.rid or engine_calls.new_rid()
        kwargs = proto_convert.generate_kwargs(request)
        if "prompt" not in kwargs and "input_ids" not in kwargs:
            raise EngineError("GenerateRequest needs `text` or `input_ids`; neither was set")
        engine_calls.check_sampling_params(kwargs["sampling_params"])
        if not request.stream:
            outs = await engine_calls.generate(self.engine, rid=rid, **kwargs)
            for out in outs if isinstance(outs, list) else [outs]:
                yield proto_convert.generate_response(rid, out, stream=False, sent_logprobs=0)
            return
        sent: dict[int, int] = {}
        async with engine_calls.GenerationStream(self.engine, rid=rid, **kwargs) as stream:
            async for chunk in stream:
                index = int(chunk.get("index", 0))
                msg = proto_convert.generate_response(rid, chunk, stream=True, sent_logprobs=sent.get(index, 0))
                sent[index] = sent.get(index, 0) + len(msg.logprobs)
                yield msg

    @_unary
    async def Score(self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        prefix = _need(proto_convert.prefix_arg(request), "ScoreRequest needs `prefix` or `prefix_ids`; neither was set")
        if not request.continuations:
            raise EngineError("ScoreRequest.continuations is empty; give at least one continuation")
        results = await engine_calls.call(self.engine, "score", prefix, list(request.continuations))
        return pb.ScoreResponse(choices=[
            pb.ChoiceScore(logprob_sum=float(r["logprob_sum"]), normalized_logprob=float(r["normalized_logprob"]),
                           num_tokens=int(r["num_tokens"]),
                           token_logprobs=[float(x) for x in r.get("token_logprobs", [])])
            for r in results])

    @_unary
    async def Warm(self, request: pb.WarmRequest, context: grpc.aio.ServicerContext) -> pb.WarmResponse:
        prefix = _need(proto_convert.prefix_arg(request), "WarmRequest needs `prefix` or `prefix_ids`; neither was set")
        pin: dict[str, Any] = {"expect": request.expect} if request.expect else {}   # NOTE: old clients send 0
        if pin and request.ttl_s > 0:
            pin["ttl_s"] = request.ttl_s
        out = await engine_calls.call(self.engine, "warm", prefix, **pin)
        return pb.WarmResponse(prompt_tokens=int(out.get("prompt_tokens", 0)),
                               cached_tokens=int(out.get("cached_tokens", 0)), rid=str(out.get("rid", "")))

    @_unary
    async def Abort(self, request: pb.AbortRequest, context: grpc.aio.ServicerContext) -> pb.AbortResponse:
        if not request.rid:
            raise EngineError("AbortRequest.rid is empty")
        found = self.engine.abort(request.rid)
        return pb.AbortResponse(found=found if isinstance(found, bool) else True)

    @_unary
    async def FlushCache(self, request: pb.FlushCacheRequest,
                         context: grpc.aio.ServicerContext) -> pb.FlushCacheResponse:
        ok = await engine_calls.call(self.engine, "flush_cache")
        return pb.FlushCacheResponse(success=bool(ok) if ok is not None else True)

    @_unary
    async def GetModelInfo(self, request: pb.ModelInfoRequest,
                           context: grpc.aio.ServicerContext) -> pb.ModelInfoResponse:
        info = await engine_calls.call(self.engine, "model_info")
        return proto_convert.model_info(info, self.chat_template)

    @_unary
    async def GetMetrics(self, request: pb.MetricsRequest, context: grpc.aio.ServicerContext) -> pb.MetricsResponse:
        return proto_convert.metrics(await engine_calls.call(self.engine, "metrics"))


async def start_grpc_server(engine: Any, host: str, port: int, api_key: str | None = None,
                            chat_template: str | None = None) -> tuple[grpc.aio.Server, int]:
    """Start the Runtime + health services on ``host:port`` (0 = any free port); returns (server, port)."""
    interceptors = [ApiKeyInterceptor(api_key)] if api_key else []
    server = grpc.aio.server(interceptors=interceptors, options=[
        ("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)])
    pb_grpc.add_RuntimeServicer_to_server(RuntimeServicer(engine, chat_template), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"gRPC server could not bind {host}:{port}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    server.health = health  # type: ignore[attr-defined]  # launch.py flips it to NOT_SERVING on drain
    server.engine_watch = asyncio.ensure_future(_watch_engine(server, engine))  # type: ignore[attr-defined]
    logger.info("gRPC Runtime service listening on %s:%d", host, bound)
    return server, bound


async def _watch_engine(server: grpc.aio.Server, engine: Any, every_s: float = 1.0) -> None:
    """NOT_SERVING once the engine stops (its worker crashed): health checks must not report a server that
    can only refuse requests as healthy. Ends with the server."""
    while await server.wait_for_termination(timeout=every_s):   # (True: timed out, i.e. still serving)
        if getattr(engine, "dead", None):
            logger.error("the engine stopped (%s): gRPC health is NOT_SERVING", engine.dead)
            await set_not_serving(server)
            return


async def set_not_serving(server: grpc.aio.Server) -> None:
    """Mark the server NOT_SERVING in health checks (first step of a graceful drain)."""
    health = getattr(server, "health", None)
    if health is not None:
        for name in ("", SERVICE_NAME):
            await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
