"""The worker: owns the model, KV pool, radix cache and scheduler; runs in its own process (or thread).

Messages in: ``("batch", encoded call)`` (runtime/engine.py ``_Batch``; ``Worker.add_batch``),
``("generate", [req dicts])``, ``("abort", rid)``, ``("call", token, name)`` for
``flush_cache``/``metrics``, ``("shutdown",)``. Messages out: ``("ready", info)``, ``("fatal", text)``,
``("out", [events])``, ``("reply", token, value)``.
"""
from __future__ import annotations

import gc
import logging
import multiprocessing as mp
import os
import queue
import time
import traceback
from collections import deque
from typing import Any

from .config import RuntimeConfig, scheduler_defaults, use_overlap
from .envs import ENV, gc_full_every
from .mem.radix_cache import RadixCache
from .output import OutputProcessor
from .sampling_params import SamplingParams
from .scheduler.overlap import OverlapScheduler
from .scheduler.request import FinishReason, Req
from .scheduler.scheduler import Scheduler, SchedulerConfig, rid_matches

logger = logging.getLogger(__name__)


class Worker:
    def __init__(self, cfg: RuntimeConfig) -> None:
        import torch

        from .executor import ModelExecutor
        from .model_runner import ModelRunner
        from .sampler import Sampler
        from .tokenizer import load_tokenizer

        self.cfg = cfg
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.runner = ModelRunner(cfg)
        self.tokenizer = None if cfg.skip_tokenizer_init else load_tokenizer(cfg.model_path, cfg.tokenizer_path)
        self.eos_ids = _eos_ids(self.tokenizer, self.runner.hf_config)
        pool = self.runner.kv_pool
        self.cache = RadixCache(pool.allocator, disabled=cfg.disable_radix_cache)
        self.out = OutputProcessor(self.tokenizer, self.eos_ids)
        sampler = Sampler(self.eos_ids, cfg.random_seed, self.runner.device)
        from .constrained import GrammarManager

        self.grammar = GrammarManager(self.tokenizer, self.runner.vocab_size, cfg)
        executor = ModelExecutor(self.runner, sampler, self.grammar.masks)
        sd = scheduler_defaults(cfg, self.runner.device, pool.size)
        sched_cls = OverlapScheduler if use_overlap(cfg, self.runner.device) else Scheduler
        self.scheduler = sched_cls(SchedulerConfig(sd["max_running_requests"], sd["chunked_prefill_size"],
                                                   sd["max_prefill_tokens"], cfg.schedule_policy),
                                   pool.allocator, self.cache, executor, self._check_finish)
        # requests taken in whose finished event was not sent yet (safe_step fails them if a step breaks)
        self.live: dict[str, Req] = {}
        self.failed_steps = self.good_steps = 0
        self.counters = {"num_requests_total": 0, "prompt_tokens_total": 0, "generation_tokens_total": 0,
                         "cached_tokens_total": 0, "num_aborted_total": 0}
        self.sched_defaults = sd
        self._tokens: list[int] | None = None   # interned token ids (decode_prompts), built on first use
        self._intake: deque[_Intake] = deque()    # Engine calls not wholly taken in yet (add_batch)
        self.torch_threads = torch.get_num_threads()
        self.gc_frozen_objects = 0   # set by worker_main when a worker process freezes its start-up objects

    def _check_finish(self, req: Req) -> None:
        self.out.check_finish(req)
        if not req.finished and req.matcher is not None and not self.cfg.disable_jump_forward:
            self.grammar.jump_forward(req)

    # -- info -------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        r = self.runner
        c = r.hf_config
        return {
            "model_path": r.model_path, "architecture": type(r.model).__name__,
            "context_length": r.context_length, "vocab_size": r.vocab_size, "dtype": str(r.dtype).removeprefix("torch."),
            "kv_cache_dtype": str(r.kv_dtype).removeprefix("torch."),
            "device": r.device, "attention_backend": r.backend_name, "max_total_tokens": r.kv_pool.size,
            "cuda_graph_max_bs": r.cuda_graph.max_bs if r.cuda_graph is not None else 0,
            "num_layers": c.num_hidden_layers, "hidden_size": c.hidden_size,
            "num_attention_heads": c.num_attention_heads, "num_kv_heads": r.num_kv_heads,
            "eos_token_ids": sorted(self.eos_ids), "disable_radix_cache": self.cfg.disable_radix_cache,
            "load_seconds": round(r.load_seconds, 2), **self.sched_defaults,
        }

    def metrics(self) -> dict[str, Any]:
        s, a = self.scheduler, self.runner.kv_pool.allocator
        c = dict(self.counters)
        c["cache_hit_rate"] = c["cached_tokens_total"] / max(c["prompt_tokens_total"], 1)
        pending = sum(t.pending for t in self._intake)
        c.update(num_running_reqs=len(s.running), num_waiting_reqs=len(s.waiting) + pending,
                 kv_total_tokens=a.size, kv_used_tokens=a.used, kv_free_tokens=a.available,
                 kv_cached_tokens=self.cache.total_size, kv_evictable_tokens=self.cache.evictable_size,
                 forward_passes_total=s.stats["forward_passes"], prefill_passes_total=s.stats["prefill_passes"],
                 prefill_tokens_total=s.stats["prefill_tokens"],
                 decode_tokens_total=s.stats["decode_tokens"], retractions_total=s.stats["retractions"],
                 mixed_passes_total=s.stats["mixed_passes"], cascade_rows_total=s.stats["cascade_rows"],
                 kv_stalls_total=s.stats["kv_stalls"], cached_warms_total=s.stats["cached_warms"],
                 gc_frozen_objects=self.gc_frozen_objects)
        return c

    # -- requests ---------------------------------------------------------------------------------
    def add_requests(self, items: list[dict]) -> list[dict]:
        """Queue requests given as dicts (``rid``, ``input_ids``, ``sampling_params``, optional
        ``return_logprob``, ``logprob_start_len``, ``top_logprobs_num``, ``stream``, ``index``)."""
        events = []
        for d in items:
            req = Req(rid=d["rid"], input_ids=list(d["input_ids"]),
                      sampling_params=SamplingParams.from_dict(d["sampling_params"]),
                      return_logprob=d.get("return_logprob", False),
                      logprob_start_len=d.get("logprob_start_len", -1),
                      top_logprobs_num=d.get("top_logprobs_num", 0), stream=d.get("stream", False),
                      index=d.get("index", 0))
            self._add(req, events)
        return events

    def add_batch(self, b: dict) -> list[dict]:
        """Queue an Engine call encoded by ``runtime.engine._Batch``: each prompt is its predecessor's first
        ``shared[j]`` tokens plus its tail ``ids[off[j]:off[j+1]]`` (the lists share the int objects, and the
        radix cache compares them at C speed); requests point at a prompt and a sampling-params entry.

        A large call is taken in by slices of ``max_running_requests`` (``_take_in``): the first now, one more
        per ``step()``. Its first pass then starts after one slice's decoding, not the whole call's (2,000
        few-shot prompts took ~0.15 s of host time before the first kernel); the rest is taken in while the GPU
        runs. Order is kept (FIFO); ``abort`` reaches requests not taken in yet where they wait, ``flush_cache``
        waits for them, and ``metrics`` counts them as waiting."""
        if self._tokens is None:
            self._tokens = list(range(self.runner.vocab_size))
        self._intake.append(_Intake(b, self._tokens))
        return self._take_in(self.sched_defaults["max_running_requests"])

    def _take_in(self, limit: int | None = None) -> list[dict]:
        """Create the next ``limit`` (all when None) requests of the queued calls."""
        events: list[dict] = []
        while self._intake and (limit is None or limit > 0):
            got = self._intake[0]
            for req in got.take(limit):
                self._add(req, events)
                if limit is not None:
                    limit -= 1
            if got.done:
                self._intake.popleft()
        return events

    def _add(self, req: Req, events: list[dict]) -> None:
        self.counters["num_requests_total"] += 1
        sp = req.sampling_params
        if len(req.input_ids) + sp.max_new_tokens > self.runner.kv_pool.size:
            req.finish, req.error = FinishReason.ABORT, (
                f"prompt ({len(req.input_ids)} tokens) + max_new_tokens ({sp.max_new_tokens}) exceeds the "
                f"KV pool ({self.runner.kv_pool.size} tokens); raise max_total_tokens")
            events.append(self.out.event(req))
            return
        self.live[req.rid] = req
        self.grammar.submit(req, self.scheduler.add)

    def forget(self, events: list[dict]) -> None:
        """Drop the requests whose finished event is in ``events`` from ``live`` (call before sending them)."""
        for ev in events:
            if ev["finished"]:
                self.live.pop(ev["rid"], None)

    def step(self) -> list[dict]:
        events: list[dict] = []
        self._step_into(events)
        return events

    def _step_into(self, events: list[dict]) -> None:
        """One step, its events appended to ``events`` as they are made (those made before a failure survive it:
        safe_step sends them)."""
        if self._intake:
            events += self._take_in(self.sched_defaults["max_running_requests"])
        touched = self.grammar.poll(self.scheduler.add)
        touched += self.scheduler.step_or_unstick()
        for req in touched:
            if req.finished:
                self._count(req)
            ev = self.out.event(req)
            if ev is not None:
                events.append(ev)
        self.forget(events)

    # failed steps before the worker gives up (a broken device fails every one), unless GOOD_STEPS steps in a row
    # succeed between them (with overlap scheduling a step that only launches succeeds even on a broken device)
    MAX_FAILED_STEPS = 3
    GOOD_STEPS = 3

    def safe_step(self) -> tuple[list[dict], str | None]:
        """``step()``; when it raises, the requests in flight fail with the error (HTTP 503 to their callers),
        their KV is released and the worker goes on serving. Returns the events and, after ``MAX_FAILED_STEPS``
        failures without ``GOOD_STEPS`` good steps in a row between them, the traceback to report as fatal."""
        passes = self.scheduler.stats["forward_passes"]
        events: list[dict] = []
        try:
            self._step_into(events)
        except Exception:  # noqa: BLE001 - NOTE: one bad step must not take every later request down with it
            tb = traceback.format_exc()
            self.failed_steps += 1
            self.good_steps = 0
            self.forget(events)   # (made before the failure: sent as they are, e.g. requests refused at intake)
            if self.failed_steps >= self.MAX_FAILED_STEPS:
                return events, tb
            logger.error("a step failed (%d since the last good ones); failing the requests in flight and "
                         "serving on:\n%s", self.failed_steps, tb)
            return events + self._fail_in_flight(tb.strip().splitlines()[-1]), None
        # NOTE: only a step that ran a pass proves the device works (idle steps on a broken one succeed too)
        if self.scheduler.stats["forward_passes"] > passes:
            self.good_steps += 1
            if self.good_steps >= self.GOOD_STEPS:
                self.failed_steps = 0
        return events, None

    def _fail_in_flight(self, what: str) -> list[dict]:
        """Every live request fails: those still queued or running are aborted (their KV released); those the
        broken step had already finished, whose events it never returned, get their final event now."""
        why = f"the request failed inside the engine ({what}); the server log has the traceback"

        def failed(ev: dict) -> dict:
            ev.update(error=why, unavailable=True)
            ev["meta_info"] = {**ev["meta_info"], "finish_reason": {"type": "abort", "message": why}}
            return ev

        self.scheduler.drop_unapplied()   # (the requests it releases are still live: failed below)
        events = [failed(ev) for ev in self.abort(None)]
        for req in list(self.live.values()):
            if req.finished:   # finished by the broken step, whose events were lost: it keeps its outcome
                events.append(self.out.event(req))
            else:
                req.finish = FinishReason.ABORT
                events.append(failed(self.out.event(req)))
        self.forget(events)
        # NOTE: a prompt is shared in the radix tree when its pass is scheduled (Scheduler._share_now); the failed
        # pass never wrote that KV, so no later request may match it: the cache starts empty again
        if not self.cache.clear():
            logger.error("after the failed step the prefix cache could not be cleared (a request still holds it)")
        return events

    def _count(self, req: Req) -> None:
        self.counters["prompt_tokens_total"] += len(req.input_ids)
        self.counters["generation_tokens_total"] += len(req.output_ids)
        self.counters["cached_tokens_total"] += req.cached_tokens
        if req.finish is FinishReason.ABORT:
            self.counters["num_aborted_total"] += 1

    def abort(self, rid: str | None) -> list[dict]:
        events = []
        for t in self._intake:   # NOTE: requests of a call not taken in yet: aborted where they wait, order kept
            for req in t.abort(rid):
                self._count(req)
                events.append(self.out.event(req))
        while self._intake and self._intake[0].done:
            self._intake.popleft()
        for req in self.scheduler.abort(rid) + self.grammar.abort(rid):
            self._count(req)
            events.append(self.out.event(req))
        self.forget(events)
        return events

    def flush_cache(self) -> bool:
        self.scheduler.settle()
        if self.scheduler.has_work or self._intake:
            return False
        return self.cache.clear()

    @property
    def busy(self) -> bool:
        return self.scheduler.has_work or self.grammar.pending or bool(self._intake)


