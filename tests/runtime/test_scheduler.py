"""Scheduler stress test with no model: random arrivals, aborts and a tiny KV pool that forces
eviction and retraction. Every request must get its full, correct answer and every slot comes back."""
from __future__ import annotations

import random

import pytest

from runtime.mem.allocator import SlotAllocator
from runtime.mem.radix_cache import RadixCache
from runtime.sampling_params import SamplingParams
from runtime.scheduler.batch import FUTURE_TOKEN, EntryResult, ScheduleBatch
from runtime.scheduler.overlap import OverlapScheduler
from runtime.scheduler.request import FinishReason, Req
from runtime.scheduler.scheduler import RunningSet, Scheduler, SchedulerConfig

V = 50


def next_token(seq: list[int]) -> int:
    """A deterministic 'model': the next token depends on the whole sequence."""
    return (sum((i + 1) * t for i, t in enumerate(seq)) * 7 + len(seq)) % V


class FakeExecutor:
    """Checks the KV bookkeeping the way attention would see it, then 'samples' next_token."""

    def __init__(self, pool_tokens: dict[int, tuple[int, int]]):
        self.kv = pool_tokens  # slot -> (position, token): what a real KV pool would hold
        self.ahead = 0         # decode entries launched before their previous token was applied

    def run(self, batch: ScheduleBatch) -> list[EntryResult]:
        return self.collect(self.launch(batch))

    def launch(self, batch: ScheduleBatch, prev: dict | None = None) -> dict:
        """Computes at once (a GPU would later); a FUTURE_TOKEN input is the token ``prev`` sampled. As the
        attention backends do in every layer, the whole batch's new K/V is stored first, then each entry attends:
        an entry may read slots another entry of the same pass writes (Scheduler._share_now)."""
        out, sampled, inputs = [], {}, []
        for e in batch.entries:
            req = e.req
            seq, slots, new_ids = req.fill_ids, list(req.kv_slots), e.new_ids
            if new_ids == [FUTURE_TOKEN]:        # overlap: the previous step's token is not applied yet
                pe, tok = prev["sampled"][id(req)]
                seq, slots, new_ids = seq + [tok], slots + pe.new_slots, [tok]
                seq = seq[:-1]                   # the in-flight token is this pass's input
                self.ahead += 1
            for j, (tok, slot) in enumerate(zip(new_ids, e.new_slots)):
                self.kv[slot] = (e.prefix_len + j, tok)
            inputs.append((seq, slots, new_ids))
        for e, (seq, slots, new_ids) in zip(batch.entries, inputs):
            req = e.req
            assert e.prefix_len == len(slots)
            for p, slot in enumerate(slots):       # cached/previous KV (or this pass's) holds the right tokens
                assert self.kv[slot] == (p, (seq + new_ids)[p]), (req.rid, p)
            upto = e.prefix_len + len(new_ids)
            full = seq[:e.prefix_len] + new_ids
            assert full[e.prefix_len:upto] == new_ids and len(full) == upto
            nxt = next_token(full) if e.sample else None
            if e.sample:
                sampled[id(req)] = (e, nxt)
            out.append(EntryResult(next_token=nxt))
        return {"results": out, "sampled": sampled}

    @staticmethod
    def collect(handle: dict) -> list[EntryResult]:
        return handle["results"]


EOS = 0


def finish_check(req: Req) -> None:
    if req.sampling_params.stop_token_ids and req.output_ids[-1:] == [EOS]:
        req.finish = FinishReason.STOP
    elif len(req.output_ids) >= req.sampling_params.max_new_tokens:
        req.finish = FinishReason.LENGTH


def expected_output(prompt: list[int], n: int, eos: bool = False) -> list[int]:
    seq = list(prompt)
    for _ in range(n):
        seq.append(next_token(seq))
        if eos and seq[-1] == EOS:
            break
    return seq[len(prompt):]


class MixedCheckingExecutor(FakeExecutor):
    """Also checks each mixed batch's form: the decode rows trail, one token each, of requests not prefilled
    in the same batch, and the whole pass stays within the prefill budgets."""

    def __init__(self, cfg: SchedulerConfig):
        super().__init__({})
        self.cfg = cfg
        self.mixed_rows = self.decode_rows = self.tokens = 0

    def launch(self, batch: ScheduleBatch, prev: dict | None = None) -> dict:
        self.tokens += batch.num_tokens
        self.decode_rows += batch.decode_tokens
        if batch.mixed:
            assert not batch.decode
            pre, rows = batch.entries[:-batch.mixed], batch.entries[-batch.mixed:]
            assert pre and all(len(e.new_ids) == 1 and e.sample for e in rows)
            assert len({id(e.req) for e in batch.entries}) == len(batch.entries), "a request twice in a batch"
            assert batch.num_tokens <= self.cfg.max_prefill_tokens
            assert all(len(e.new_ids) <= self.cfg.chunked_prefill_size - batch.mixed for e in pre)
            self.mixed_rows += batch.mixed
        return super().launch(batch, prev)


