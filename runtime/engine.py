"""The in-process ``Engine``: tokenizes, validates, and talks to the worker (scheduler + model).

Sync and async APIs share one mechanism: each call registers a ``_Sink`` for its request ids; a
receiver thread routes the worker's output events to the sinks (a thread-safe queue, or an asyncio
queue on the caller's loop). See docs/engine_api.md for the contract.
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import multiprocessing as mp
import queue
import threading
import uuid
from array import array
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np

from .config import RuntimeConfig
from .errors import EngineError, EngineUnavailable
from .output import with_token_text
from .sampling_params import SamplingParams
from .seq import common_prefix_len
from .tokenizer import encode_many

logger = logging.getLogger(__name__)

_START_TIMEOUT_S = 600


class _Sink:
    """Collects the events of one call (several internal requests when n > 1 or a batch)."""

    def __init__(self, rids: list[str], loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.index = {rid: i for i, rid in enumerate(rids)}
        self.open = set(rids)
        self.loop = loop
        self.q: Any = asyncio.Queue() if loop else queue.Queue()
        self.token_text: Any = None   # a tokenizer: logprob rows get their token's text (return_text_in_logprobs)

    def put(self, evs: list[dict]) -> None:
        """Deliver a list of events (those of one worker message; one wake-up of the caller per list)."""
        if self.loop:
            try:
                self.loop.call_soon_threadsafe(self.q.put_nowait, evs)
            except RuntimeError:
                # NOTE: the caller's loop closed with the call in flight (asyncio.run returned after a timeout or
                # an abandoned stream): nobody listens. Raising here killed the receiver thread, and every later
                # call of the engine waited forever.
                pass
        else:
            self.q.put(evs)


class _DetachedSink(_Sink):
    """The sink of a call nobody waits for (``warm(wait=False)``): its events are dropped, a failure logged."""

    def put(self, evs: list[dict]) -> None:
        for ev in evs:
            if ev.get("error"):
                logger.warning("warm-up %s (not waited for) failed: %s", ev["rid"].split("#")[0], ev["error"])


_MIN_SHARED = 16   # shorter common prefixes with the previous prompt are sent in full


class _Batch:
    """One ``generate`` call encoded for the worker (one message instead of a dict per request).

    Token ids travel as one ``array("i")`` buffer, each prompt as the tokens it shares with the prompt
    before it (a count) plus its own tail: a few-shot batch (one long shared prefix) sends each prompt's
    own tokens only, and the worker rebuilds every prompt from its predecessor's list (``Worker.add_batch``).
    Validation is per prompt where it is cheap (types, length, sampling params; identical
    ``sampling_params`` objects are parsed once) and vectorized for the token range: the shared part of a
    prompt equals tokens already checked, only the tails are converted and range-checked.

    Message: ``("batch", {"ids": array("i") tails, "off": array('q') tail offsets (items + 1),
    "shared": array('q') tokens shared with the previous item, "params": [sampling param dicts],
    "rids": [rid per request], "item": array('q'), "param": array('q'), "start": [logprob_start_len]
    per request, "return_logprob", "top_logprobs_num", "stream"})``.
    """

    def __init__(self, vocab: int, ctx: int) -> None:
        self.vocab, self.ctx = vocab, ctx
        self.ids = array("i")
        self.off = array("q", [0])
        self.shared = array("q")
        self.params: list[dict] = []
        self.rids: list[str] = []
        self.item, self.param = array("q"), array("q")
        self.start: list[int] = []
        self._parsed: dict[int, tuple[Any, SamplingParams, int]] = {}   # id(user value) -> (value, sp, param)
        self._capped: dict[tuple[int, int], int] = {}
        self._prev: list | None = None
        self._head: list | None = None   # the prefix the last two prompts shared

    def add(self, rid: str, ids, sp_in, start: int) -> None:
        got = self._parsed.get(id(sp_in))
        if got is None or got[0] is not sp_in:
            sp = SamplingParams.from_dict(sp_in)
            if sp.stop_token_ids and max(sp.stop_token_ids) >= self.vocab:
                raise EngineError(f"invalid sampling parameter stop_token_ids={sp.stop_token_ids!r}: token ids "
                                  f"must be in [0, {self.vocab})")
            got = self._parsed[id(sp_in)] = (sp_in, sp, -1)
        _, sp, p = got
        if type(ids) is not list:
            ids = list(ids)
        if not ids:
            raise EngineError("the prompt is empty (0 tokens)")
        try:
            k = self._share(ids)
        except Exception:  # noqa: BLE001  (NOTE: odd elements that don't compare; the conversion reports them)
            k = 0
        try:
            self.ids.extend(array("i", ids[k:] if k else ids))   # NOTE: C-speed type check of the new tokens
        except (TypeError, OverflowError):
            raise EngineError(f"input_ids must be integers in [0, {self.vocab})") from None
        self.off.append(len(self.ids))
        self.shared.append(k)
        self._prev = ids
        n = len(ids)
        if n >= self.ctx:
            raise EngineError(f"the prompt has {n} tokens but the context length is {self.ctx}")
        if n + sp.max_new_tokens > self.ctx:
            # NOTE: as SGLang, cap the output at the context window
            p = self._capped.get((id(sp), n), -1)
            if p < 0:
                capped = dataclasses.replace(sp, max_new_tokens=self.ctx - n)
                capped.min_new_tokens = min(sp.min_new_tokens, capped.max_new_tokens)
                p = self._capped[(id(sp), n)] = self._param(capped)
        elif p < 0:
            p = self._param(sp)
            self._parsed[id(sp_in)] = (sp_in, sp, p)
        j = len(self.shared) - 1
        for s in range(sp.n):
            self.rids.append(f"{rid}#{s}")
            self.item.append(j)
            self.param.append(p)
            self.start.append(start)

    def _param(self, sp: SamplingParams) -> int:
        self.params.append(sp.to_dict())
        return len(self.params) - 1

    def _share(self, ids: list) -> int:
        """How many leading tokens ``ids`` shares with the previous prompt (0 if fewer than _MIN_SHARED).

        NOTE: compared by value (identical int objects, as in ``shared + own``, compare at pointer speed), so
        the shared part is validated as the previous prompt's tokens it equals (an integral float there
        would be taken as that token)."""
        prev = self._prev
        if prev is None:
            return 0
        head = self._head
        if head is not None and len(ids) >= len(head) and ids[:len(head)] == head:
            return len(head)   # NOTE: the common case: the shared prefix of the pair before (one C-level compare)
        k = common_prefix_len(prev, ids)
        if k < _MIN_SHARED:
            self._head = None
            return 0
        self._head = prev[:k]
        return k

    def range_error(self) -> EngineError | None:
        """The error for a token id out of ``[0, vocab)`` among those added so far (one vectorized check)."""
        if self.ids:
            a = np.frombuffer(self.ids, dtype=np.int32)
            if a.min() < 0 or a.max() >= self.vocab:
                return EngineError(f"input_ids must be integers in [0, {self.vocab})")
        return None

    def message(self, return_logprob: bool, top_logprobs_num: int, stream: bool) -> tuple:
        return ("batch", {"ids": self.ids, "off": self.off, "shared": self.shared, "params": self.params,
                          "rids": self.rids, "item": self.item, "param": self.param, "start": self.start,
                          "return_logprob": return_logprob, "top_logprobs_num": top_logprobs_num,
                          "stream": stream})


class Engine:
    """sglc's serving engine in this process's API; the model runs in a worker process."""

    def __init__(self, model_path: str | None = None, dtype: str = "auto", device: str = "auto",
                 **options: Any) -> None:
        self.config = RuntimeConfig.from_kwargs(model_path=model_path, dtype=dtype, device=device, **options)
        from .tokenizer import load_tokenizer

        self.tokenizer = None if self.config.skip_tokenizer_init else load_tokenizer(
            self.config.model_path, self.config.tokenizer_path)
        self._sinks: dict[str, _Sink] = {}
        self._replies: dict[int, queue.Queue] = {}
        self._tokens = itertools.count()
        self._lock = threading.Lock()
        self._closed = False
        self._dead: str | None = None
        self._start_worker()

    # -- worker lifecycle -------------------------------------------------------------------------
    def _start_worker(self) -> None:
        from .worker import worker_main

        if self.config.worker_mode == "thread":
            self._in, self._out = queue.Queue(), queue.Queue()
            self._proc: Any = threading.Thread(target=worker_main, args=(self.config, self._in, self._out),
                                               daemon=True, name="sglc-worker")
        else:
            ctx = mp.get_context("spawn")
            self._in, self._out = ctx.Queue(), ctx.Queue()
            self._proc = ctx.Process(target=worker_main, args=(self.config, self._in, self._out), daemon=True,
                                     name="sglc-worker")
        self._proc.start()
        msg = self._wait_ready()
        if msg[0] != "ready":
            self._proc.join(timeout=5)
            raise EngineError(f"the sglc worker failed to start:\n{msg[1]}")
        self._info = msg[1]
        self._receiver = threading.Thread(target=self._receive, daemon=True, name="sglc-receiver")
        self._receiver.start()

    def _wait_ready(self):
        for _ in range(_START_TIMEOUT_S):
            try:
                return self._out.get(timeout=1.0)
            except queue.Empty:
                if not self._proc.is_alive():
                    return ("fatal", "the worker exited during start-up (out of memory?)")
        return ("fatal", f"no answer from the worker within {_START_TIMEOUT_S}s")

    def _receive(self) -> None:
        while True:
            try:
                msg = self._out.get(timeout=1.0)
            except queue.Empty:
                if not self._proc.is_alive():
                    self._fail_all("the sglc worker died")
                    return
                continue
            except (EOFError, OSError):
                self._fail_all("the sglc worker connection closed")
                return
            kind = msg[0]
            if kind == "out":
                batches: dict[int, tuple[_Sink, list[dict]]] = {}
                with self._lock:
                    sinks = self._sinks
                    for ev in msg[1]:
                        sink = sinks.pop(ev["rid"], None) if ev["finished"] else sinks.get(ev["rid"])
                        if sink is not None:
                            got = batches.get(id(sink))
                            if got is None:
                                batches[id(sink)] = (sink, [ev])
                            else:
                                got[1].append(ev)
                    done = self._closed and not self._sinks   # NOTE: under the lock: see _submit
                for sink, evs in batches.values():
                    sink.put(evs)
                if done:
                    return
            elif kind == "reply":
                q = self._replies.pop(msg[1], None)
                if q is not None:
                    q.put(msg[2])
            elif kind == "fatal":
                logger.error("sglc worker crashed:\n%s", msg[1])
                # NOTE: callers get the exception's line, not the traceback (that is in the log)
                last = (msg[1].strip().splitlines() or ["unknown error"])[-1]
                self._fail_all(f"the sglc worker crashed: {last}; the traceback is in the server log")
                return

    def _fail_all(self, why: str) -> None:
        with self._lock:
            self._dead = why
            sinks, self._sinks = self._sinks, {}
            replies, self._replies = self._replies, {}
        for rid, sink in sinks.items():
            sink.put([{"rid": rid, "text": "", "output_ids": [], "finished": True, "error": why, "unavailable": True,
                       "meta_info": {"finish_reason": {"type": "abort", "message": why}}}])
        for q in replies.values():
            q.put(None)

    def shutdown(self) -> None:
        """Abort everything in flight and stop the worker."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._in.put(("shutdown",))
            self._proc.join(timeout=10)
        finally:
            if isinstance(self._proc, mp.process.BaseProcess) and self._proc.is_alive():
                self._proc.kill()

    def __enter__(self) -> Engine:  # noqa: PYI034  (Python 3.10 has no typing.Self)
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def __del__(self) -> None:
        try:
            self.shutdown()
        except Exception:  # noqa: BLE001, S110  (NOTE: interpreter teardown; nothing useful to report)
            pass

    # -- request construction ---------------------------------------------------------------------
    def _prepare(self, prompt, sampling_params, input_ids, stream, return_logprob, logprob_start_len,
                 top_logprobs_num, rid) -> tuple[list[str], tuple, bool]:
        """Validate a call and encode it as one ``("batch", ...)`` worker message (see ``_Batch``).

        Returns the internal request ids (one per sample, in output order), the message, and whether
        the call was for a single prompt."""
        self._check_running()
        if (prompt is None) == (input_ids is None):
            raise EngineError("pass exactly one of prompt (text) or input_ids")
        single = isinstance(prompt, str) or (input_ids is not None and input_ids and isinstance(input_ids[0], int))
        prompts = [prompt] if isinstance(prompt, str) else prompt
        ids_list = ([input_ids] if single else input_ids) if input_ids is not None else None
        n_items = len(prompts if prompts is not None else ids_list)
        if n_items == 0:
            raise EngineError("empty batch: pass at least one prompt")
        sps = sampling_params if isinstance(sampling_params, list) else [sampling_params] * n_items
        if len(sps) != n_items:
            raise EngineError(f"{len(sps)} sampling_params for {n_items} prompts")
        starts = logprob_start_len if isinstance(logprob_start_len, list) else [logprob_start_len] * n_items
        if len(starts) != n_items:
            raise EngineError(f"{len(starts)} logprob_start_len values for {n_items} prompts")
        vocab = self._info["vocab_size"]
        k = top_logprobs_num or 0
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= vocab:
            raise EngineError(f"top_logprobs_num must be an integer in [0, {vocab}], got {top_logprobs_num!r}")
        for start in starts:
            if start is not None and (isinstance(start, bool) or not isinstance(start, int) or start < -1):
                raise EngineError(f"logprob_start_len must be an integer >= -1 (-1: output logprobs only), "
                                  f"got {start!r}")
        base = rid or uuid.uuid4().hex
        b = _Batch(vocab, self._info["context_length"])
        if prompts is not None:
            ids_list = self._tokenize_many(prompts)
        try:
            for i in range(n_items):
                ids = ids_list[i]
                item_rid = base if single else (rid[i] if isinstance(rid, list) else f"{base}-{i}")
                b.add(item_rid, ids, sps[i], -1 if starts[i] is None else starts[i])
        except Exception:
            err = b.range_error()   # NOTE: an out-of-range token of an earlier prompt is the first error
            if err is not None:
                raise err from None
            raise
        err = b.range_error()
        if err is not None:
            raise err
        return b.rids, b.message(return_logprob, top_logprobs_num or 0, stream), single

    def encode(self, texts: list[str]) -> list[list[int]]:
        """The token ids ``generate`` computes for these text prompts (one batched encode)."""
        return self._tokenize_many(texts)

    def _tokenize(self, text: str) -> list[int]:
        return self._tokenize_many([text])[0]

    def _tokenize_many(self, texts: list) -> list[list[int]]:
        """Every text prompt of a call in one batched encode (a fast tokenizer runs it in parallel, GIL-free)."""
        for text in texts:
            if not isinstance(text, str):
                raise EngineError(f"prompt must be a str, got {type(text).__name__}")
        if self.tokenizer is None:
            raise EngineError("this engine was started with skip_tokenizer_init=True: pass input_ids")
        return encode_many(self.tokenizer, texts)

    def _submit(self, rids: list[str], msg: tuple, loop=None, detached: bool = False) -> _Sink:
        sink = _DetachedSink(rids) if detached else _Sink(rids, loop)
        with self._lock:
            # NOTE: checked again under the lock _fail_all and the receiver's exit take: the worker may have died
            # (or the engine shut down) while _prepare ran; a sink registered after that is never answered.
            self._check_running()
            for r in rids:
                if r in self._sinks:
                    raise EngineError(f"request id {r.split('#')[0]!r} is already in flight")
            for r in rids:
                self._sinks[r] = sink
        self._in.put(msg)
        return sink

    # -- generate ---------------------------------------------------------------------------------
    def generate(self, prompt=None, sampling_params=None, input_ids=None, stream: bool = False,
                 return_logprob: bool = False, logprob_start_len: int | list[int] | None = None,
                 top_logprobs_num: int | None = None, rid=None, return_text_in_logprobs: bool = False):
        """Generate for one prompt (→ dict), a list (→ list), or stream chunks (→ iterator).
        ``sampling_params`` and ``logprob_start_len`` may be one value or one per prompt.
        ``return_text_in_logprobs`` (SGLang's): logprob rows ``[logprob, id]`` become ``[logprob, id, text]``."""
        rids, msg, single = self._prepare(prompt, sampling_params, input_ids, stream, return_logprob,
                                          logprob_start_len, top_logprobs_num, rid)
        sink = self._submit(rids, msg)
        sink.token_text = self.tokenizer if return_text_in_logprobs else None
        if stream:
            return self._stream_sync(sink)
        results = _collect(sink, _events(sink))
        return results[0] if single and len(results) == 1 else results

    def _stream_sync(self, sink: _Sink) -> Iterator[dict]:
        try:
            while sink.open:
                for ev in sink.q.get():
                    yield _chunk(sink, ev)
        finally:
            for open_rid in list(sink.open):
                self.abort(open_rid.split("#")[0])

    async def async_generate(self, prompt=None, sampling_params=None, input_ids=None, stream: bool = False,
                             return_logprob: bool = False, logprob_start_len: int | list[int] | None = None,
                             top_logprobs_num: int | None = None, rid=None, return_text_in_logprobs: bool = False):
        """``generate`` for asyncio callers; with ``stream=True`` returns an async iterator."""
        rids, msg, single = self._prepare(prompt, sampling_params, input_ids, stream, return_logprob,
                                          logprob_start_len, top_logprobs_num, rid)
        sink = self._submit(rids, msg, asyncio.get_running_loop())
        sink.token_text = self.tokenizer if return_text_in_logprobs else None
        if stream:
            return self._stream_async(sink)
        try:
            events = []
            while sink.open:
                for ev in await sink.q.get():
                    events.append(ev)
                    if ev["finished"]:
                        sink.open.discard(ev["rid"])
        except asyncio.CancelledError:
            for open_rid in list(sink.open):
                self.abort(open_rid.split("#")[0])
            raise
        results = _collect(sink, iter(events))
        return results[0] if single and len(results) == 1 else results

    async def _stream_async(self, sink: _Sink) -> AsyncIterator[dict]:
        try:
            while sink.open:
                for ev in await sink.q.get():
                    yield _chunk(sink, ev)
        finally:
            for rid in list(sink.open):
                self.abort(rid.split("#")[0])

    # -- select / prefix hoisting -----------------------------------------------------------------
    def _score_requests(self, prefix, continuations: list[str]) -> tuple[list[int], list[dict]]:
        pre = self._ids(prefix)
        if not continuations:
            raise EngineError("score needs at least one continuation")
        reqs = []
        for c in continuations:
            ids = pre + self.tokenizer.encode(c, add_special_tokens=False) if self.tokenizer else None
            if ids is None or len(ids) == len(pre):
                raise EngineError(f"continuation {c!r} has no tokens")
            reqs.append(ids)
        return pre, reqs

    def score(self, prefix, continuations: list[str]) -> list[dict]:
        """Log-likelihood of each continuation after ``prefix``; the prefix is computed once (radix)."""
        pre, seqs = self._score_requests(prefix, continuations)
        warm = self._score_warm(pre, len(seqs))
        try:
            outs = self.generate(input_ids=seqs, sampling_params={"max_new_tokens": 0}, return_logprob=True,
                                 logprob_start_len=len(pre))
        except BaseException:
            self._drop_warm(warm)
            raise
        return [_score(o, len(s) - len(pre)) for o, s in zip(outs, seqs)]

    async def async_score(self, prefix, continuations: list[str]) -> list[dict]:
        pre, seqs = self._score_requests(prefix, continuations)
        warm = self._score_warm(pre, len(seqs))   # NOTE: only enqueues: nothing blocks the loop
        try:
            outs = await self.async_generate(input_ids=seqs, sampling_params={"max_new_tokens": 0},
                                             return_logprob=True, logprob_start_len=len(pre))
        except BaseException:
            self._drop_warm(warm)
            raise
        return [_score(o, len(s) - len(pre)) for o, s in zip(outs, seqs)]

    def _score_warm(self, pre: list[int], n: int) -> str | None:
        """Warm a score's prefix for its ``n`` continuations; the warm's rid (None: nothing to warm).

        NOTE: not the last token: every continuation recomputes it (its logits score the first token); pinned
        until the continuations are admitted; not waited for (they wait inside the scheduler)."""
        return self.warm(pre[:-1], expect=n, wait=False)["rid"] if len(pre) > 1 else None

    def _drop_warm(self, rid: str | None) -> None:
        """The continuations will not come (their call failed): release the warm's pin now, not at its TTL."""
        if rid is None:
            return
        with self._lock:
            # NOTE: nobody listens any more (a warm is one request, ``#0``): its "aborted by the client" is
            # ours, not a failure to log
            self._sinks.pop(f"{rid}#0", None)
        self.abort(rid)

    def _ids(self, prefix) -> list[int]:
        return self._tokenize(prefix) if isinstance(prefix, str) else list(prefix)

    def warm(self, prefix, expect: int = 0, ttl_s: float = 30.0, wait: bool = True) -> dict:
        """Prefill ``prefix`` (text or ids) into the radix cache; returns ``prompt_tokens``, ``cached_tokens``
        and the warm's ``rid``.

        ``expect=n`` pins the prefix: it stays cached (LRU eviction skips it) until ``n`` requests extending
        it were admitted, ``ttl_s`` seconds passed, ``abort(rid)`` or ``flush_cache()``. Pins are hints: they
        are dropped before a running request would be retracted, or when nothing else could run.

        ``wait=False`` (with ``expect``) returns ``{"rid": ...}`` at once: requests sent after it that extend
        the prefix wait inside the scheduler until it is cached, so the caller saves a round trip and gets the
        same cache hits and pin counts as with ``wait=True``. A warm that fails (e.g. longer than the KV pool) then
        raises nothing, only logs a warning: warming is a hint, and the requests after it fail or run on their own.
        """
        rid = uuid.uuid4().hex
        params = _warm_params(expect, ttl_s)
        if not wait and expect:
            rids, msg, _ = self._prepare(None, params, self._ids(prefix), False, False, None, None, rid)
            self._submit(rids, msg, detached=True)   # NOTE: nobody waits: its events are dropped, a failure logged
            return {"rid": rid}
        return _warm_result(self.generate(input_ids=self._ids(prefix), sampling_params=params, rid=rid), rid)

    async def async_warm(self, prefix, expect: int = 0, ttl_s: float = 30.0) -> dict:
        rid = uuid.uuid4().hex
        return _warm_result(await self.async_generate(input_ids=self._ids(prefix),
                                                      sampling_params=_warm_params(expect, ttl_s), rid=rid), rid)

    # -- control ----------------------------------------------------------------------------------
    def abort(self, rid: str) -> None:
        """Abort the request ``rid`` (all its samples); its KV is freed. Unknown ids are ignored."""
        if not self._closed:
            self._in.put(("abort", rid))

    @property
    def dead(self) -> str | None:
        """Why the engine no longer serves (its worker crashed, or it was shut down); None while it runs.
        Health checks read it (``/health`` answers 503, gRPC health NOT_SERVING)."""
        return self._dead or ("shut down" if self._closed else None)

    def _check_running(self) -> None:
        if self._closed or self._dead:
            raise EngineUnavailable(f"the engine is not running ({self._dead or 'shut down'})")

    def _call(self, name: str, timeout: float = 60.0):
        q: queue.Queue = queue.Queue()
        with self._lock:   # NOTE: as in _submit: a reply registered after _fail_all would never come
            self._check_running()
            token = next(self._tokens)
            self._replies[token] = q
        self._in.put(("call", token, name))
        return q.get(timeout=timeout)

    def flush_cache(self) -> bool:
        """Drop every cached prefix; returns False (and flushes nothing) while requests are in flight."""
        return bool(self._call("flush_cache"))

    def metrics(self) -> dict:
        return self._call("metrics")

    def model_info(self) -> dict:
        info = dict(self._info)
        if self.tokenizer is not None:
            info["chat_template"] = getattr(self.tokenizer, "chat_template", None)
        return info

    get_server_info = model_info


