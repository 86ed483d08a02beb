"""Pinned warm-ups (``Engine.warm(prefix, expect=n)``) in the scheduler, with no model: a hoisted prefix stays
cached until its branches arrive, and every pin is released (after n admissions, on abort, flush, timeout,
or under memory pressure) so that all KV is free at the end."""
from __future__ import annotations

import random

import pytest
from test_scheduler import FakeExecutor, expected_output, finish_check

from runtime.mem.allocator import SlotAllocator
from runtime.mem.radix_cache import RadixCache
from runtime.sampling_params import SamplingParams
from runtime.scheduler.overlap import OverlapScheduler
from runtime.scheduler.request import FinishReason, Req
from runtime.scheduler.scheduler import Scheduler, SchedulerConfig

PREFIX = list(range(1, 31))          # the hoisted prefix (30 tokens)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(pool: int, clock: Clock | None = None) -> tuple[Scheduler, RadixCache, SlotAllocator]:
    alloc = SlotAllocator(pool)
    cache = RadixCache(alloc)
    sched = Scheduler(SchedulerConfig(max_running_requests=8, chunked_prefill_size=64, max_prefill_tokens=64),
                      alloc, cache, FakeExecutor({}), finish_check, clock or Clock())
    return sched, cache, alloc


def run(sched: Scheduler, *reqs: Req) -> None:
    for r in reqs:
        sched.add(r)
    while sched.has_work:
        sched.step_or_unstick()


def req(rid: str, ids: list[int], max_new: int = 2, **pin) -> Req:
    return Req(rid=rid, input_ids=ids, sampling_params=SamplingParams(max_new_tokens=max_new, **pin))


def warm(rid: str, uses: int, ttl: float = 30.0) -> Req:
    return req(rid, PREFIX, 0, pin_uses=uses, pin_ttl_s=ttl)


def assert_all_free(sched: Scheduler, cache: RadixCache, alloc: SlotAllocator) -> None:
    assert not sched.has_work and not cache.pins and cache.protected_size == 0
    assert cache.clear() and alloc.available == alloc.size


def hoisted_fork(uses: int) -> tuple[int, Scheduler]:
    """Warm the prefix, then other traffic fills a 64-token pool before two branches arrive."""
    sched, cache, alloc = make(64)
    run(sched, warm("w", uses))
    run(sched, req("other", [40 + i for i in range(20)], 1))   # cached after the prefix: LRU evicts the prefix first
    run(sched, req("big", [80 + i for i in range(24)], 1))     # needs 10 slots more than are free
    run(sched, req("b1", PREFIX + [101, 102]), req("b2", PREFIX + [103, 104]))
    assert_all_free(sched, cache, alloc)
    return sched.stats["prefill_tokens"], sched


def test_pinned_prefix_survives_eviction_until_the_branches_arrive():
    unpinned, _ = hoisted_fork(0)
    pinned, _ = hoisted_fork(2)
    assert pinned == 30 + 20 + 24 + 2 + 2                     # each branch computes only its own 2 tokens
    assert unpinned >= 30 + 20 + 24 + 32 + 2                  # the prefix was evicted and computed again


def test_pin_released_after_n_admissions():
    sched, cache, alloc = make(200)
    run(sched, warm("w", 3))
    assert len(cache.pins) == 1 and cache.protected_size == 30
    run(sched, req("b1", PREFIX + [101]), req("b2", PREFIX + [102]))
    assert cache.pins[0].uses == 1 and cache.protected_size == 30
    run(sched, req("x", [7, 8, 9]))                           # does not extend the prefix: no use
    assert cache.pins[0].uses == 1
    run(sched, req("b3", PREFIX + [103]))
    assert_all_free(sched, cache, alloc)


def test_a_request_uses_every_pin_it_extends():
    sched, cache, alloc = make(200)
    run(sched, warm("outer", 2))
    run(sched, req("inner", PREFIX + [50, 51], 0, pin_uses=2))   # a warm extending the prefix is a use too
    assert [p.uses for p in cache.pins] == [1, 2]
    run(sched, req("i1", PREFIX + [50, 51, 1]))
    assert [p.owner for p in cache.pins] == ["inner"] and cache.pins[0].uses == 1
    run(sched, req("o2", PREFIX + [60]))                        # extends the outer prefix only
    assert cache.pins[0].uses == 1
    run(sched, req("i2", PREFIX + [50, 51, 2]))
    assert_all_free(sched, cache, alloc)