def _run(seed: int, pool: int, disable_cache: bool, policy: str, overlap: bool = False, mixed: bool = False):
    rng = random.Random(seed)
    alloc = SlotAllocator(pool)
    cache = RadixCache(alloc, disabled=disable_cache)
    cls = OverlapScheduler if overlap else Scheduler
    cfg = SchedulerConfig(max_running_requests=8, chunked_prefill_size=16, max_prefill_tokens=24,
                          schedule_policy=policy, mixed_chunk=mixed)
    sched = cls(cfg, alloc, cache, MixedCheckingExecutor(cfg), finish_check)
    prefixes = [[rng.randrange(V) for _ in range(rng.randint(5, 30))] for _ in range(3)]
    reqs, aborted = [], set()
    for step in range(3000):
        aborted.update(x.rid for x in _traffic_step(sched, rng, prefixes, reqs))
        sched.step_or_unstick()
        if len(reqs) == 40 and not sched.has_work:
            break
    assert not sched.has_work, "scheduler did not drain"
    for r in reqs:
        if r.rid in aborted:
            assert r.finish is FinishReason.ABORT
            continue
        sp = r.sampling_params
        want = expected_output(r.input_ids, sp.max_new_tokens, eos=bool(sp.stop_token_ids))
        assert r.output_ids == want, r.rid
        assert r.finish is (FinishReason.STOP if want[-1:] == [EOS] and sp.stop_token_ids else FinishReason.LENGTH)
    # every slot is either free or held (unlocked) by the cache; flushing frees all
    assert cache.protected_size == 0
    assert alloc.used == cache.total_size
    assert cache.clear()
    assert alloc.available == pool
    return sched


def test_stress_tiny_pool_forces_eviction_and_retraction():
    retractions = 0
    for seed in range(6):
        retractions += _run(seed, pool=90, disable_cache=False, policy="lpm").stats["retractions"]
    assert retractions > 0, "the pool was not small enough to force retraction"


def test_stress_overlap_scheduling():
    """Step N+1 built and launched before step N is applied: same answers, same KV, nothing leaked."""
    retractions = ahead = 0
    for seed in range(6):
        sched = _run(seed, pool=90, disable_cache=False, policy="lpm", overlap=True)
        retractions += sched.stats["retractions"]
        ahead += sched.executor.ahead
    assert retractions > 0 and ahead > 500
    _run(7, pool=400, disable_cache=True, policy="fcfs", overlap=True)


@pytest.mark.parametrize("overlap", [False, True])
def test_stress_mixed_batches(overlap):
    """Prefill batches carrying the running requests' decode rows (``mixed_chunk``): same answers and KV
    contents (the fake executor checks them, FUTURE_TOKEN rows included), budgets kept, nothing leaked, and
    the stats count the decode rows as decode tokens."""
    rows = ahead = 0
    for seed in range(6):
        sched = _run(seed, pool=90, disable_cache=False, policy="lpm", overlap=overlap, mixed=True)
        ex, st = sched.executor, sched.stats
        rows += ex.mixed_rows
        ahead += ex.ahead
        assert st["mixed_passes"] > 0
        assert st["decode_tokens"] == ex.decode_rows and st["prefill_tokens"] + st["decode_tokens"] == ex.tokens
    assert rows > 200
    if overlap:
        assert ahead > 500
    _run(7, pool=400, disable_cache=True, policy="fcfs", overlap=overlap, mixed=True)


