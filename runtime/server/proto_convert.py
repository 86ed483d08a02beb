"""Mapping between proto messages (proto/sglc.proto) and the Engine's dicts."""
from __future__ import annotations

import json
import math
from typing import Any

from proto import sglc_pb2 as pb

from .engine_calls import new_rows

_SP_OPTIONAL = [f.name for f in pb.SamplingParams.DESCRIPTOR.fields if f.has_presence]
_SP_REPEATED = [f.name for f in pb.SamplingParams.DESCRIPTOR.fields if not f.has_presence]


def sampling_params_to_dict(sp: pb.SamplingParams) -> dict[str, Any]:
    """The set fields of a proto SamplingParams as a ``SamplingParams.from_dict`` dict."""
    out: dict[str, Any] = {name: getattr(sp, name) for name in _SP_OPTIONAL if sp.HasField(name)}
    for name in _SP_REPEATED:
        values = list(getattr(sp, name))
        if values:
            out[name] = values
    for name in ("temperature", "top_p", "min_p", "frequency_penalty", "presence_penalty",
                 "repetition_penalty"):
        if name in out:  # NOTE: float32 on the wire; round so 0.9 stays 0.9, not 0.8999999762
            out[name] = float(f"{out[name]:.6g}")
    return out


def generate_kwargs(req: pb.GenerateRequest) -> dict[str, Any]:
    """``Engine.async_generate`` keyword arguments for a GenerateRequest (rid and stream excluded)."""
    kind = req.WhichOneof("input")
    kwargs: dict[str, Any] = {
        "sampling_params": sampling_params_to_dict(req.sampling_params),
        "return_logprob": req.return_logprob,
        "top_logprobs_num": req.top_logprobs_num,
        "logprob_start_len": req.logprob_start_len if req.HasField("logprob_start_len") else -1,
        "return_text_in_logprobs": req.return_text_in_logprobs,
    }
    if kind == "text":
        kwargs["prompt"] = req.text
    elif kind == "input_ids":
        kwargs["input_ids"] = list(req.input_ids.ids)
    return kwargs


def prefix_arg(req: pb.ScoreRequest | pb.WarmRequest) -> str | list[int] | None:
    """The prefix of a Score/Warm request: text, token ids, or None when unset."""
    kind = req.WhichOneof("prefix_input")
    if kind == "prefix":
        return req.prefix
    if kind == "prefix_ids":
        return list(req.prefix_ids.ids)
    return None


def _token_logprobs(rows: list | None, tops: list | None = None) -> list[pb.TokenLogprob]:
    """``[[logprob|None, token_id(, text)], ...]`` (+ per-position top lists) as TokenLogprob messages."""
    out = []
    for i, row in enumerate(rows or []):
        msg = pb.TokenLogprob(token_id=int(row[1]), text=row[2] if len(row) > 2 else "")
        if row[0] is not None and not math.isnan(row[0]):
            msg.logprob = float(row[0])
        if tops is not None and i < len(tops) and tops[i]:
            msg.top.extend(pb.TopLogprob(token_id=int(t[1]), logprob=float(t[0]), text=t[2] if len(t) > 2 else "")
                           for t in tops[i])
        out.append(msg)
    return out


def meta_info(meta: dict[str, Any]) -> pb.MetaInfo:
    """The engine's final ``meta_info`` dict as a MetaInfo message (all of it also as JSON)."""
    reason = meta.get("finish_reason") or {}
    if isinstance(reason, str):
        reason = {"type": reason}
    msg = pb.MetaInfo(
        id=str(meta.get("id", "")),
        prompt_tokens=int(meta.get("prompt_tokens", 0)),
        completion_tokens=int(meta.get("completion_tokens", 0)),
        cached_tokens=int(meta.get("cached_tokens", 0)),
        finish_reason=str(reason.get("type", "")),
        forward_passes=int(meta.get("forward_passes", 0)),
        json=json.dumps(meta, default=str),
    )
    matched = reason.get("matched")
    if isinstance(matched, str):
        msg.matched_stop = matched
    elif isinstance(matched, int):
        msg.matched_stop_token_id = matched
    if reason.get("type") == "abort":
        msg.abort_message = str(reason.get("message", ""))
    msg.input_token_logprobs.extend(
        _token_logprobs(meta.get("input_token_logprobs"), meta.get("input_top_logprobs")))
    msg.output_token_logprobs.extend(
        _token_logprobs(meta.get("output_token_logprobs"), meta.get("output_top_logprobs")))
    return msg


def generate_response(rid: str, out: dict[str, Any], stream: bool, sent_logprobs: int) -> pb.GenerateResponse:
    """One GenerateResponse from an engine output or stream chunk.

    ``sent_logprobs`` is how many output logprobs of this sample were already sent, so a stream
    message carries only the new positions.
    """
    finished = bool(out.get("finished", True)) if stream else True
    meta = out.get("meta_info") or {}
    msg = pb.GenerateResponse(rid=rid, index=int(out.get("index", 0)), text=out.get("text", ""),
                              token_ids=[int(t) for t in out.get("output_ids", [])], finished=finished)
    rows, tops = meta.get("output_token_logprobs"), meta.get("output_top_logprobs")
    if rows:
        if stream:
            rows = new_rows(rows, sent_logprobs, len(msg.token_ids))
            tops = new_rows(tops, sent_logprobs, len(msg.token_ids)) if tops else None
        msg.logprobs.extend(_token_logprobs(rows, tops))
    if finished:
        msg.meta_info.CopyFrom(meta_info(meta))
    return msg


def model_info(info: dict[str, Any], chat_template: str | None) -> pb.ModelInfoResponse:
    """The engine's ``model_info()`` dict as a ModelInfoResponse."""
    eos = info.get("eos_token_ids", info.get("eos_token_id", []))
    if isinstance(eos, int):
        eos = [eos]
    return pb.ModelInfoResponse(
        model_path=str(info.get("model_path", "")),
        context_length=int(info.get("context_length", info.get("max_context_len", 0)) or 0),
        vocab_size=int(info.get("vocab_size", 0) or 0),
        eos_token_ids=[int(e) for e in eos or []],
        chat_template=chat_template or "",
        json=json.dumps(info, default=str),
    )


def metrics(m: dict[str, Any]) -> pb.MetricsResponse:
    """The engine's ``metrics()`` dict as a MetricsResponse (unknown keys only in ``json``)."""
    msg = pb.MetricsResponse(json=json.dumps(m, default=str))
    for field in pb.MetricsResponse.DESCRIPTOR.fields:
        if field.name != "json" and m.get(field.name) is not None:
            kind = float if field.type == field.TYPE_DOUBLE else int
            setattr(msg, field.name, kind(m[field.name]))
    return msg