def test_pin_released_on_abort_flush_and_timeout():
    clock = Clock()
    sched, cache, alloc = make(200, clock)
    run(sched, warm("w1#0", 5))
    assert [x.rid for x in sched.abort("w1")] == [] and not cache.pins   # the warm finished; its pin goes
    run(sched, warm("w2", 5))
    assert cache.clear() and not cache.pins and alloc.available == 200    # flush_cache drops pins
    run(sched, warm("w3", 5, ttl=2.0))
    clock.now = 1.0
    sched.step()
    assert cache.pins
    clock.now = 2.5
    sched.step()
    assert_all_free(sched, cache, alloc)


def test_pins_yield_instead_of_retracting_or_blocking():
    sched, cache, alloc = make(48)
    run(sched, warm("w", 9))
    # two decodes that need 18 + 18 slots: with the 30 pinned slots kept, one would have to be retracted
    run(sched, req("a", [200 + i for i in range(8)], 10), req("b", [300 + i for i in range(8)], 10))
    assert sched.stats["retractions"] == 0
    run(sched, warm("w2", 9))
    run(sched, req("c", [400 + i for i in range(40)], 1))   # cannot fit beside the pin while nothing else runs
    assert_all_free(sched, cache, alloc)


def test_stress_with_pins_every_answer_right_and_all_kv_free():
    for seed in range(4):
        rng = random.Random(seed)
        clock = Clock()
        sched, cache, alloc = make(90, clock)
        sched.cfg = SchedulerConfig(max_running_requests=6, chunked_prefill_size=16, max_prefill_tokens=24)
        prefixes = [[rng.randrange(50) for _ in range(rng.randint(5, 30))] for _ in range(3)]
        reqs: list[Req] = []
        pinned = 0
        for step in range(2500):
            clock.now += 0.01
            if len(reqs) < 50 and rng.random() < 0.3:
                pre = rng.choice(prefixes)
                if rng.random() < 0.25:
                    r = req(f"w{len(reqs)}", pre, 0, pin_uses=rng.randint(1, 4), pin_ttl_s=rng.uniform(0.5, 5))
                else:
                    r = req(f"r{len(reqs)}", pre + [rng.randrange(50) for _ in range(rng.randint(1, 20))],
                            rng.randint(1, 20))
                reqs.append(r)
                sched.add(r)
            if reqs and rng.random() < 0.03:
                sched.abort(rng.choice(reqs).rid)
            sched.step_or_unstick()
            pinned = max(pinned, len(cache.pins))
            if len(reqs) == 50 and not sched.has_work:
                break
        assert pinned >= 2
        clock.now += 10
        sched.step()
        for r in reqs:
            if r.finish is FinishReason.LENGTH:
                assert r.output_ids == expected_output(r.input_ids, r.sampling_params.max_new_tokens), r.rid
        assert_all_free(sched, cache, alloc)


@pytest.mark.parametrize("overlap", [False, True])
def test_requests_sent_right_after_a_warm_share_its_pass(overlap):
    """``Engine.warm(wait=False)``: the branches arrive in the same queue as the warm. The warm's tokens go into
    the radix tree as its pass is scheduled, so the branches join that pass and attend to its K/V: the prefix is
    computed once, they count towards its pin (made at scheduling too), and the pin is gone once both were
    admitted — one pass, where they used to wait for the warm's."""
    alloc = SlotAllocator(200)
    cache = RadixCache(alloc)
    cls = OverlapScheduler if overlap else Scheduler
    sched = cls(SchedulerConfig(max_running_requests=8, chunked_prefill_size=64, max_prefill_tokens=64),
                alloc, cache, FakeExecutor({}), finish_check)
    w, a, b = warm("w", 2), req("a", PREFIX + [90, 91]), req("b", PREFIX + [92])
    for r in (w, a, b):
        sched.add(r)
    sched.step()
    assert a.cached_tokens == b.cached_tokens == len(PREFIX) and a.forward_passes + b.forward_passes <= 2
    assert not cache.pins                        # both counted in the warm's own pass
    while sched.has_work:
        sched.step()
    assert a.cached_tokens == b.cached_tokens == len(PREFIX)
    assert sched.stats["prefill_tokens"] == len(PREFIX) + 2 + 1
    assert a.output_ids == expected_output(a.input_ids, 2) and b.output_ids == expected_output(b.input_ids, 2)
    assert_all_free(sched, cache, alloc)


