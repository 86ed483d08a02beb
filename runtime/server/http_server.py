"""The HTTP app (FastAPI): SGLang's native ``/generate`` and admin routes; ``/v1`` lives in openai_api.

Errors share one JSON shape, OpenAI's: ``{"error": {"message", "type", "param", "code"}}`` — bad
input is HTTP 400 with a message naming the field, a missing/wrong API key 401.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from runtime.errors import EngineError

from . import engine_calls, metrics

logger = logging.getLogger(__name__)

T = TypeVar("T")
DISCONNECT_POLL_S = 0.5


@dataclass
class ServerState:
    """What the routes need: the engine and the server's options (one per app, no globals)."""

    engine: Any
    api_key: str | None = None
    chat_template: str = ""
    served_model_name: str = "default"
    draining: bool = False


class ApiError(Exception):
    """An HTTP error with OpenAI's error shape."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param


def error_body(status: int, message: str, kind: str = "invalid_request_error",
               param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def state_of(request: Request) -> ServerState:
    return request.app.state.sglc


def require_api_key(request: Request) -> None:
    """Dependency: with ``--api-key``, require ``Authorization: Bearer KEY``."""
    key = state_of(request).api_key
    if not key:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    # NOTE: the scheme's name is case-insensitive (RFC 7235): "bearer KEY" is the same as "Bearer KEY"
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise ApiError(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                       "authentication_error")


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it (which aborts its engine requests)."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                logger.info("client of %s disconnected before the response; cancelling", request.url.path)
                raise ApiError(499, "client disconnected")
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def sse(obj: Any) -> bytes:
    """One server-sent event carrying ``obj`` as JSON."""
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


SSE_DONE = b"data: [DONE]\n\n"


# (HTTP status, OpenAI error type) per engine_calls.classify() kind. NOTE: "unsupported" stays a 400:
# the OpenAI client retries 5xx answers.
_HTTP_ERRORS = {"invalid": (400, "invalid_request_error"), "unsupported": (400, "invalid_request_error"),
                "unavailable": (503, "service_unavailable"), "internal": (500, "internal_error")}


def http_error(err: Exception) -> tuple[int, dict[str, Any]]:
    """Status and body for a failure of a request (EngineError or anything unexpected)."""
    kind = engine_calls.classify(err)
    status, typ = _HTTP_ERRORS[kind]
    return status, error_body(status, str(err) or type(err).__name__, typ)


def sse_error(err: Exception) -> bytes:
    """The event that reports a failure after a stream started (the status is already 200)."""
    return sse(http_error(err)[1])


class GenerateReqInput(BaseModel):
    """SGLang's native ``/generate`` body (one prompt or a batch)."""

    model_config = ConfigDict(extra="ignore")
    text: str | list[str] | None = None
    input_ids: list[int] | list[list[int]] | None = None
    sampling_params: dict[str, Any] | list[dict[str, Any]] | None = None
    stream: bool = False
    return_logprob: bool = False
    top_logprobs_num: int = 0
    logprob_start_len: int = -1
    return_text_in_logprobs: bool = False
    rid: str | list[str] | None = None


def _batch(req: GenerateReqInput) -> tuple[list[dict[str, Any]], bool]:
    """Per-prompt ``async_generate`` kwargs for a native request, and whether it was a batch."""
    if req.text is not None and req.input_ids is not None:
        raise EngineError("give either `text` or `input_ids`, not both")
    if req.text is None and req.input_ids is None:
        raise EngineError("the request needs `text` or `input_ids`; neither was given")
    if req.text is not None:
        is_batch = isinstance(req.text, list)
        inputs = [{"prompt": t} for t in (req.text if is_batch else [req.text])]
    else:
        ids = req.input_ids or []
        is_batch = bool(ids) and isinstance(ids[0], list)
        inputs = [{"input_ids": x} for x in (ids if is_batch else [ids])]
    if not inputs:
        raise EngineError("empty batch: pass at least one prompt (text or input_ids)")
    params = req.sampling_params
    if isinstance(params, list):
        if len(params) != len(inputs):
            raise EngineError(f"sampling_params: {len(params)} dicts given for {len(inputs)} prompts")
    else:
        params = [params or {}] * len(inputs)
    rids = req.rid if isinstance(req.rid, list) else [req.rid] * len(inputs)
    if len(rids) != len(inputs):
        raise EngineError(f"rid: {len(rids)} ids given for {len(inputs)} prompts")
    out = []
    for i, (inp, sp, rid) in enumerate(zip(inputs, params, rids)):
        out.append({**inp, "sampling_params": engine_calls.check_sampling_params(sp),
                    "return_logprob": req.return_logprob, "top_logprobs_num": req.top_logprobs_num,
                    "logprob_start_len": req.logprob_start_len,
                    "return_text_in_logprobs": req.return_text_in_logprobs,
                    "rid": (f"{rid}-{i}" if is_batch and rid and not isinstance(req.rid, list) else rid)
                    or engine_calls.new_rid()})
    return out, is_batch


native = APIRouter()


@native.post("/generate", dependencies=[Depends(require_api_key)])
async def generate(request: Request) -> Response:
    """SGLang's native generate: JSON out, or SSE with cumulative ``text``/``output_ids`` per event."""
    st = state_of(request)
    req = await _parse_json(request, GenerateReqInput)
    batch, is_batch = _batch(req)
    n = max(1, int(batch[0]["sampling_params"].get("n") or 1))
    if not req.stream:
        results = await until_disconnect(
            request, engine_calls.gather_all([engine_calls.generate(st.engine, **kw) for kw in batch]))
        flat = [o for r in results for o in (r if isinstance(r, list) else [r])]
        outs = [{**o, "index": i} for i, o in enumerate(flat)]
        return JSONResponse(outs if is_batch or len(outs) > 1 else outs[0])
    streams = [engine_calls.GenerationStream(st.engine, **kw) for kw in batch]
    await until_disconnect(request, engine_calls.start_all(streams))
    return StreamingResponse(_native_events(streams, n), media_type="text/event-stream")