def test_mixed_batch_is_formed_and_counted():
    """A request arriving while another decodes: its prefill pass carries the running request's decode row."""
    alloc = SlotAllocator(500)
    cache = RadixCache(alloc)
    cfg = SchedulerConfig(max_prefill_tokens=64, chunked_prefill_size=64, mixed_chunk=True)
    ex = MixedCheckingExecutor(cfg)
    sched = Scheduler(cfg, alloc, cache, ex, finish_check)
    a = Req(rid="a", input_ids=list(range(1, 11)), sampling_params=SamplingParams(max_new_tokens=5))
    b = Req(rid="b", input_ids=list(range(20, 40)), sampling_params=SamplingParams(max_new_tokens=3))
    sched.add(a)
    sched.step()                      # a's prefill (nothing running: not mixed)
    sched.add(b)
    sched.step()                      # b's prefill + a's decode row
    assert sched.stats["mixed_passes"] == 1 and ex.mixed_rows == 1
    assert sched.stats["prefill_tokens"] == 10 + 20 and sched.stats["decode_tokens"] == 1
    assert len(a.output_ids) == 2 and len(b.output_ids) == 1
    while sched.has_work:
        sched.step()
    assert a.output_ids == expected_output(a.input_ids, 5) and b.output_ids == expected_output(b.input_ids, 3)
    assert sched.stats["decode_tokens"] == 4 + 2 and sched.stats["prefill_passes"] == 2
    assert cache.protected_size == 0 and cache.clear() and alloc.available == 500


def test_mixed_skipped_when_decode_rows_fill_the_budget_or_kv_is_short():
    """Decode rows that would use the whole prefill budget, or that find no KV slot: a plain prefill batch
    (never a retraction for the sake of mixing)."""
    alloc = SlotAllocator(500)
    cache = RadixCache(alloc, disabled=True)
    cfg = SchedulerConfig(max_prefill_tokens=4, chunked_prefill_size=4, mixed_chunk=True)
    sched = Scheduler(cfg, alloc, cache, MixedCheckingExecutor(cfg), finish_check)
    running = [Req(rid=f"r{i}", input_ids=[i + 1, 2], sampling_params=SamplingParams(max_new_tokens=50))
               for i in range(4)]
    for r in running:
        sched.add(r)
    sched.mixed = False
    sched.step()   # 4 x 2 tokens: 2 prefill passes of 4 tokens
    sched.step()
    assert len(sched.running) == 4
    sched.mixed = True
    sched.add(Req(rid="w", input_ids=[7, 8], sampling_params=SamplingParams(max_new_tokens=2)))
    sched.step()   # 4 decode rows would leave no budget: not mixed
    assert sched.stats["prefill_passes"] == 3
    assert sched.stats["mixed_passes"] == 0 and sched.stats["retractions"] == 0
    # a tiny pool: room for the prefill but not for the decode rows
    alloc2 = SlotAllocator(11)
    cache2 = RadixCache(alloc2, disabled=True)
    cfg2 = SchedulerConfig(max_prefill_tokens=64, chunked_prefill_size=64, mixed_chunk=True, decode_reserve_steps=0)
    s2 = Scheduler(cfg2, alloc2, cache2, MixedCheckingExecutor(cfg2), finish_check)
    s2.add(Req(rid="a", input_ids=[1, 2, 3], sampling_params=SamplingParams(max_new_tokens=2)))
    s2.add(Req(rid="b", input_ids=[4, 5, 6], sampling_params=SamplingParams(max_new_tokens=2)))
    s2.step()                                  # 6 slots used
    s2.add(Req(rid="c", input_ids=[9] * 5, sampling_params=SamplingParams(max_new_tokens=1)))
    s2.step()                                  # c takes the last 5 slots: no room for 2 decode rows
    assert s2.stats["prefill_passes"] == 2
    assert s2.stats["mixed_passes"] == 0 and s2.stats["retractions"] == 0
    while s2.has_work:
        s2.step_or_unstick()


def test_stress_without_radix_cache_and_fcfs():
    for seed in range(3):
        _run(seed, pool=90, disable_cache=True, policy="fcfs")


def test_cache_hit_skips_prefill():
    alloc = SlotAllocator(1000)
    cache = RadixCache(alloc)
    ex = FakeExecutor({})
    sched = Scheduler(SchedulerConfig(), alloc, cache, ex, finish_check)
    prompt = list(range(40))
    for i in range(2):
        sched.add(Req(rid=f"a{i}", input_ids=prompt + [i], sampling_params=SamplingParams(max_new_tokens=3)))
        while sched.has_work:
            sched.step()
    assert sched.stats["prefill_tokens"] == 41 + 1  # the second request computed only its own token


