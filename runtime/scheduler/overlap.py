"""Overlap scheduling: queue step N+1 on the GPU before reading step N's tokens back.

Without it a decode step is: build the batch on the host, run it on the GPU, wait for the sampled tokens,
apply them on the host (finish checks, outputs); the GPU idles through the host parts (~30% of a step at
256 running requests). Here ``step()`` builds and launches the next batch first, then collects and applies
the previous one while the GPU computes — the host work hides behind the forward pass.

How the next batch is built before the previous one is applied:

* a request decoding in the in-flight batch decodes again with input ``FUTURE_TOKEN``: the executor
  takes that token from the in-flight batch's device output; its position and KV length count the
  in-flight token (``len(kv_slots) + 1``);
* a request that surely finishes in flight (it reaches ``max_new_tokens``) is left out; one that finishes
  otherwise (EOS, stop string, abort) has computed one token too many: its slot is freed and the token
  dropped when that batch is applied;
* requests whose next step depends on the host seeing every token — grammar matchers (masks, jump-forward),
  penalties, seeded sampling, ``min_new_tokens`` still pending — are never looked ahead: the scheduler
  applies the in-flight batch first (the plain synchronous step);
* prefill batches of waiting requests need nothing from an in-flight batch and are launched ahead of it
  too (a mixed batch's decode rows are built like the look-ahead decode batch: ``FUTURE_TOKEN`` inputs);
* an in-flight *prefill* batch has not put its prompts into the radix cache yet: a waiting request whose
  uncached prefix it computes (the same key as in-batch prefix sharing, ``ScheduleBatch.computing``) waits
  for the step after, when the prefix is a cache hit, instead of computing it a second time. The requests the
  in-flight prefill samples first tokens for join the decode batch one step later.

``step()`` returns the requests it applied *and* the ones it launched (so a step that only launched still
counts as progress); anything applied outside ``step()`` (an abort drains the in-flight batch first) is
returned by the next ``step()``.
"""
from __future__ import annotations

from typing import Any

from ..envs import ENV
from .batch import FUTURE_TOKEN, BatchEntry, ScheduleBatch
from .request import Req
from .scheduler import Scheduler


class OverlapScheduler(Scheduler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inflight: tuple[ScheduleBatch, Any] | None = None   # (batch, executor handle)
        self._applied_outside: list[Req] = []

    @property
    def has_work(self) -> bool:
        return super().has_work or self.inflight is not None or bool(self._applied_outside)

    def step(self) -> list[Req]:
        touched, self._applied_outside = self._applied_outside, []
        self.cache.expire_pins(self.clock())
        if self.inflight is not None and not (_can_look_ahead(self.inflight[0])
                                              and (self.inflight[0].decode or ENV.overlap_prefill)):
            return touched + self._drain()
        batch = self._prefill_batch() or (self._decode_ahead() if self.inflight else self._decode_batch())
        touched += self._early
        self._early = []
        if batch is None:
            return touched + self._drain()
        prev = self.inflight[1] if self.inflight is not None else None
        self.current = batch
        handle = self.executor.launch(batch, prev)   # NOTE: queued on the GPU; nothing waits here
        self._count_pass(batch)
        touched += self._drain()                     # the host work of step N, while N+1 runs
        self.inflight, self.current = (batch, handle), None
        seen = {id(r) for r in touched}
        touched += [e.req for e in batch.entries if id(e.req) not in seen]
        return touched

    def step_or_unstick(self) -> list[Req]:
        touched = self.step()
        if not touched and self.waiting and not self.running:
            # NOTE: that step may only have applied finished requests' extra tokens, freeing their slots: try
            # again before the base class unpins and releases waiting requests' KV to make room.
            touched = self.step()
        return touched or super().step_or_unstick()

    def abort(self, rid: str | None) -> list[Req]:
        self.settle()   # NOTE: in-flight requests are in neither queue
        hit = super().abort(rid)
        gone = {id(r) for r in hit}   # reported by abort(): the next step() must not report them again
        self._applied_outside = [r for r in self._applied_outside if id(r) not in gone]
        return hit

    def settle(self) -> None:
        self._applied_outside += self._drain()

    def _unapplied(self) -> list[ScheduleBatch]:
        return super()._unapplied() + ([self.inflight[0]] if self.inflight is not None else [])

    def drop_unapplied(self) -> None:
        super().drop_unapplied()
        self.inflight = None   # NOTE: not collected: collecting it may be what failed

    def _drain(self) -> list[Req]:
        """Collect and apply the in-flight batch (if any); returns its live requests."""
        if self.inflight is None:
            return []
        batch, handle = self.inflight
        results = self.executor.collect(handle)
        touched = []
        for entry, res in zip(batch.entries, results):
            if entry.req.finished:   # finished (or aborted) while this step ran: drop its extra token
                if not entry.shared:     # (a shared entry's slots belong to the radix tree)
                    self.allocator.free(entry.new_slots)
                entry.applied = True     # (its slots are settled: drop_unapplied must not free them again)
                continue
            self._apply(entry, res)
            touched.append(entry.req)
        # NOTE: only now: if the collect or an apply raises, drop_unapplied frees the entries not applied yet
        self.inflight = None
        return touched

    def _prefill_in_flight(self) -> ScheduleBatch | None:
        return self.inflight[0] if self.inflight is not None and not self.inflight[0].decode else None

    def _decode_inputs(self) -> list[tuple[Req, int, int]]:
        """Decode rows of the running requests; with a (decode) batch in flight, the rows after it: its requests
        take its token as ``FUTURE_TOKEN``, and those it surely finishes are left out. Also the decode rows of a
        mixed batch launched ahead of an in-flight decode batch."""
        if self.inflight is None:
            return super()._decode_inputs()
        ahead = {id(e.req) for e in self.inflight[0].entries if e.sample}
        reqs = []
        for r in self.running:
            if id(r) not in ahead:
                reqs.append((r, r.last_token, len(r.kv_slots)))
            elif len(r.output_ids) + 1 < r.sampling_params.max_new_tokens:
                reqs.append((r, FUTURE_TOKEN, len(r.kv_slots) + 1))
        return reqs

    def _decode_ahead(self) -> ScheduleBatch | None:
        """The decode batch after the in-flight one, built before that one is applied (None: apply first)."""
        reqs = self._decode_inputs()
        if not reqs:
            return None
        slots = self._alloc(len(reqs))
        if slots is None:
            self.stats["kv_stalls"] += 1
            return None   # NOTE: out of KV: the synchronous path retracts after applying the in-flight batch
        entries = [BatchEntry(r, [tok], prefix, [s], True) for (r, tok, prefix), s in zip(reqs, slots)]
        return ScheduleBatch(decode=True, entries=entries)


def _can_look_ahead(batch: ScheduleBatch) -> bool:
    """Whether the next batch may be built before ``batch`` is applied: every request of it may take its next
    step before the host sees this one's tokens.

    NOTE: an earlier look-ahead of in-flight *prefills* measured slower on few-shot (291 vs 524 req/s,
    H100): a waiting request could not see the prefix the in-flight batch was computing and computed it again.
    ``ScheduleBatch.computing`` now makes it wait for the cache hit instead.
    """
    for e in batch.entries:
        r, sp = e.req, e.req.sampling_params
        if r.matcher is not None or sp.seed is not None or sp.frequency_penalty or sp.presence_penalty:
            return False
        if sp.repetition_penalty != 1.0 or (sp.min_new_tokens and len(r.output_ids) <= sp.min_new_tokens):
            return False
    return True