def _events(sink: _Sink) -> Iterator[dict]:
    """The events of a sync call, one worker message's list at a time."""
    while True:
        yield from sink.q.get()


def _chunk(sink: _Sink, ev: dict) -> dict:
    if ev["finished"]:
        sink.open.discard(ev["rid"])
    _raise_for(ev)
    return {"text": ev["text"], "output_ids": ev["output_ids"], "index": sink.index[ev["rid"]],
            "finished": ev["finished"], "meta_info": _meta(sink, ev)}


def _meta(sink: _Sink, ev: dict) -> dict:
    return with_token_text(ev["meta_info"], sink.token_text) if sink.token_text is not None else ev["meta_info"]


def _collect(sink: _Sink, events) -> list[dict]:
    """Accumulate events until every request of the sink finished; one output dict per request."""
    acc = {rid: {"text": "", "output_ids": [], "index": i, "meta_info": {}} for rid, i in sink.index.items()}
    pending = set(acc)
    for ev in events:
        _raise_for(ev)
        a = acc[ev["rid"]]
        a["text"] += ev["text"]
        a["output_ids"] += ev["output_ids"]
        a["meta_info"] = ev["meta_info"]
        if ev["finished"]:
            pending.discard(ev["rid"])
            if not pending:
                break
    sink.open.clear()
    if sink.token_text is not None:
        for a in acc.values():
            a["meta_info"] = with_token_text(a["meta_info"], sink.token_text)
    return [acc[rid] for rid in sorted(acc, key=sink.index.get)]


def _raise_for(ev: dict) -> None:
    """A request the worker refused (bad constraint, too long) or lost (crash) raises; a client abort doesn't."""
    err = ev.get("error")
    if not err or "aborted by the client" in err:
        return
    raise EngineUnavailable(err) if ev.get("unavailable") else EngineError(err)


def _warm_params(expect: int, ttl_s: float) -> dict:
    if isinstance(expect, bool) or not isinstance(expect, int) or expect < 0:
        raise EngineError(f"warm: expect must be an integer >= 0 (requests to keep the prefix for), got {expect!r}")
    return {"max_new_tokens": 0, "pin_uses": expect, "pin_ttl_s": ttl_s} if expect else {"max_new_tokens": 0}


def _warm_result(out: dict, rid: str) -> dict:
    return {"prompt_tokens": out["meta_info"]["prompt_tokens"], "cached_tokens": out["meta_info"]["cached_tokens"],
            "rid": rid}


def _score(out: dict, n: int) -> dict:
    lps = [lp for lp, _ in out["meta_info"]["input_token_logprobs"][-n:]]
    total = float(sum(lps))
    return {"logprob_sum": total, "normalized_logprob": total / max(n, 1), "num_tokens": n,
            "token_logprobs": lps}