@pytest.mark.parametrize("cls", [Scheduler, OverlapScheduler])
def test_in_batch_prefix_is_computed_once(cls):
    """Requests arriving together with a shared, uncached prefix: one computes it, the rest reuse it (with
    overlap scheduling too: the twins wait for the in-flight prefill instead of launching their own)."""
    alloc = SlotAllocator(5000)
    cache = RadixCache(alloc)
    sched = cls(SchedulerConfig(max_prefill_tokens=4096, chunked_prefill_size=4096), alloc, cache,
                FakeExecutor({}), finish_check)
    prefix = list(range(1, 101))
    for i in range(8):
        sched.add(Req(rid=f"f{i}", input_ids=prefix + [i + 1, i + 2], sampling_params=SamplingParams(max_new_tokens=2)))
    while sched.has_work:
        sched.step()
    assert sched.stats["prefill_tokens"] == 102 + 7 * 2


def test_overlap_looks_ahead_of_an_in_flight_prefill():
    """A prefill in flight no longer stops the pipeline: the running requests' next decode step is launched
    before the prefill is applied (the newcomer joins the step after), and every answer stays exact."""
    alloc = SlotAllocator(500)
    cache = RadixCache(alloc)
    sched = OverlapScheduler(SchedulerConfig(), alloc, cache, FakeExecutor({}), finish_check)
    a = Req(rid="a", input_ids=[1, 2, 3], sampling_params=SamplingParams(max_new_tokens=20))
    sched.add(a)
    for _ in range(3):
        sched.step()
    assert sched.inflight[0].decode
    b = Req(rid="b", input_ids=[4, 5, 6, 7], sampling_params=SamplingParams(max_new_tokens=5))
    sched.add(b)
    sched.step()
    assert not sched.inflight[0].decode and [e.req.rid for e in sched.inflight[0].entries] == ["b"]
    sched.step()
    assert sched.inflight[0].decode and [e.req.rid for e in sched.inflight[0].entries] == ["a"]
    assert b.output_ids   # applied after the look-ahead was launched
    while sched.has_work:
        sched.step()
    assert a.output_ids == expected_output([1, 2, 3], 20) and b.output_ids == expected_output([4, 5, 6, 7], 5)
    assert alloc.used == cache.total_size and cache.protected_size == 0


@pytest.mark.parametrize("reserve", [0, 4])
def test_admission_keeps_decode_room_for_running_requests(reserve):
    """A prompt that would fill the KV pool waits while a running request needs room for its next decode steps
    (``decode_reserve_steps``); without the reserve it is admitted and the running request soon runs dry."""
    alloc = SlotAllocator(60)
    cache = RadixCache(alloc, disabled=True)
    sched = Scheduler(SchedulerConfig(decode_reserve_steps=reserve), alloc, cache, FakeExecutor({}), finish_check)
    a = Req(rid="a", input_ids=list(range(1, 11)), sampling_params=SamplingParams(max_new_tokens=30))
    sched.add(a)
    sched.step()
    sched.step()                      # a: 10 prompt slots + 1 decode slot; 49 free
    b = Req(rid="b", input_ids=list(range(11, 57)), sampling_params=SamplingParams(max_new_tokens=5))
    sched.add(b)
    sched.step()
    assert (b.kv_slots != []) == (reserve == 0)   # 46 slots fit in 49, not beside 4 reserved for a
    while sched.has_work:
        sched.step_or_unstick()
    assert a.output_ids == expected_output(list(range(1, 11)), 30)
    assert b.output_ids == expected_output(list(range(11, 57)), 5)
    assert alloc.available == 60
    assert (sched.stats["retractions"] > 0) == (reserve == 0)


def test_overlap_prefill_look_ahead_keeps_max_running_requests():
    """Requests of an in-flight prefill are in neither queue; the batch launched ahead of it must still count them
    (found by review: with look-ahead, 2 x max_running_requests ran at once)."""
    alloc = SlotAllocator(500)
    cache = RadixCache(alloc)
    sched = OverlapScheduler(SchedulerConfig(max_running_requests=2, chunked_prefill_size=64, max_prefill_tokens=64),
                             alloc, cache, FakeExecutor({}), finish_check)
    reqs = [Req(rid=f"r{i}", input_ids=[10 + i, 20 + i, 30 + i], sampling_params=SamplingParams(max_new_tokens=20))
            for i in range(6)]
    for r in reqs:
        sched.add(r)
    peak = 0
    while sched.has_work:
        sched.step()
        live = {id(r) for r in sched.running} | {id(e.req) for e in sched.inflight[0].entries if e.sample} \
            if sched.inflight else {id(r) for r in sched.running}
        peak = max(peak, len(live))
    assert peak == 2
    assert all(r.output_ids == expected_output(r.input_ids, 20) for r in reqs)


