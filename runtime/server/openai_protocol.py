"""OpenAI request models and their mapping onto Engine arguments; response pieces (logprobs, usage).

Request fields OpenAI defines map onto ``SamplingParams``; SGLang's extras (``top_k``, ``min_p``,
``regex``, ``json_schema``, ``ebnf``, ``ignore_eos``, ...) are accepted as top-level fields, as the
official client sends them through ``extra_body``.
"""
from __future__ import annotations

import codecs
import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from runtime.errors import EngineError

from .engine_calls import check_sampling_params


class StreamOptions(BaseModel):
    include_usage: bool = False


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: dict[str, Any] | None = None


class _Common(BaseModel):
    """Fields shared by completions and chat completions."""

    model_config = ConfigDict(extra="ignore")
    model: str = "default"
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int = 1
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    response_format: ResponseFormat | None = None
    # SGLang extras (through the client's extra_body)
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    min_tokens: int | None = None
    ignore_eos: bool | None = None
    stop_token_ids: list[int] | None = None
    skip_special_tokens: bool | None = None
    no_stop_trim: bool | None = None
    regex: str | None = None
    json_schema: str | dict[str, Any] | None = None
    ebnf: str | None = None
    rid: str | None = None


class CompletionRequest(_Common):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = 16  # OpenAI's default for completions
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None


def _constraint(req: _Common) -> dict[str, Any]:
    fmt = req.response_format
    if fmt is None or fmt.type == "text":
        return {}
    if fmt.type == "json_object":
        return {"json_schema": json.dumps({"type": "object"})}
    spec = fmt.json_schema or {}
    schema = spec.get("schema", spec.get("schema_"))
    if schema is None:
        raise EngineError("response_format.json_schema.schema is required for type 'json_schema'")
    return {"json_schema": json.dumps(schema)}


def sampling_params(req: _Common, max_tokens: int | None) -> dict[str, Any]:
    """The ``SamplingParams`` dict of an OpenAI request (validated; errors name the field)."""
    if req.logit_bias:
        raise EngineError("logit_bias is not supported")
    params: dict[str, Any] = {
        "max_new_tokens": max_tokens, "temperature": req.temperature, "top_p": req.top_p, "n": req.n,
        "stop": req.stop, "seed": req.seed, "presence_penalty": req.presence_penalty,
        "frequency_penalty": req.frequency_penalty, "top_k": req.top_k, "min_p": req.min_p,
        "repetition_penalty": req.repetition_penalty, "min_new_tokens": req.min_tokens,
        "ignore_eos": req.ignore_eos, "stop_token_ids": req.stop_token_ids,
        "skip_special_tokens": req.skip_special_tokens, "no_stop_trim": req.no_stop_trim,
        "regex": req.regex, "json_schema": req.json_schema, "ebnf": req.ebnf,
    }
    constraint = _constraint(req)
    if constraint and any(params[k] is not None for k in ("regex", "json_schema", "ebnf")):
        raise EngineError("response_format cannot be combined with regex/json_schema/ebnf")
    params.update(constraint)
    params = {k: v for k, v in params.items() if v is not None}
    return check_sampling_params(params)


def prompts(req: CompletionRequest) -> list[dict[str, Any]]:
    """One ``{"prompt": str}`` or ``{"input_ids": [...]}`` per prompt of a completion request."""
    p = req.prompt
    if isinstance(p, str):
        return [{"prompt": p}]
    if not p:
        raise EngineError("prompt must not be empty")
    if isinstance(p[0], int):
        return [{"input_ids": list(p)}]
    if isinstance(p[0], str):
        return [{"prompt": x} for x in p]
    return [{"input_ids": list(x)} for x in p]


def finish_reason(meta: dict[str, Any]) -> str | None:
    reason = meta.get("finish_reason")
    if reason is None:
        return None
    return reason if isinstance(reason, str) else reason.get("type")


def matched_stop(meta: dict[str, Any]) -> str | int | None:
    reason = meta.get("finish_reason")
    return reason.get("matched") if isinstance(reason, dict) else None


def usage(metas: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """OpenAI usage over all samples; prompt tokens count once per prompt (every ``n``-th sample)."""
    prompt = sum(int(m.get("prompt_tokens", 0)) for m in metas[::n])
    cached = sum(int(m.get("cached_tokens", 0)) for m in metas[::n])
    completion = sum(int(m.get("completion_tokens", 0)) for m in metas)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


_NO_TABLE: set[int] = set()   # ids of the (long-lived) tokenizers TokenizerInfo could not read


def token_bytes(tokenizer: Any, token_id: int) -> bytes:
    """The raw bytes of one token (the grammar's table of them: byte-level BPE and SentencePiece byte pieces).
    Decoding a token alone gives U+FFFD for a piece of a multi-byte character (an emoji is often 3-4 tokens of
    one byte each), and OpenAI's ``bytes`` exist so that clients can join them. Special tokens: their text."""
    if tokenizer is None:
        return str(token_id).encode()
    from grammar.tokenizer_info import TokenizerInfo

    table: tuple = ()
    if id(tokenizer) not in _NO_TABLE:
        try:
            table = TokenizerInfo.from_hf(tokenizer).token_bytes
        except Exception:  # noqa: BLE001 - NOTE: a tokenizer the grammar can't read (no EOS): the token's text
            _NO_TABLE.add(id(tokenizer))   # (not tried again for every token)
    raw = table[token_id] if 0 <= token_id < len(table) else None
    return raw if raw is not None else tokenizer.decode([token_id]).encode()


def _token(tokenizer: Any, token_id: int, raw: bytes) -> str:
    """A token (its bytes ``raw``) as text; a piece of a character as OpenAI writes it, ``bytes:\\xf0\\x9f``."""
    if tokenizer is None:
        return str(token_id)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
    return tokenizer.decode([token_id])


def completion_logprobs(tokenizer: Any, rows: list, tops: list | None, offset: int,
                        decoder: Any = None) -> tuple[dict[str, Any], int]:
    """The legacy completions ``logprobs`` object for output positions, and the text offset after them.

    ``offset``: the text offset of the first; ``decoder``: the choice's incremental UTF-8 decoder (kept across
    stream chunks), so a character split over tokens moves the offset once, at its last byte."""
    decoder = decoder or codecs.getincrementaldecoder("utf-8")(errors="replace")
    tokens, offsets = [], []
    for r in rows:
        raw = token_bytes(tokenizer, r[1])
        tokens.append(_token(tokenizer, r[1], raw))
        offsets.append(offset)
        offset += len(decoder.decode(raw))
    top = [{_token(tokenizer, t[1], token_bytes(tokenizer, t[1])): t[0] for t in (tops[i] or [])}
           for i in range(len(rows))] if tops else None
    return {"tokens": tokens, "token_logprobs": [r[0] for r in rows], "top_logprobs": top,
            "text_offset": offsets}, offset


def chat_logprobs(tokenizer: Any, rows: list, tops: list | None) -> dict[str, Any]:
    """The chat ``logprobs`` object: ``{"content": [{token, logprob, bytes, top_logprobs}]}``."""
    def entry(lp: float, tid: int) -> dict[str, Any]:
        raw = token_bytes(tokenizer, tid)
        return {"token": _token(tokenizer, tid, raw), "logprob": lp, "bytes": list(raw)}

    content = []
    for i, r in enumerate(rows):
        item = entry(r[0], r[1])
        item["top_logprobs"] = [entry(t[0], t[1]) for t in (tops[i] or [])] if tops else []
        content.append(item)
    return {"content": content}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())
