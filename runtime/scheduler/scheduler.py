"""Continuous batching over the radix cache and the token-paged KV pool (no torch, no model).

Each ``step()`` builds one batch — a prefill/extend batch when waiting requests can be admitted
(with ``mixed_chunk``, followed by one decode row per running request), else a decode batch of the
running requests — runs it through ``executor.run(batch)`` and applies the results. KV ownership: ``req.kv_slots[:req.cached_len]`` belong to the radix tree (kept alive by
``lock(req.last_node)``); the rest belong to the request until it is released into the tree.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..mem.allocator import SlotAllocator
from ..mem.radix_cache import MatchResult, RadixCache
from .batch import BatchEntry, EntryResult, ScheduleBatch
from .request import FinishReason, Req

logger = logging.getLogger(__name__)

IN_BATCH_PREFIX_MIN = 32  # uncached shared tokens that make a waiting request defer to its twin
# A warm whose prefix is cached but for a few tokens finishes without a pass when the requests it prefixes would
# recompute fewer than this many tokens in all (uncached tokens x max(uses - 1, 1)): a pass on their critical path
# costs more than that (see Scheduler._finish_cached_warm). Never a warm that asked for prompt logprobs.
WARM_SKIP_TOKENS = 8
LPM_MAX_QUEUE = 128  # NOTE: past this many waiting requests, LPM's sort costs more than it saves: FCFS


class RunningSet:
    """The running requests: insertion order (decode rows in arrival order, retraction from the end) with O(1)
    membership and removal. Every decode row's ``_apply`` asks whether its request is running: on a list that
    was a scan per row, O(n^2) a step (6 ms of a 17-ms host step at 640 running requests, CPU-measured)."""

    __slots__ = ("_reqs",)

    def __init__(self) -> None:
        self._reqs: dict[Req, None] = {}   # (Req hashes by identity: eq=False)

    def append(self, req: Req) -> None:
        """Add ``req`` at the end; one already running keeps its place."""
        self._reqs[req] = None

    def remove(self, req: Req) -> None:
        del self._reqs[req]

    def discard(self, req: Req) -> None:
        self._reqs.pop(req, None)

    def last(self) -> Req:
        return next(reversed(self._reqs))

    def __contains__(self, req: object) -> bool:
        return req in self._reqs

    def __iter__(self):
        return iter(self._reqs)

    def __len__(self) -> int:
        return len(self._reqs)


class Executor(Protocol):
    def run(self, batch: ScheduleBatch) -> list[EntryResult]: ...


@dataclass(frozen=True)
class SchedulerConfig:
    max_running_requests: int = 128
    chunked_prefill_size: int = 1024
    max_prefill_tokens: int = 2048
    schedule_policy: str = "lpm"
    # Mixed batches: a prefill batch also carries one decode row per running request. None: ask the
    # executor (its ``mixed_chunk``: RuntimeConfig.mixed_chunk and whether the attention backend supports it).
    mixed_chunk: bool | None = None
    # Admission keeps this many decode steps of the running requests free in the KV pool (free + evictable):
    # a prefill that filled the pool would stall the next decode step (overlap scheduling waits, applies,
    # maybe retracts) and retract requests that only needed a few more tokens.
    decode_reserve_steps: int = 16


class Scheduler:
    def __init__(self, cfg: SchedulerConfig, allocator: SlotAllocator, cache: RadixCache,
                 executor: Executor, check_finish: Callable[[Req], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.allocator = allocator
        self.cache = cache
        self.executor = executor
        self.check_finish = check_finish   # sets req.finish for stop strings / EOS / length
        self.waiting: deque[Req] = deque()
        self.running = RunningSet()
        self.stats = {"forward_passes": 0, "prefill_passes": 0, "prefill_tokens": 0, "decode_tokens": 0,
                      "retractions": 0, "cascade_rows": 0, "mixed_passes": 0, "kv_stalls": 0, "cached_warms": 0}
        self.clock = clock   # pin deadlines (SamplingParams.pin_ttl_s)
        self.mixed = cfg.mixed_chunk if cfg.mixed_chunk is not None else bool(getattr(executor, "mixed_chunk", False))
        self._favored: Req | None = None   # the waiting request an unstick lets prefill alone (see step_or_unstick)
        self._solo = False                 # this prefill step admits only the first waiting request
        self._arrivals = 0                 # Req.arrival: order of add()
        self._early: list[Req] = []        # finished while a batch was formed, without a pass (cached warms)
        self.current: ScheduleBatch | None = None   # the pass being launched or run, until it is applied

    # -- queue management ---------------------------------------------------------------------
    def add(self, req: Req) -> None:
        self._arrivals += 1
        req.arrival = self._arrivals
        self.waiting.append(req)

    def abort(self, rid: str | None) -> list[Req]:
        """Abort every request whose rid is ``rid`` or starts with ``rid#`` (all when None); returns them."""
        hit = [r for r in (*self.waiting, *self.running) if rid_matches(r.rid, rid)]
        self.cache.unpin(lambda owner: rid_matches(owner, rid))   # a warm's pin dies with its rid
        for r in hit:
            self._release(r)
            r.finish, r.error = FinishReason.ABORT, "aborted by the client"
            if r in self.running:
                self.running.remove(r)
            else:
                self.waiting.remove(r)
        return hit

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self._early)

    def settle(self) -> None:
        """Apply whatever is already launched (the overlap scheduler's in-flight step; here: nothing)."""

    # -- one step -------------------------------------------------------------------------------
    def step(self) -> list[Req]:
        """Run one batch; returns the requests it touched (finished ones are already released)."""
        self.cache.expire_pins(self.clock())
        batch = self._prefill_batch() or self._decode_batch()
        touched, self._early = self._early, []
        if batch is None:
            return touched
        self.current = batch
        results = self.executor.run(batch)
        self._count_pass(batch)
        for entry, res in zip(batch.entries, results):
            self._apply(entry, res)
            touched.append(entry.req)
        self.current = None
        return touched

    def _unapplied(self) -> list[ScheduleBatch]:
        return [self.current] if self.current is not None else []

    def drop_unapplied(self) -> None:
        """After a failed step: free the KV slots of passes scheduled but never applied (their requests never
        took them), and release the requests of those passes that are in neither queue (a prefill's requests
        leave ``waiting`` when scheduled and join ``running`` when applied): their radix locks, also on the
        prompt ``_share_now`` put in the tree, would keep KV that was never written matchable. The caller
        aborts the requests still queued."""
        orphans: dict[Req, None] = {}
        queued = {id(r) for r in (*self.waiting, *self.running)}
        for batch in self._unapplied():
            for e in batch.entries:
                if not e.applied and not e.shared:
                    self.allocator.free(e.new_slots)
                if id(e.req) not in queued and not e.req.finished:
                    orphans[e.req] = None
        for r in orphans:
            self._release(r)
        self.current = None

    def _count_pass(self, batch: ScheduleBatch) -> None:
        self.stats["forward_passes"] += 1
        self.stats["prefill_passes"] += not batch.decode
        self.stats["mixed_passes"] += batch.mixed > 0
        dec = batch.decode_tokens
        self.stats["decode_tokens"] += dec
        self.stats["prefill_tokens"] += batch.num_tokens - dec
        self.stats["cascade_rows"] += batch.cascade_rows

    def _apply(self, e: BatchEntry, res: EntryResult) -> None:
        e.applied = True
        req = e.req
        req.forward_passes += 1
        req.kv_slots.extend(e.new_slots)
        if e.prefix_len < len(req.input_ids) and not self.cache.disabled:
            # NOTE: share the prompt with requests arriving while this one runs (also when a constraint's
            # forced prefix already gave it output tokens before its first pass).
            self._cache_prefix(req)
            if req.sampling_params.pin_uses and not self._prompt_pending(req) and not req.pinned:
                self._pin_prompt(req)
                req.pinned = True
        if e.lp_targets:
            req.input_token_logprobs.extend(zip(res.input_logprobs, e.lp_targets))
            req.input_top_logprobs.extend(res.input_tops)
        if res.next_token is not None:
            req.output_ids.append(res.next_token)
            if req.return_logprob:
                req.output_token_logprobs.append((res.next_logprob, res.next_token))
                if req.top_logprobs_num:
                    req.output_top_logprobs.append(res.next_top)
            self.check_finish(req)   # may also append jump-forward tokens
        elif not self._prompt_pending(req) and len(req.output_ids) >= req.sampling_params.max_new_tokens:
            req.finish = FinishReason.LENGTH   # max_new_tokens=0 (scoring / warming): prompt done
        if req.finished:
            self._release(req)
            self.running.discard(req)
        elif self._prompt_pending(req) or len(req.kv_slots) < req.seq_len - 1:
            self.running.discard(req)        # more tokens to extend (next chunk / jump-forward)
            self.waiting.appendleft(req)
        else:
            self.running.append(req)         # (already running: stays in its place)

    @staticmethod
    def _prompt_pending(req: Req) -> bool:
        return not req.output_ids and len(req.kv_slots) < req.seq_len

    def step_or_unstick(self) -> list[Req]:
        """``step()``; if nothing could run although requests wait, free the KV that waiting
        (partially prefilled) requests hold and try once more."""
        touched = self.step()
        if not touched and self.waiting and not self.running:
            self.cache.unpin()   # NOTE: pins are hints: never the reason nothing can run
            # NOTE: free all but one waiting request and let that one prefill alone. Freeing everyone let the same
            # requests split the pool the same way again, forever (radix cache off). The favored request stays
            # the same until it leaves the queue, and advances at least a chunk per round, so the queue drains.
            keep = self._favored
            if keep is None or not any(r is keep for r in self.waiting):
                keep = max(self.waiting, key=lambda r: len(r.kv_slots))
            self._favored = keep
            for r in self.waiting:
                if r is not keep:
                    self._release(r)
            self._solo = True
            try:
                touched = self.step()
            finally:
                self._solo = False
            if not touched:
                self._release(keep)
                touched = self.step()
            if not touched:
                for r in list(self.waiting):
                    r.finish, r.error = FinishReason.ABORT, "request does not fit in the KV pool"
                    self.waiting.remove(r)
                    touched.append(r)
        return touched

    # -- prefill ----------------------------------------------------------------------------------
    def _prefill_batch(self) -> ScheduleBatch | None:
        if not self.waiting:
            return None
        pf = self._prefill_in_flight()
        # NOTE: the in-flight prefill's requests are in neither queue yet, but join the running ones when applied
        joining = pf.joining if pf is not None else 0
        room = self.cfg.max_running_requests - len(self.running) - joining
        budget, chunk = self.cfg.max_prefill_tokens, self.cfg.chunked_prefill_size
        mix = self._decode_inputs() if self.mixed and self.running else []
        if mix and len(mix) <= min(budget, chunk) // 2:
            # NOTE: the decode rows count against the prefill budget (as SGLang's mixed chunk does): the pass
            # stays the size the budget was tuned for. Only while they leave at least half of it to prefill:
            # otherwise a long prompt would creep through in chunks of a few tokens.
            budget, chunk = budget - len(mix), chunk - len(mix)
        else:
            mix = []
        entries: list[BatchEntry] = []
        # NOTE: decode rows of the running requests for a few steps (the mixed rows of this pass included), at
        # most an eighth of the pool (a tiny pool would otherwise admit nothing while anything runs)
        reserve = min((len(self.running) + joining) * self.cfg.decode_reserve_steps, self.allocator.size // 8)
        ahead = pf.computing if pf is not None else frozenset()
        computing: set[tuple] = set()   # uncached prefixes this batch already computes
        warming = list(pf.warming) if pf is not None else []   # (prompt, arrival) of warms being computed
        own = len(warming)   # this batch's warms are warming[own:]
        for req in self._waiting_order():
            if room <= 0 or budget <= 0:
                break
            if self._solo and req is not self._favored:
                continue
            fill = req.fill_ids
            # NOTE: one radix match per request serves the sharing key and the admission (no eviction between)
            m = None if req.kv_slots else self.cache.match_prefix(fill[:req.prefix_cap()])
            if (m is not None and _is_warm(req) and not req.needs_input_logprobs and m.length >= IN_BATCH_PREFIX_MIN
                    and (len(fill) - m.length) * max(req.sampling_params.pin_uses - 1, 1) < WARM_SKIP_TOKENS):
                self._finish_cached_warm(req, fill, m)   # NOTE: no pass: the requests it prefixes compute the rest
                continue
            key = self._uncached_key(fill, m)
            if key is not None and (key in computing or key in ahead):
                continue   # NOTE: in-batch prefix sharing: the twin computes it; this one hits the cache next step
            if warming and m is not None and not _is_warm(req) and any(
                    req.arrival >= a and len(fill) >= len(w) and fill[:len(w)] == w for w, a in warming):
                # NOTE: a warm sent before this one computes its prefix (the client did not wait for it): next
                # step it is a cache hit and counts towards the warm's pin, as if the client had waited. Only
                # earlier warms (a stream of later ones cannot hold it back), and never a warm (they would
                # go one per step).
                continue
            computing.add(key)
            entry = self._admit(req, min(budget, chunk), fill, m, reserve)
            if entry is None:
                break
            if m is not None and not self.cache.disabled and self._share_now(req, entry, fill):
                end = entry.prefix_len + len(entry.new_ids)
                if end < len(fill):   # a chunk: twins of the rest of its prompt wait for its next chunk
                    computing.add((end, tuple(fill[end:end + IN_BATCH_PREFIX_MIN])))
            # NOTE: a warm whose prompt is not complete after this pass (chunked) holds back the requests it
            # prefixes until its pin exists (only requests admitted after that count towards it)
            if _is_warm(req) and not self.cache.disabled and not req.pinned:
                warming.append((fill, req.arrival))
            self.waiting.remove(req)
            entries.append(entry)
            budget -= len(entry.new_ids)
            room -= 1
        if not entries:
            return None
        rows = self._mix_rows(mix, entries) if mix else []
        computing.discard(None)
        return ScheduleBatch(decode=False, entries=entries + rows, mixed=len(rows), computing=frozenset(computing),
                             warming=tuple(warming[own:]))

    def _share_now(self, req: Req, e: BatchEntry, fill: list[int]) -> bool:
        """Put a fresh request's tokens of this pass into the radix tree now, as the pass is scheduled, not when
        it is applied: requests admitted after it (in this batch or the next) match them and attend to their
        K/V in the same pass — every attention backend stores a layer's new K/V for the whole batch before it
        attends — instead of waiting a pass for the cache hit (fork branches behind their prefix, extensions
        behind a warm). The request's lock moves to the new node; ``kv_slots`` gains ``new_slots`` when the
        pass is applied, as before, and ``cached_len`` already counts them (the tree owns them).
        A warm whose prompt this pass completes is pinned now, so that the requests sharing its pass count."""
        end = e.prefix_len + len(e.new_ids)
        node = req.last_node   # where its radix match ended (_admit), exactly e.prefix_len tokens deep
        if node is None or not e.new_ids or fill[e.prefix_len] in node.children:
            # NOTE: the tree holds more of it than the match took (the match stops a token early for the
            # logits): this pass computes duplicates, which the apply frees as before
            return False
        done = self.cache.insert(fill[:end], req.kv_slots + e.new_slots)
        assert done == e.prefix_len, (done, e.prefix_len)
        leaf = node.children[fill[e.prefix_len]]   # what the insert hung below the match: no second walk
        self.cache.lock(leaf)
        self.cache.unlock(node)
        req.last_node, req.cached_len = leaf, end
        e.shared = True
        sp = req.sampling_params
        if _is_warm(req) and end == len(fill):
            self.cache.pin(req.rid, fill[:end], leaf, sp.pin_uses, self.clock() + sp.pin_ttl_s)
            req.pinned = True
        return True

    def _finish_cached_warm(self, req: Req, fill: list[int], m: MatchResult) -> None:
        """A warm whose prompt is cached but for a few tokens (a fork of a stream that just decoded: its last
        token) would spend a forward pass on the critical path of the requests it prefixes, to save them a few
        tokens each: finish it at once, pinning the cached part for its uses (as a computed warm pins its
        prompt). The requests it prefixes then compute the short rest in their own pass."""
        sp = req.sampling_params
        req.cached_tokens = min(m.length, len(req.input_ids))
        self.cache.pin(req.rid, fill[:m.length], m.node, sp.pin_uses, self.clock() + sp.pin_ttl_s)
        req.finish = FinishReason.LENGTH
        self.waiting.remove(req)
        self._early.append(req)
        self.stats["cached_warms"] += 1

    def _prefill_in_flight(self) -> ScheduleBatch | None:
        """A prefill batch launched earlier and not applied yet (overlap scheduling; here: none)."""
        return None

    def _decode_inputs(self) -> list[tuple[Req, int, int]]:
        """(request, input token, KV length) of each running request's next decode row."""
        return [(r, r.last_token, len(r.kv_slots)) for r in self.running]

    def _mix_rows(self, mix: list[tuple[Req, int, int]], prefill: list[BatchEntry]) -> list[BatchEntry]:
        """Decode entries for ``mix`` after the prefill entries ``prefill``: none when the KV pool has no slot
        for each (no retraction for the sake of mixing: those requests decode in a later step)."""
        busy = {id(e.req) for e in prefill}
        mix = [x for x in mix if id(x[0]) not in busy]
        slots = self._alloc(len(mix)) if mix else None
        if slots is None:
            return []
        return [BatchEntry(r, [tok], prefix, [s], True) for (r, tok, prefix), s in zip(mix, slots)]

    def _uncached_key(self, fill: list[int], m: MatchResult | None) -> tuple | None:
        """Where a fresh request's uncached part starts (its radix match ``m``) and its first tokens: requests
        in one prefill batch with the same key would compute the same not-yet-cached prefix."""
        if self.cache.disabled or m is None:
            return None
        cached = m.length
        if len(fill) - cached < IN_BATCH_PREFIX_MIN:
            return None
        return cached, tuple(fill[cached:cached + IN_BATCH_PREFIX_MIN])

    def _waiting_order(self) -> list[Req]:
        # NOTE: partially prefilled / jump-forwarded requests first, then pinned warms before what they prefix
        # (LPM would put a longer-matching extension first, admitted before the pin exists: it would never
        # count towards it), then the rest
        resumed, warms, fresh = [], [], []
        for r in self.waiting:
            (resumed if r.kv_slots else warms if _is_warm(r) else fresh).append(r)
        if self.cfg.schedule_policy == "lpm" and not self.cache.disabled and len(fresh) <= LPM_MAX_QUEUE:
            fresh.sort(key=lambda r: -self.cache.match_prefix(r.fill_ids[:r.prefix_cap()]).length)
        return resumed + warms + fresh

    def _admit(self, req: Req, max_tokens: int, fill: list[int], m: MatchResult | None,
               reserve: int = 0) -> BatchEntry | None:
        """``req``'s entry in a prefill batch (``fill``: its tokens; ``m``: its radix match when it holds no KV
        yet), or None when the KV pool has no room for it beyond ``reserve`` slots."""
        fresh = not req.kv_slots
        if fresh:
            req.kv_slots, req.cached_len, req.last_node = list(m.slots), m.length, m.node
            self.cache.lock(m.node)
            if req.forward_passes == 0:   # NOTE: also with jump-forward's forced first output tokens
                req.cached_tokens = min(m.length, len(req.input_ids))
        prefix = len(req.kv_slots)
        # NOTE: a resumed request (retracted, or jump-forwarded) extends through its newest token and samples
        # in the same pass: one forward pass per jump-forward instead of two.
        n = min(len(fill) - prefix, max_tokens)
        room = self.allocator.available + self.cache.evictable_size - reserve
        slots = self._alloc(n) if n <= room else None
        if slots is None:
            if req.cached_len == len(req.kv_slots):
                self._release(req)  # holds nothing of its own: drop the lock so eviction can proceed
            return None
        new_ids = fill[prefix:prefix + n]
        last_chunk = prefix + n == len(fill)
        sample = last_chunk and req.sampling_params.max_new_tokens > len(req.output_ids)
        entry = BatchEntry(req, new_ids, prefix, slots, sample)
        if fresh and self.cache.pins:
            self.cache.use_pins(fill)   # admitted: its own lock keeps the pinned prefix from now on
        if req.needs_input_logprobs and not req.output_ids:
            if fresh:   # NOTE: a request released mid-prompt (no room for its next chunk) plans them all again
                req.input_token_logprobs.clear()
                req.input_top_logprobs.clear()
            self._plan_input_logprobs(entry, fill)
        return entry

    @staticmethod
    def _plan_input_logprobs(e: BatchEntry, fill: list[int]) -> None:
        req, start = e.req, e.req.logprob_start_len
        n_prompt = len(req.input_ids)
        if start == 0 and e.prefix_len == 0:
            req.input_token_logprobs.append((None, fill[0]))
            req.input_top_logprobs.append(None)
        lo = max(start, e.prefix_len + 1, 1)
        hi = min(e.prefix_len + len(e.new_ids) + 1, n_prompt)
        for p in range(lo, hi):
            e.lp_rows.append(p - 1 - e.prefix_len)
            e.lp_targets.append(fill[p])

    # -- decode -----------------------------------------------------------------------------------
    def _decode_batch(self) -> ScheduleBatch | None:
        if not self.running:
            return None
        while self.running:
            slots = self._alloc(len(self.running))
            if slots is not None:
                break
            if not self.cache.unpin():   # NOTE: drop hint pins before retracting a running request
                self._retract(self.running.last())
        else:
            return None
        entries = [BatchEntry(r, [r.last_token], len(r.kv_slots), [s], True)
                   for r, s in zip(self.running, slots)]
        return ScheduleBatch(decode=True, entries=entries)

    def _retract(self, req: Req) -> None:
        """Out of KV during decode: put ``req`` back in the waiting queue; its tokens go to the cache."""
        self.running.remove(req)
        self._release(req)
        self.waiting.appendleft(req)
        self.stats["retractions"] += 1
        logger.info("KV pool exhausted: retracted %s (%d tokens) to the waiting queue", req.rid, req.seq_len)

    # -- KV ownership -----------------------------------------------------------------------------
    def _alloc(self, n: int) -> list[int] | None:
        if n > self.allocator.available:
            self.cache.evict(n - self.allocator.available)
        return self.allocator.alloc(n)

    def _cache_prefix(self, req: Req) -> None:
        """Insert the request's computed tokens into the tree now (not only at finish) and move its
        lock down to the new node; slots another request cached meanwhile replace our duplicates."""
        tokens = req.fill_ids[:len(req.kv_slots)]
        done = self.cache.insert(tokens, req.kv_slots)
        self.allocator.free(req.kv_slots[req.cached_len:done])
        m = self.cache.match_prefix(tokens)
        self.cache.lock(m.node)
        if req.last_node is not None:
            self.cache.unlock(req.last_node)
        req.kv_slots, req.cached_len, req.last_node = list(m.slots), m.length, m.node

    def _pin_prompt(self, req: Req) -> None:
        """Keep the prefilled prompt locked for ``pin_uses`` requests to come (``Engine.warm(expect=n)``)."""
        sp = req.sampling_params
        self.cache.pin(req.rid, req.fill_ids[:len(req.kv_slots)], req.last_node, sp.pin_uses,
                       self.clock() + sp.pin_ttl_s)

    def _release(self, req: Req) -> None:
        """Give the request's KV to the radix tree (or free it) and drop its lock."""
        if req.last_node is None and not req.kv_slots:
            return
        tokens = req.fill_ids[:len(req.kv_slots)]
        if self.cache.disabled:
            self.allocator.free(req.kv_slots[req.cached_len:])
        else:
            done = self.cache.insert(tokens, req.kv_slots)
            self.allocator.free(req.kv_slots[req.cached_len:done])
        if req.last_node is not None:
            self.cache.unlock(req.last_node)
        req.kv_slots, req.cached_len, req.last_node = [], 0, None


def _is_warm(req: Req) -> bool:
    """A pinned warm-up (``Engine.warm(expect=n)``): no output, a pin for the requests it prefixes."""
    sp = req.sampling_params
    return bool(sp.pin_uses) and sp.max_new_tokens == 0


def rid_matches(req_rid: str, rid: str | None) -> bool:
    """``abort(rid)`` reaches ``req_rid``: every request when None, the request, or its samples (``rid#k``)."""
    return rid is None or req_rid == rid or req_rid.startswith(rid + "#")