async def _native_events(streams: list[engine_calls.GenerationStream], n: int) -> Any:
    texts: dict[int, str] = {}
    ids: dict[int, list[int]] = {}
    try:
        async for i, chunk in engine_calls.merge(streams):
            index = i * n + int(chunk.get("index", 0))
            texts[index] = texts.get(index, "") + chunk.get("text", "")
            ids.setdefault(index, []).extend(chunk.get("output_ids", []))
            out = {"text": texts[index], "output_ids": list(ids[index]),
                   "meta_info": chunk.get("meta_info", {}), "finished": bool(chunk.get("finished")),
                   "index": index}
            yield sse(out)
    except Exception as err:
        logger.exception("stream failed")
        yield sse_error(err)
    yield SSE_DONE


@native.get("/health")
async def health(request: Request) -> Response:
    """200 while serving; 503 while draining for shutdown, or once the engine stopped (its worker crashed)."""
    st = state_of(request)
    if st.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    dead = getattr(st.engine, "dead", None)
    if dead:
        return JSONResponse({"status": "unavailable", "message": dead}, status_code=503)
    return JSONResponse({"status": "ok"})


@native.get("/health_generate", dependencies=[Depends(require_api_key)])
async def health_generate(request: Request) -> Response:
    """Health plus one generated token: proves the model runs."""
    out = await engine_calls.generate(state_of(request).engine, prompt="ping", rid=engine_calls.new_rid(),
                                      sampling_params={"max_new_tokens": 1, "temperature": 0})
    return JSONResponse({"status": "ok", "completion_tokens": out["meta_info"].get("completion_tokens")})


@native.get("/get_model_info", dependencies=[Depends(require_api_key)])
async def get_model_info(request: Request) -> Response:
    st = state_of(request)
    info = await engine_calls.call(st.engine, "model_info")
    return JSONResponse({**info, "is_generation": True, "served_model_name": st.served_model_name})


@native.api_route("/flush_cache", methods=["GET", "POST"], dependencies=[Depends(require_api_key)])
async def flush_cache(request: Request) -> Response:
    """Drop the radix cache (400 when the engine refuses, e.g. while requests run)."""
    ok = await engine_calls.call(state_of(request).engine, "flush_cache")
    ok = True if ok is None else bool(ok)
    return JSONResponse({"success": ok}, status_code=200 if ok else 400)


class AbortReq(BaseModel):
    rid: str


@native.post("/abort_request", dependencies=[Depends(require_api_key)])
async def abort_request(req: AbortReq, request: Request) -> Response:
    found = state_of(request).engine.abort(req.rid)
    return JSONResponse({"found": found if isinstance(found, bool) else True})


@native.get("/metrics")
async def prometheus_metrics(request: Request) -> Response:
    """Prometheus text: requests, tokens, cache hit rate, queue length, KV usage."""
    m = await engine_calls.call(state_of(request).engine, "metrics")
    return PlainTextResponse(metrics.render(m, metrics.kv_usage(m)), media_type="text/plain; version=0.0.4")


async def _parse_json(request: Request, model: type[BaseModel]) -> Any:
    """Parse the body as JSON whatever its Content-Type (``curl -d`` sends a form type) into ``model``."""
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError as err:
        raise ApiError(400, f"the request body is not valid JSON: {err}") from err
    try:
        return model.model_validate(body)
    except ValidationError as err:
        raise RequestValidationError(err.errors()) from err


def _validation_message(err: RequestValidationError) -> tuple[str, str | None]:
    parts, param = [], None
    for e in err.errors():
        if e.get("type") == "json_invalid":   # (its loc is a character offset, not a field)
            at = [x for x in e.get("loc", ()) if isinstance(x, int)]
            where = f" at character {at[-1]}" if at else ""
            return f"the request body is not valid JSON{where}: {e.get('ctx', {}).get('error', e.get('msg'))}", None
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        param = param or ".".join(loc) or None
        parts.append(f"{'.'.join(loc) or 'body'}: {e.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts), param


def create_app(state: ServerState) -> FastAPI:
    """The HTTP app over ``state.engine``: native routes and the OpenAI-compatible ``/v1``."""
    from .openai_api import router as openai_router

    app = FastAPI(title="sglc runtime", summary="SGLang-native and OpenAI-compatible API over one Engine")
    app.state.sglc = state
    app.include_router(native)
    app.include_router(openai_router)

    @app.exception_handler(EngineError)
    async def _engine_error(request: Request, err: EngineError) -> Response:
        status, body = http_error(err)
        logger.info("%d %s: %s", status, request.url.path, err)
        return JSONResponse(body, status_code=status)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, err: Exception) -> Response:
        logger.error("500 %s", request.url.path, exc_info=err)
        status, body = http_error(err)
        return JSONResponse(body, status_code=status)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> Response:
        return JSONResponse(error_body(err.status, err.message, err.kind, err.param), status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> Response:
        # NOTE: unknown routes (404) and wrong methods (405) in OpenAI's error shape too
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        message = f"{err.detail}: {request.method} {request.url.path}"
        return JSONResponse(error_body(err.status_code, message, kind), status_code=err.status_code,
                            headers=getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> Response:
        message, param = _validation_message(err)
        return JSONResponse(error_body(400, message, param=param), status_code=400)

    return app
