"""Finish checks (EOS, stop tokens/strings, length) and the output events sent back to the Engine."""
from __future__ import annotations

from typing import Any

from .scheduler.request import FinishReason, Req


class OutputProcessor:
    """Owns detokenization: decides when a request is finished and what text it has produced."""

    def __init__(self, tokenizer, eos_ids: set[int]) -> None:
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids

    def decode(self, req: Req) -> str:
        if self.tokenizer is None:
            return ""
        sp = req.sampling_params
        return self.tokenizer.decode(req.output_ids, skip_special_tokens=sp.skip_special_tokens)

    def check_finish(self, req: Req) -> None:
        sp = req.sampling_params
        out = req.output_ids
        if out:
            last = out[-1]
            if req.matcher is not None and (not req.matcher.accept_token(last) or req.matcher.is_terminated()):
                req.finish, req.matched_stop = FinishReason.STOP, last
                return
            eos = last in sp.stop_token_ids or (not sp.ignore_eos and last in self.eos_ids)
            if eos and len(out) >= sp.min_new_tokens:
                req.finish, req.matched_stop = FinishReason.STOP, last
                return
            if sp.stop:
                text = self.decode(req)
                # NOTE: the text is kept current below min_new_tokens too: the next search starts near its end,
                # so a stop string written before min_new_tokens is not taken later
                if len(out) >= sp.min_new_tokens:
                    hit = _first_stop(text, sp.stop, len(req.text) - max(map(len, sp.stop)))
                    if hit is not None:
                        idx, s = hit
                        req.text = text if sp.no_stop_trim else text[:idx]
                        req.finish, req.matched_stop = FinishReason.STOP, s
                        return
                req.text = text
        if len(out) >= sp.max_new_tokens:
            req.finish = FinishReason.LENGTH

    def event(self, req: Req) -> dict[str, Any] | None:
        """The incremental output for ``req`` now (None if a non-streaming request isn't done)."""
        if not req.finished and not req.stream:
            return None
        # NOTE: check_finish keeps req.text for a request with stop strings (cut at the one that ended it); any
        # other finish (EOS, a stop token, length) decodes the whole output here
        cut = req.finish is FinishReason.STOP and isinstance(req.matched_stop, str)
        if not cut and not (req.sampling_params.stop and not req.finished):
            req.text = self.decode(req) if req.finish is not FinishReason.ABORT or req.output_ids else req.text
        text = req.text
        end = len(text)
        if not req.finished:
            if text.endswith("\ufffd"):
                end = len(text.rstrip("\ufffd"))  # NOTE: hold back a partial UTF-8 character
            sp = req.sampling_params
            if sp.stop and not sp.no_stop_trim:
                # NOTE: hold back a tail that may begin a stop string: once the stop completes, the text is cut
                # before it, and a streamed piece can't be taken back (the joined stream must equal the text)
                end -= _partial_stop(text[:end], sp.stop)
        delta = text[req.sent_text:end]
        ids = req.output_ids[req.sent_ids:]
        req.sent_text, req.sent_ids = max(end, req.sent_text), len(req.output_ids)
        if not delta and not ids and not req.finished:
            return None
        return {"rid": req.rid, "text": delta, "output_ids": ids, "finished": req.finished,
                "meta_info": meta_info(req), "error": req.error}


def meta_info(req: Req) -> dict[str, Any]:
    m: dict[str, Any] = {
        "id": req.rid.split("#")[0],
        "prompt_tokens": len(req.input_ids),
        "completion_tokens": len(req.output_ids),
        "cached_tokens": req.cached_tokens,
        "finish_reason": req.finish_reason_dict(),
        "forward_passes": req.forward_passes,
        "jump_forward_tokens": req.forced_tokens,
    }
    if req.return_logprob:
        m["input_token_logprobs"] = [list(x) for x in req.input_token_logprobs]
        m["output_token_logprobs"] = [list(x) for x in req.output_token_logprobs]
        if req.top_logprobs_num:
            m["input_top_logprobs"] = [[list(t) for t in x] if x else None for x in req.input_top_logprobs]
            m["output_top_logprobs"] = [[list(t) for t in x] for x in req.output_top_logprobs]
    return m


def _first_stop(text: str, stops: list[str], start: int) -> tuple[int, str] | None:
    best = None
    for s in stops:
        i = text.find(s, max(start, 0))
        if i != -1 and (best is None or i < best[0]):
            best = (i, s)
    return best


def _partial_stop(text: str, stops: list[str]) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of a stop string (0: none)."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


def with_token_text(meta: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    """SGLang's ``return_text_in_logprobs``: ``[logprob, id]`` rows become ``[logprob, id, text]``."""
    def rows(xs: list) -> list:
        return [[r[0], r[1], tokenizer.decode([r[1]])] for r in xs]

    meta = dict(meta)
    for key in ("input_token_logprobs", "output_token_logprobs"):
        if meta.get(key):
            meta[key] = rows(meta[key])
    for key in ("input_top_logprobs", "output_top_logprobs"):
        if meta.get(key):
            meta[key] = [rows(pos) if pos else pos for pos in meta[key]]
    return meta