class _Intake:
    """A queued Engine call (``add_batch``) taken in a slice at a time: its prompts are decoded as they are
    needed (items point at prompts in order)."""

    def __init__(self, b: dict, tokens: list[int]) -> None:
        self.b = b
        self.prompts = _PromptDecoder(b, tokens)
        self.params = [SamplingParams.from_dict(d) for d in b["params"]]
        self.used = bytearray(len(b["shared"]))
        self.i = 0                        # the next item to take in
        self.aborted: set[int] = set()   # items >= i that an abort already reported

    @property
    def pending(self) -> int:
        """Requests still to be taken in."""
        return len(self.b["rids"]) - self.i - len(self.aborted)

    @property
    def done(self) -> bool:
        return self.pending == 0

    def take(self, limit: int | None) -> list[Req]:
        """The next ``limit`` requests (all when None), skipping aborted ones."""
        n, out = len(self.b["rids"]), []
        while self.i < n and (limit is None or len(out) < limit):
            if self.i in self.aborted:
                self.aborted.discard(self.i)
            else:
                out.append(self._req(self.i))
            self.i += 1
        return out

    def abort(self, rid: str | None) -> list[Req]:
        """The requests not taken in yet that ``abort(rid)`` reaches, finished as aborted."""
        out = []
        for i in range(self.i, len(self.b["rids"])):
            if i not in self.aborted and rid_matches(self.b["rids"][i], rid):
                req = self._req(i)
                req.finish, req.error = FinishReason.ABORT, "aborted by the client"
                self.aborted.add(i)
                out.append(req)
        return out

    def _req(self, i: int) -> Req:
        b = self.b
        j = b["item"][i]
        ids = self.prompts.get_one(j)
        if self.used[j]:
            ids = ids[:]   # NOTE: n > 1: every sample owns its token list
        self.used[j] = 1
        return Req(rid=b["rids"][i], input_ids=ids, sampling_params=_clone(self.params[b["param"][i]]),
                   return_logprob=b["return_logprob"], logprob_start_len=b["start"][i],
                   top_logprobs_num=b["top_logprobs_num"], stream=b["stream"], index=i)