def test_a_warm_of_a_cached_prefix_counts_the_requests_sent_with_it():
    """The warm's prefix is cached already and the extension matches more of the cache, so LPM would admit the
    extension first, before the pin exists: the pin would then wait for a request that never comes."""
    sched, cache, alloc = make(200)
    run(sched, req("first", PREFIX + [90], 1))
    w, a = warm("w", 1), req("a", PREFIX + [90, 91])
    for r in (w, a):
        sched.add(r)
    while sched.has_work:
        sched.step()
    assert a.output_ids == expected_output(a.input_ids, 2)
    assert_all_free(sched, cache, alloc)


@pytest.mark.parametrize("cls", [Scheduler, OverlapScheduler])
def test_warms_of_one_prefix_neither_serialize_nor_starve_their_requests(cls):
    """Concurrent ``Engine.score`` calls over one prompt: a warm of the prefix, then its two continuations, again
    and again (found by review: identical warms went one per step, and a steady stream of them held every
    continuation back until the stream stopped). Only warms sent *before* a request hold it back."""
    alloc = SlotAllocator(4000)
    cache = RadixCache(alloc)
    sched = cls(SchedulerConfig(max_running_requests=64, chunked_prefill_size=512, max_prefill_tokens=512),
                alloc, cache, FakeExecutor({}), finish_check)
    exts, first = [], None
    for step in range(40):
        if step < 30:   # a warm and its two extensions arrive at every step
            sched.add(warm(f"w{step}", 2))
            for j in range(2):
                e = req(f"e{step}.{j}", PREFIX + [41 + step % 9, 42 + j], 1)
                exts.append(e)
                sched.add(e)
        sched.step_or_unstick()
        if first is None and any(e.kv_slots or e.finished for e in exts):
            first = step
    while sched.has_work:
        sched.step_or_unstick()
    assert first is not None and first <= 2
    assert all(e.output_ids == expected_output(e.input_ids, 1) for e in exts)
    assert_all_free(sched, cache, alloc)


@pytest.mark.parametrize("cls", [Scheduler, OverlapScheduler])
def test_a_warm_of_a_mostly_cached_prefix_takes_no_pass(cls):
    """A fork of a stream that just decoded warms a prefix cached but for its last token(s): a pass for them on
    its branches' critical path would save each branch a token. The warm finishes at once, pinning the cached
    part; the branches compute the rest themselves. Only while the tokens saved stay few (uncached x (uses - 1)
    below 8): a warm for nine branches computes its token."""
    alloc = SlotAllocator(400)
    cache = RadixCache(alloc)
    sched = cls(SchedulerConfig(max_running_requests=16, chunked_prefill_size=128, max_prefill_tokens=128),
                alloc, cache, FakeExecutor({}), finish_check)
    long = list(range(1, 61))
    run(sched, req("first", long, 1))                     # the stream's 60 tokens are cached
    passes = sched.stats["forward_passes"]
    w = warm("w", 2)
    w.input_ids = long + [200]                            # 1 uncached token x 1 saved use
    run(sched, w)
    assert w.finish is FinishReason.LENGTH and w.cached_tokens == 60
    assert sched.stats["forward_passes"] == passes and sched.stats["cached_warms"] == 1
    assert len(cache.pins) == 1 and cache.pins[0].tokens == long and cache.protected_size == 60
    a, b = req("a", long + [200, 201]), req("b", long + [200, 202])
    run(sched, a, b)
    assert not cache.pins                                 # both branches were admitted: the pin is gone
    assert a.cached_tokens == 60 and b.cached_tokens == 61   # b shares a's token 200, computed in their pass
    assert a.output_ids == expected_output(a.input_ids, 2) and b.output_ids == expected_output(b.input_ids, 2)

    w9 = warm("w9", 9)
    w9.input_ids = long + [300]                           # 1 uncached token x 8 saved uses: worth a pass
    passes = sched.stats["forward_passes"]
    run(sched, w9)
    assert sched.stats["forward_passes"] == passes + 1 and sched.stats["cached_warms"] == 1
    sched.cache.unpin()
    assert_all_free(sched, cache, alloc)
