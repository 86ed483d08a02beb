"""OpenAI-compatible routes: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``.

Each prompt becomes one Engine request (with its own rid, so a disconnect aborts it); ``n`` samples
of a prompt come back from the engine with ``index`` 0..n-1, and choice ``i * n + index`` is
sample ``index`` of prompt ``i``.
"""
from __future__ import annotations

import codecs
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from runtime.errors import EngineError

from . import chat_template, engine_calls
from . import openai_protocol as oai
from .http_server import SSE_DONE, ServerState, require_api_key, sse, sse_error, state_of, until_disconnect

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])

# (choice index, text delta, logprob rows, top rows, finish reason or None, first chunk of the choice)
ChoiceFn = Callable[[int, str, list, "list | None", "str | None", bool], dict[str, Any]]


@router.get("/models")
async def models(request: Request) -> Response:
    st = state_of(request)
    info = await engine_calls.call(st.engine, "model_info")
    card = {"id": st.served_model_name, "object": "model", "created": oai.now(), "owned_by": "sglc",
            "root": str(info.get("model_path", st.served_model_name))}
    if info.get("context_length"):
        card["max_model_len"] = info["context_length"]
    return JSONResponse({"object": "list", "data": [card]})


def _check_context(st: ServerState, inputs: list[dict[str, Any]], max_tokens: int | None) -> list[dict[str, Any]]:
    """The inputs as token ids (text prompts encoded here, once), refused with a 400 when a prompt and
    ``max_tokens`` exceed the context (as OpenAI does; the engine itself would cap the output silently)."""
    texts = [inp["prompt"] for inp in inputs if "prompt" in inp]
    encode = getattr(st.engine, "encode", None)
    if texts and encode is not None and getattr(st.engine, "tokenizer", None) is not None:
        ids = iter(encode(texts))
        inputs = [{"input_ids": next(ids)} if "prompt" in inp else inp for inp in inputs]
    ctx = int(st.engine.model_info().get("context_length") or 0)
    if max_tokens is None or not ctx:
        return inputs
    for inp in inputs:
        n = len(inp.get("input_ids") or ())
        if n and n + max_tokens > ctx:
            raise EngineError(f"max_tokens: this model's context length is {ctx} tokens and the prompt has {n}, "
                              f"so at most {max(ctx - n, 0)} completion tokens fit; {max_tokens} were requested")
    return inputs


def _requests(st: ServerState, inputs: list[dict[str, Any]], params: dict[str, Any], top: int | None,
              rid: str | None) -> list[dict[str, Any]]:
    inputs = _check_context(st, inputs, params.get("max_new_tokens"))
    return [{**inp, "sampling_params": params, "return_logprob": top is not None,
             "top_logprobs_num": top or 0,
             "rid": f"{rid}-{i}" if rid and len(inputs) > 1 else rid or engine_calls.new_rid()}
            for i, inp in enumerate(inputs)]