class _PromptDecoder:
    """Prompt j of an encoded call (``runtime.engine._Batch``): prompt j-1's first ``shared[j]`` tokens (the same
    int objects) followed by its own tail ``ids[off[j]:off[j+1]]``; decoded in order, on demand.

    ``tokens`` (``list(range(vocab))``) interns the ids: every prompt of every call then holds the same int
    object for a token id, so the radix cache's list compares against cached keys stop at pointer equality."""

    def __init__(self, b: dict, tokens: list[int] | None = None) -> None:
        self.b = b
        self.intern = tokens.__getitem__ if tokens is not None else None
        self.prompts: list[list[int]] = []

    def get_all(self) -> list[list[int]]:
        return [self.get_one(j) for j in range(len(self.b["shared"]))]

    def get_one(self, j: int) -> list[int]:
        buf, off, shared, get = self.b["ids"], self.b["off"], self.b["shared"], self.intern
        while len(self.prompts) <= j:
            n = len(self.prompts)
            tail, k = buf[off[n]:off[n + 1]], shared[n]
            if k:
                ids = self.prompts[n - 1][:k]
                ids += map(get, tail) if get else tail   # NOTE: in place: the shared part is copied once
            else:
                ids = list(map(get, tail)) if get else tail.tolist()
            self.prompts.append(ids)
        return self.prompts[j]