def test_overlap_abort_in_flight_is_reported_once():
    """Aborting a request whose step is in flight: abort() reports it, the next step() must not again (the
    Worker would count it twice and send two finished events)."""
    alloc = SlotAllocator(200)
    cache = RadixCache(alloc)
    sched = OverlapScheduler(SchedulerConfig(), alloc, cache, FakeExecutor({}), finish_check)
    sched.add(Req(rid="a#0", input_ids=[1, 2, 3], sampling_params=SamplingParams(max_new_tokens=50)))
    sched.add(Req(rid="b#0", input_ids=[4, 5, 6], sampling_params=SamplingParams(max_new_tokens=50)))
    for _ in range(4):
        sched.step()
    assert sched.inflight is not None
    assert [r.rid for r in sched.abort("a")] == ["a#0"]
    after = sched.step()
    assert "a#0" not in [r.rid for r in after] and "b#0" in [r.rid for r in after]
    sched.abort(None)
    assert not sched.has_work and cache.protected_size == 0 and alloc.used == cache.total_size


@pytest.mark.parametrize("seed,mixed", [(40, "on"), (55, "off")])
def test_partial_prefills_cannot_livelock_a_small_pool(seed, mixed):
    """Radix cache off, a 70-slot pool, 12-token chunks: several partially prefilled requests used to split the
    pool, get released by the unstick, and split it the same way again, forever (found by review: seed 40 with
    mixed batches, seed 55 without). The unstick now keeps the oldest one's progress, so every request ends."""
    rng = random.Random(seed)
    alloc = SlotAllocator(70)
    cache = RadixCache(alloc, disabled=True)
    cfg = SchedulerConfig(max_running_requests=20, chunked_prefill_size=12, max_prefill_tokens=30,
                          schedule_policy="lpm" if seed % 2 else "fcfs", mixed_chunk=mixed)
    sched = Scheduler(cfg, alloc, cache, MixedCheckingExecutor(cfg), finish_check)
    prefixes = [[rng.randrange(V) for _ in range(rng.randint(5, 30))] for _ in range(3)]
    reqs: list[Req] = []
    for _ in range(3_000):   # arrivals and random aborts
        _traffic_step(sched, rng, prefixes, reqs)
        sched.step_or_unstick()
        if len(reqs) == 40 and not sched.has_work:
            break
    for _ in range(20_000):  # then no more aborts to break a cycle: the queue must drain on its own
        if not sched.has_work:
            break
        sched.step_or_unstick()
    assert len(reqs) == 40 and not sched.has_work
    assert all(r.finished for r in reqs) and alloc.available == 70


def _traffic_step(sched, rng: random.Random, prefixes: list[list[int]], reqs: list[Req]) -> list[Req]:
    """One step of the stress traffic: maybe a new request (up to 40; half stop at EOS, which finishes them
    while a step may be ahead), maybe an abort of a random one; returns what the abort reported."""
    if len(reqs) < 40 and rng.random() < 0.3:
        prompt = rng.choice(prefixes) + [rng.randrange(V) for _ in range(rng.randint(1, 20))]
        eos = [EOS] if rng.random() < 0.5 else []
        r = Req(rid=f"r{len(reqs)}", input_ids=prompt,
                sampling_params=SamplingParams(max_new_tokens=rng.randint(1, 25), stop_token_ids=eos))
        reqs.append(r)
        sched.add(r)
    if reqs and rng.random() < 0.03:
        victim = rng.choice(reqs)
        if not victim.finished:
            return sched.abort(victim.rid)
    return []


def test_running_set_keeps_order_and_identity():
    """The running requests: insertion order after removals, membership by identity (two requests with equal
    fields are two requests), the last one for retraction."""
    reqs = [Req(f"r{i % 2}", [1, 2], SamplingParams()) for i in range(5)]
    rs = RunningSet()
    for r in reqs:
        rs.append(r)
    rs.remove(reqs[1])
    rs.append(reqs[1])
    assert list(rs) == [reqs[0], reqs[2], reqs[3], reqs[4], reqs[1]] and len(rs) == 5
    assert rs.last() is reqs[1] and reqs[3] in rs
    rs.remove(reqs[3])
    assert reqs[3] not in rs and reqs[3] == reqs[3] and reqs[2] != Req("r0", [1, 2], SamplingParams())
    assert not RunningSet() and rs