async def _run(request: Request, kws: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Non-streaming: every prompt's outputs, flattened in choice order."""
    engine = state_of(request).engine
    results = await until_disconnect(
        request, engine_calls.gather_all([engine_calls.generate(engine, **kw) for kw in kws]))
    return [o for r in results for o in (r if isinstance(r, list) else [r])]


async def _events(streams: list[engine_calls.GenerationStream], n: int, base: dict[str, Any],
                  choice: ChoiceFn, include_usage: bool) -> AsyncIterator[bytes]:
    """SSE chunks in OpenAI's shape for several started streams, then usage (when asked) and [DONE]."""
    sent: dict[int, int] = {}
    metas: dict[int, dict[str, Any]] = {}
    try:
        async for i, chunk in engine_calls.merge(streams):
            index = i * n + int(chunk.get("index", 0))
            meta = chunk.get("meta_info") or {}
            ids = chunk.get("output_ids", [])
            rows = engine_calls.new_rows(meta.get("output_token_logprobs"), sent.get(index, 0), len(ids))
            tops = meta.get("output_top_logprobs")
            tops = engine_calls.new_rows(tops, sent.get(index, 0), len(ids)) if tops else None
            first = index not in sent
            sent[index] = sent.get(index, 0) + len(ids)
            reason = oai.finish_reason(meta) if chunk.get("finished") else None
            if chunk.get("finished"):
                metas[index] = meta
            yield sse({**base, "choices": [choice(index, chunk.get("text", ""), rows, tops, reason, first)]})
        if include_usage:
            ordered = [metas[k] for k in sorted(metas)]
            yield sse({**base, "choices": [], "usage": oai.usage(ordered, n)})
    except Exception as err:
        logger.exception("stream failed")
        yield sse_error(err)
    yield SSE_DONE


async def _stream_response(request: Request, kws: list[dict[str, Any]], n: int, base: dict[str, Any],
                           choice: ChoiceFn, include_usage: bool) -> Response:
    streams = [engine_calls.GenerationStream(state_of(request).engine, **kw) for kw in kws]
    await until_disconnect(request, engine_calls.start_all(streams))  # NOTE: input errors surface here, as a 400, before any SSE
    return StreamingResponse(_events(streams, n, base, choice, include_usage), media_type="text/event-stream")


@router.post("/completions")
async def completions(req: oai.CompletionRequest, request: Request) -> Response:
    st = state_of(request)
    if req.suffix:
        raise EngineError("suffix is not supported")
    if req.best_of not in (None, req.n):
        raise EngineError("best_of is not supported; use n")
    if req.echo and req.logprobs is not None:
        raise EngineError("echo together with logprobs is not supported")
    params = oai.sampling_params(req, 16 if req.max_tokens is None else req.max_tokens)   # (null: the default)
    inputs = oai.prompts(req)
    kws = _requests(st, inputs, params, req.logprobs, req.rid)
    tok = getattr(st.engine, "tokenizer", None)
    echoes = [_prompt_text(inp, tok) if req.echo else "" for inp in inputs]
    n = req.n
    base = {"id": oai.new_id("cmpl"), "object": "text_completion", "created": oai.now(), "model": req.model}

    offsets: dict[int, int] = {}  # per choice: text offset of the next token (for logprobs.text_offset)
    decoders: dict[int, Any] = {}   # per choice: its UTF-8 decoder (a character may span stream chunks)

    def choice(index: int, text: str, rows: list, tops: list | None, reason: str | None,
               first: bool) -> dict[str, Any]:
        prefix = echoes[index // n] if first else ""
        lp = None
        if req.logprobs is not None:
            dec = decoders.setdefault(index, codecs.getincrementaldecoder("utf-8")(errors="replace"))
            lp, offsets[index] = oai.completion_logprobs(tok, rows, tops, offsets.get(index, len(prefix)), dec)
        return {"index": index, "text": prefix + text, "logprobs": lp, "finish_reason": reason}

    if req.stream:
        include = bool(req.stream_options and req.stream_options.include_usage)
        return await _stream_response(request, kws, n, base, choice, include)
    outs = await _run(request, kws)
    choices = []
    for index, out in enumerate(outs):
        meta = out["meta_info"]
        c = choice(index, out["text"], meta.get("output_token_logprobs") or [],
                   meta.get("output_top_logprobs"), oai.finish_reason(meta), True)
        choices.append({**c, "matched_stop": oai.matched_stop(meta)})
    return JSONResponse({**base, "choices": choices, "usage": oai.usage([o["meta_info"] for o in outs], n)})


def _prompt_text(inp: dict[str, Any], tokenizer: Any) -> str:
    if "prompt" in inp:
        return inp["prompt"]
    if tokenizer is None:
        raise EngineError("echo of token-id prompts needs a tokenizer")
    return tokenizer.decode(inp["input_ids"])


@router.post("/chat/completions")
async def chat_completions(req: oai.ChatCompletionRequest, request: Request) -> Response:
    st = state_of(request)
    if req.tools:
        raise EngineError("tools are not supported")
    if req.top_logprobs is not None and not req.logprobs:
        raise EngineError("top_logprobs needs logprobs: true")
    tok = getattr(st.engine, "tokenizer", None)
    ids = chat_template.render_ids(tok, st.chat_template, [m.model_dump() for m in req.messages])
    params = oai.sampling_params(req, req.max_completion_tokens or req.max_tokens)
    top = (req.top_logprobs or 0) if req.logprobs else None
    kws = _requests(st, [{"input_ids": ids}], params, top, req.rid)
    base = {"id": oai.new_id("chatcmpl"), "object": "chat.completion.chunk", "created": oai.now(),
            "model": req.model}

    def chunk_choice(index: int, text: str, rows: list, tops: list | None, reason: str | None,
                     first: bool) -> dict[str, Any]:
        delta: dict[str, Any] = {"role": "assistant", "content": text} if first else {"content": text}
        lp = oai.chat_logprobs(tok, rows, tops) if req.logprobs else None
        return {"index": index, "delta": delta, "logprobs": lp, "finish_reason": reason}

    if req.stream:
        include = bool(req.stream_options and req.stream_options.include_usage)
        return await _stream_response(request, kws, req.n, base, chunk_choice, include)
    outs = await _run(request, kws)
    choices = []
    for index, out in enumerate(outs):
        meta = out["meta_info"]
        lp = (oai.chat_logprobs(tok, meta.get("output_token_logprobs") or [], meta.get("output_top_logprobs"))
              if req.logprobs else None)
        choices.append({"index": index, "message": {"role": "assistant", "content": out["text"]},
                        "logprobs": lp, "finish_reason": oai.finish_reason(meta),
                        "matched_stop": oai.matched_stop(meta)})
    body = {**base, "object": "chat.completion", "choices": choices,
            "usage": oai.usage([o["meta_info"] for o in outs], req.n)}
    return JSONResponse(body)