def decode_prompts(b: dict, tokens: list[int] | None = None) -> list[list[int]]:
    """Every prompt of an encoded call (see ``_PromptDecoder``)."""
    return _PromptDecoder(b, tokens).get_all()


def _clone(sp: SamplingParams) -> SamplingParams:
    """A shallow copy (each request owns its params object; the lists in it are never mutated)."""
    c = object.__new__(SamplingParams)
    c.__dict__.update(sp.__dict__)
    return c


def _eos_ids(tokenizer, hf_config) -> set[int]:
    ids: set[int] = set()
    for src in (getattr(tokenizer, "eos_token_id", None), getattr(hf_config, "eos_token_id", None)):
        if isinstance(src, int):
            ids.add(src)
        elif isinstance(src, (list, tuple)):
            ids.update(int(x) for x in src)
    return ids


def worker_main(cfg: RuntimeConfig, in_q, out_q) -> None:
    """Entry point of the worker process/thread: set up, then loop until shutdown."""
    # NOTE: before torch loads: spinning OpenMP barriers collapse (4-8x slower) as soon as anything
    # else wants the CPU; passive waiting costs little on a quiet machine.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        w = Worker(cfg)
        out_q.put(("ready", w.info()))
    except BaseException:  # noqa: BLE001  (NOTE: report any start-up failure to the Engine, don't die silently)
        out_q.put(("fatal", traceback.format_exc()))
        return
    parent = mp.parent_process()
    # NOTE: only in the worker's own process: a thread worker must not change its host application's GC
    idle_gc = None
    if parent is not None and ENV.gc_freeze:
        w.gc_frozen_objects = tune_gc()
        idle_gc = IdleCollector()
    while True:
        if parent is not None and not parent.is_alive():
            logger.warning("the Engine's process is gone: worker exiting")
            return
        busy = w.busy
        if idle_gc is not None:
            idle_gc.tick(busy)
        msgs = _drain(in_q, block=not busy)
        events: list[dict] = []
        for m in msgs:
            kind = m[0]
            if kind == "shutdown":
                events.extend(w.abort(None))
                events.extend(w.step())   # NOTE: requests that finished while the in-flight step was settled
                out_q.put(("out", events))
                return
            try:
                if kind == "batch":
                    events.extend(w.add_batch(m[1]))
                elif kind == "generate":
                    events.extend(w.add_requests(m[1]))
                elif kind == "abort":
                    events.extend(w.abort(m[1]))
                elif kind == "call":
                    out_q.put(("reply", m[1], getattr(w, m[2])()))
            except Exception:
                logger.exception("worker failed handling %s", kind)
                out_q.put(("reply", m[1], None)) if kind == "call" else None
        stepped, fatal = w.safe_step()
        if fatal is not None:
            out_q.put(("fatal", fatal))
            raise RuntimeError("the worker gave up after repeated failed steps")
        events.extend(stepped)
        if events:
            out_q.put(("out", events))
        elif not w.scheduler.has_work:
            time.sleep(0.002)  # NOTE: only constraint compiles pending: don't spin a core


def tune_gc() -> int:
    """The worker process's garbage-collector policy; returns how many objects it froze.

    * The start-up objects (modules, model, tokenizer: ~290k of them) never die, but every full collection
      scanned them again: pauses of up to 0.2 s under load, ~100 us per request on the few-shot batch. Frozen,
      collections scan only what requests allocate (median round 1.15 -> 0.92 s, CPU box).
    * A full collection still walks every element of every live list: with 1,000 requests in flight (their
      token and slot lists) it took 35-70 ms, and Python ran one every ~15 decode steps (session 11, H100, fp8
      offline: 132 ms of a 1,004-ms window, the GPU idle meanwhile). They now run after ``SGLC_GC_FULL_EVERY``
      middle-generation collections instead of 10 (~100x rarer), and whenever the worker runs out of work
      (``worker_main``). The young generations, where short-lived garbage dies, are collected as before.
    """
    every = gc_full_every()   # NOTE: first: a bad value fails before anything changes
    gc.collect()
    gc.freeze()
    if every:
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, every)
    # NOTE: counted once: gc.get_freeze_count() walks the frozen list (~20 ms for ~200k objects), which
    # stalled the scheduler on every metrics() call (a Prometheus scrape)
    return gc.get_freeze_count()


class IdleCollector:
    """A full collection when the worker runs out of work (``tick(busy)`` at the top of its loop): the collections
    ``tune_gc`` puts off then cost nobody a step. At most one per ``min_interval`` seconds: under light, bursty
    load the worker goes idle after nearly every request, and a full collection walks the radix cache's token
    lists (a few ms for a large cache) while a new request may be arriving."""

    def __init__(self, min_interval: float = 1.0, clock=time.monotonic) -> None:
        self.was_busy = False
        self.collections = 0
        self.min_interval = min_interval
        self.clock = clock
        self.last = -float("inf")

    def tick(self, busy: bool) -> None:
        if self.was_busy and not busy and self.clock() - self.last >= self.min_interval:
            gc.collect()
            self.collections += 1
            self.last = self.clock()
        self.was_busy = busy


def _drain(q, block: bool) -> list:
    msgs = []
    if block:
        try:
            msgs.append(q.get(timeout=1.0))
        except queue.Empty:
            return msgs
    while True:
        try:
            msgs.append(q.get_nowait())
        except queue.Empty:
            return msgs
        except (EOFError, OSError):
            time.sleep(0.01)
            return msgs
