"""Same-pass prefix sharing (Scheduler._share_now), cached warms (_finish_cached_warm) and the request-to-token
table's device copies (written in review, session 6): randomized stress with no model (both schedulers, tiny pools, chunked
prompts sharing prefixes, n>1 twins, pinned warms, prompt logprobs, aborts mid-flight, mixed batches) where
after every step each KV slot is owned exactly once (free list, radix tree, a request's private tail or an
in-flight entry) and every tree slot holds the K/V of its (position, token); plus an Engine check on the CPU."""
from __future__ import annotations

import random

import pytest
import torch
from test_scheduler import EOS, FakeExecutor, V, expected_output, finish_check, next_token

from runtime.mem.allocator import SlotAllocator
from runtime.mem.radix_cache import RadixCache
from runtime.mem.req_to_token import ReqToTokenTable, Writes
from runtime.sampling_params import SamplingParams
from runtime.scheduler.batch import FUTURE_TOKEN, ScheduleBatch
from runtime.scheduler.overlap import OverlapScheduler
from runtime.scheduler.request import FinishReason, Req
from runtime.scheduler.scheduler import Scheduler, SchedulerConfig


def lp_value(seq: list[int], target: int) -> float:
    """The fake 'model's' log-probability of ``target`` after ``seq``."""
    return float((next_token(seq) * 97 + target * 13 + len(seq)) % 1009)


def expected_input_logprobs(req: Req) -> list:
    ids, start = req.input_ids, req.logprob_start_len
    out = [(None, ids[0])] if start == 0 else []
    return out + [(lp_value(ids[:p], ids[p]), ids[p]) for p in range(max(start, 1), len(ids))]


class TableExecutor(FakeExecutor):
    """FakeExecutor that also returns prompt logprobs and keeps a real ReqToTokenTable (CPU tensors) the way
    ModelExecutor._build does (plan, segment writes + device copies, put the new slots), then checks that
    each entry's row holds exactly the slots attention must read."""

    def __init__(self) -> None:
        super().__init__({})
        self.table = ReqToTokenTable(4, 8, "cpu")
        self.copies = 0
        self.same_pass_reads = 0   # entries whose prefix holds slots another entry of the same pass writes

    def launch(self, batch: ScheduleBatch, prev: dict | None = None) -> dict:
        entries = batch.entries
        want = []   # the slots each entry's attention reads: prefix + its new ones
        for e in entries:
            slots = list(e.req.kv_slots)
            if e.new_ids == [FUTURE_TOKEN]:
                slots += prev["sampled"][id(e.req)][0].new_slots
            assert len(slots) == e.prefix_len, (e.req.rid, len(slots), e.prefix_len)
            want.append(slots + e.new_slots)
        written = {s: id(e) for e in entries for s in e.new_slots}
        self.same_pass_reads += sum(any(written.get(s, id(e)) != id(e) for s in slots)
                                    for e, slots in zip(entries, want))
        w = Writes()
        rows = self.table.plan([e.req for e in entries], [e.prefix_len for e in entries],
                               [len(e.new_ids) for e in entries], w)
        dst = getattr(w, "dst", [])
        self.copies += len(dst)
        t = lambda x: torch.tensor(x, dtype=torch.int32)
        if dst:
            self.table.write(t(w.rows), t(w.lens), t(w.shifts), t(w.vals), (t(dst), t(w.src), t(w.n), sum(w.n)))
        elif w.rows:
            self.table.write(t(w.rows), t(w.lens), t(w.shifts), t(w.vals))
        for e, row in zip(entries, rows):
            for j, s in enumerate(e.new_slots):
                self.table.table[row, e.prefix_len + j] = s
        for e, row, slots in zip(entries, rows, want):
            got = self.table.table[row, :len(slots)].tolist()
            assert got == slots, (e.req.rid, got, slots)
        h = super().launch(batch, prev)
        for e, res in zip(entries, h["results"]):
            if e.lp_rows:
                full = e.req.fill_ids[:e.prefix_len] + e.new_ids
                res.input_logprobs = [lp_value(full[:e.prefix_len + r + 1], tgt)
                                      for r, tgt in zip(e.lp_rows, e.lp_targets)]
                res.input_tops = [None] * len(e.lp_rows)
        return h


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def check_ownership(sched: Scheduler, ex: TableExecutor) -> None:
    """Every KV slot is owned exactly once; every tree slot holds its (position, token); locks are consistent."""
    alloc, cache = sched.allocator, sched.cache
    owner: dict[int, str] = {}

    def own(slots, who):
        for s in slots:
            assert s not in owner, f"slot {s} owned by {owner[s]} and {who}"
            owner[s] = who

    own(alloc._free, "free")
    stack = [(cache.root, 0, [])]
    while stack:
        node, depth, toks = stack.pop()
        own(node.value, "tree")
        for i, (tok, s) in enumerate(zip(node.key, node.value)):
            assert ex.kv.get(s) == (depth + i, tok), ("tree slot holds the wrong K/V", s, depth + i, tok, ex.kv.get(s))
        for ch in node.children.values():
            assert ch.parent is node
            stack.append((ch, depth + len(node.key), toks))
    inflight = getattr(sched, "inflight", None)
    pending = {}
    if inflight is not None:
        for e in inflight[0].entries:
            if not getattr(e, "shared", False):
                own(e.new_slots, f"inflight {e.req.rid}")
            pending[id(e.req)] = e
    live = {id(r): r for r in (*sched.waiting, *sched.running, *(e.req for e in (inflight[0].entries if inflight else ())))}
    for r in live.values():
        if r.finished:
            assert not r.kv_slots and r.last_node is None, r.rid
            continue
        assert r.cached_len <= len(r.kv_slots) or id(r) in pending, (r.rid, r.cached_len, len(r.kv_slots))
        own(r.kv_slots[r.cached_len:], f"req {r.rid}")
    missing = set(range(alloc.size)) - set(owner)
    assert not missing, f"leaked slots {sorted(missing)[:10]}"
    # every lock is a live request's (its last_node) or a pin's, one pin per warm at most
    owners = [p.owner for p in cache.pins]
    assert len(owners) == len(set(owners)), f"a warm pinned twice: {owners}"
    want: dict[int, int] = {}
    for node in [r.last_node for r in live.values() if r.last_node is not None] + [p.node for p in cache.pins]:
        while node is not None and node is not cache.root:
            want[id(node)] = want.get(id(node), 0) + 1
            node = node.parent
    stack = list(cache.root.children.values())
    while stack:
        node = stack.pop()
        assert node.lock_ref == want.get(id(node), 0), ("lock count", node.key[:4], node.lock_ref, want.get(id(node)))
        stack.extend(node.children.values())


def make(cls, pool: int, chunk: int = 16, budget: int = 24, mixed: bool = False, disabled: bool = False,
         running: int = 8, clock: Clock | None = None):
    alloc = SlotAllocator(pool)
    cache = RadixCache(alloc, disabled=disabled)
    cfg = SchedulerConfig(max_running_requests=running, chunked_prefill_size=chunk, max_prefill_tokens=budget,
                          mixed_chunk=mixed)
    return cls(cfg, alloc, cache, TableExecutor(), finish_check, clock or Clock())


def restarted_prefixes(got: list, want: list) -> bool:
    """``got`` is ``want`` after some partial copies of it (``want[:j1] + want[:j2] + ... + want``): prompt
    logprobs planned again after a partially prefilled request was released (see
    test_prompt_logprobs_not_duplicated_when_a_chunked_request_is_released)."""
    if len(got) < len(want) or got[len(got) - len(want):] != want:
        return False
    idx = 0
    for x in got[:len(got) - len(want)]:
        if idx < len(want) and x == want[idx]:
            idx += 1
        elif x == want[0]:
            idx = 1
        else:
            return False
    return True


def check_answers(reqs: list[Req], aborted: set[str], strict_lp: bool = True) -> None:
    for r in reqs:
        assert r.finished, r.rid
        if r.finish is FinishReason.ABORT:
            assert r.rid.split("#")[0] in aborted, (r.rid, r.error)
            continue
        sp = r.sampling_params
        want = expected_output(r.input_ids, sp.max_new_tokens, eos=bool(sp.stop_token_ids))
        assert r.output_ids == want, r.rid
        if r.needs_input_logprobs:
            want = expected_input_logprobs(r)
            if strict_lp:
                assert r.input_token_logprobs == want, r.rid
            else:
                assert restarted_prefixes(r.input_token_logprobs, want), r.rid


def assert_all_free(sched: Scheduler) -> None:
    cache, alloc = sched.cache, sched.allocator
    assert not sched.has_work
    cache.unpin()
    assert cache.protected_size == 0, "a lock leaked"
    assert alloc.used == cache.total_size
    assert cache.clear() and alloc.available == alloc.size


def _stress(seed: int, cls, pool: int, mixed: bool, disabled: bool = False, n_reqs: int = 45,
            logprobs: bool = True, head_lens: tuple[int, int] = (20, 60), p_arrive: float = 0.35) -> Scheduler:
    rng = random.Random(seed)
    clock = Clock()
    sched = make(cls, pool, mixed=mixed, disabled=disabled, clock=clock)
    ex = sched.executor
    heads = [[rng.randrange(1, V) for _ in range(rng.randint(*head_lens))] for _ in range(3)]   # chunked (16)
    reqs: list[Req] = []
    aborted: set[str] = set()
    k = 0
    for _ in range(4000):
        clock.now += 0.01
        while k < n_reqs and rng.random() < p_arrive:
            k += 1
            head = rng.choice(heads)
            kind = rng.random()
            if kind < 0.2:   # a warm of the head (maybe with its branches right behind it, same step)
                w = Req(rid=f"w{k}#0", input_ids=list(head[:rng.randint(len(head) - 3, len(head))]),
                        sampling_params=SamplingParams(max_new_tokens=0, pin_uses=rng.randint(1, 4),
                                                       pin_ttl_s=rng.uniform(0.2, 3)))
                reqs.append(w)
                sched.add(w)
                for j in range(rng.randint(0, 3)):
                    b = Req(rid=f"w{k}b{j}#0", input_ids=w.input_ids + [rng.randrange(1, V)
                                                                        for _ in range(rng.randint(1, 6))],
                            sampling_params=SamplingParams(max_new_tokens=rng.randint(1, 6)))
                    reqs.append(b)
                    sched.add(b)
            else:
                prompt = head[:rng.randint(1, len(head))] + [rng.randrange(1, V) for _ in range(rng.randint(0, 20))]
                n = rng.choice([1, 1, 1, 2, 3, 4])   # n>1: identical twins
                lp = logprobs and rng.random() < 0.3
                start = rng.randint(0, len(prompt) - 1) if lp else -1
                eos = [EOS] if rng.random() < 0.3 else []
                mx = rng.choice([0, rng.randint(1, 12)]) if lp else rng.randint(1, 12)
                for i in range(n):
                    r = Req(rid=f"r{k}#{i}", input_ids=list(prompt), return_logprob=lp, logprob_start_len=start,
                            sampling_params=SamplingParams(max_new_tokens=mx, stop_token_ids=eos))
                    reqs.append(r)
                    sched.add(r)
        if reqs and rng.random() < 0.04:
            victim = rng.choice(reqs).rid.split("#")[0]
            if sched.abort(victim):
                aborted.add(victim)
        sched.step_or_unstick()
        check_ownership(sched, ex)
        if k == n_reqs and not sched.has_work:
            break
    assert not sched.has_work, "did not drain"
    check_answers(reqs, aborted)
    assert_all_free(sched)
    return sched


@pytest.mark.parametrize("cls", [Scheduler, OverlapScheduler])
@pytest.mark.parametrize("mixed", [False, True])
def test_stress_same_pass_sharing_small_pool(cls, mixed):
    stats = {"retractions": 0, "cached_warms": 0}
    copies = same_pass = 0
    for seed in range(5):
        s = _stress(seed, cls, pool=160, mixed=mixed)
        for key in stats:
            stats[key] += s.stats[key]
        copies += s.executor.copies
        same_pass += s.executor.same_pass_reads
    assert copies > 0 and stats["cached_warms"] > 0 and same_pass > 20, (copies, stats, same_pass)
    if not mixed:
        assert stats["retractions"] > 0, stats


@pytest.mark.parametrize("cls", [Scheduler, OverlapScheduler])
def test_stress_large_pool_and_radix_off(cls):
    _stress(11, cls, pool=2000, mixed=True)
    _stress(12, cls, pool=300, mixed=False, disabled=True)


def test_prompt_logprobs_not_duplicated_when_a_chunked_request_is_released():
    """PRE-EXISTING (also at 677f5ba): a chunked prompt-logprob request whose next chunk finds no room is released
    by ``_admit`` (its chunks go to the tree, it holds nothing of its own) and starts over; its prompt logprobs are
    planned again from ``logprob_start_len`` (the match is capped there) and appended to the ones it already has."""
    sched = make(Scheduler, pool=48, chunk=16, budget=16)
    c = Req(rid="c", input_ids=list(range(1, 21)), sampling_params=SamplingParams(max_new_tokens=10))
    sched.add(c)
    sched.step()                                  # c runs: 20+ slots locked
    a = Req(rid="a", input_ids=[(7 * i) % 40 + 1 for i in range(40)], return_logprob=True, logprob_start_len=0,
            sampling_params=SamplingParams(max_new_tokens=0))
    sched.add(a)
    while sched.has_work:
        sched.step_or_unstick()
    assert c.output_ids == expected_output(c.input_ids, 10)
    assert a.input_token_logprobs == expected_input_logprobs(a)   # got 155 entries for a 40-token prompt
    assert_all_free(sched)


def test_cached_warm_keeps_its_prompt_logprobs():
    """A pinned max_new_tokens=0 request that also asks for prompt logprobs (score a prompt and keep it for the
    next request: ``pin_uses=1, return_logprob, logprob_start_len``) must still compute them: the cached-warm
    shortcut (Scheduler._finish_cached_warm) finished it with none."""
    sched = make(Scheduler, pool=400, chunk=64, budget=64)
    long = [(5 * i) % 47 + 1 for i in range(40)]
    first = Req(rid="first", input_ids=long, sampling_params=SamplingParams(max_new_tokens=1))
    sched.add(first)
    while sched.has_work:
        sched.step()
    w = Req(rid="w", input_ids=list(long), return_logprob=True, logprob_start_len=35,
            sampling_params=SamplingParams(max_new_tokens=0, pin_uses=1))
    sched.add(w)
    while sched.has_work:
        sched.step()
    assert w.finish is FinishReason.LENGTH
    assert w.input_token_logprobs == expected_input_logprobs(w)   # got []
    assert_all_free(sched)


def test_warm_for_one_request_still_prefills_a_mostly_uncached_prefix():
    """``Engine.warm(prefix, expect=1)`` over a long document after a cached 40-token system prompt: the cached-warm
    shortcut is meant for a prefix 'cached but for a few tokens', but with one use its test
    (uncached x (uses - 1) < 8) always holds, so the 600 uncached tokens were never prefilled (at 677f5ba the
    request after the warm found 640 of its tokens cached; now 40)."""
    sched = make(Scheduler, pool=2000, chunk=256, budget=256)
    system = [(5 * i) % 47 + 1 for i in range(40)]
    sched.add(Req(rid="first", input_ids=system + [3], sampling_params=SamplingParams(max_new_tokens=1)))
    while sched.has_work:
        sched.step()
    doc = [(11 * i) % 43 + 2 for i in range(600)]
    w = Req(rid="w", input_ids=system + doc, sampling_params=SamplingParams(max_new_tokens=0, pin_uses=1))
    sched.add(w)
    while sched.has_work:
        sched.step()
    q = Req(rid="q", input_ids=system + doc + [9, 9], sampling_params=SamplingParams(max_new_tokens=1))
    sched.add(q)
    while sched.has_work:
        sched.step()
    assert q.output_ids == expected_output(q.input_ids, 1)
    assert q.cached_tokens == len(system) + len(doc)
    assert_all_free(sched)


def test_engine_same_pass_sharing_matches_radix_off(tmp_path):
    """The CPU torch backend on a tiny random Llama, overlap + mixed batches, chunked prefill (48), a small pool:
    fork branches behind a chunked head, n-style identical twins, prompt logprobs from several starts, a warm sent
    with its branches (wait=False) and a mostly cached warm: greedy tokens and prompt logprobs match an Engine
    without the radix cache, and the pool is empty after a flush."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gpu"))
    from gpu_helpers import assert_greedy, write_tiny_config

    from runtime.engine import Engine

    rng = random.Random(5)
    heads = [[rng.randrange(1, 512) for _ in range(n)] for n in (110, 60)]
    prompts = []
    for head in heads:
        prompts += [head + [rng.randrange(1, 512) for _ in range(rng.randint(1, 10))] for _ in range(4)]
    prompts += [list(prompts[0])] * 2 + [list(prompts[5])] * 2            # twins (n > 1)
    prompts += [heads[0][:rng.randint(40, 100)] for _ in range(2)]        # inside a head being computed
    starts = [rng.choice([None, 0, 30, len(p) - 2, len(p) - 1]) for p in prompts]
    params = {"temperature": 0, "max_new_tokens": 5, "ignore_eos": True}
    kw = {"model_path": write_tiny_config(tmp_path), "load_format": "dummy", "device": "cpu", "dtype": "float32",
          "skip_tokenizer_init": True, "max_total_tokens": 900, "chunked_prefill_size": 48,
          "max_prefill_tokens": 96}

    def run(eng):
        outs = eng.generate(input_ids=prompts, sampling_params=params, return_logprob=True, logprob_start_len=starts)
        w = eng.warm(heads[1] + [7, 8, 9], expect=2, wait=False)
        br = eng.generate(input_ids=[heads[1] + [7, 8, 9, 10], heads[1] + [7, 8, 9, 11, 12]], sampling_params=params)
        cw = eng.warm(prompts[0] + outs[0]["output_ids"][:3], expect=2)     # cached but for its last tokens
        br2 = eng.generate(input_ids=[prompts[0] + outs[0]["output_ids"][:3] + [t] for t in (5, 6)],
                           sampling_params=params)
        return outs, w, br, cw, br2

    with Engine(**kw, overlap_schedule="on", mixed_chunk="on") as eng:
        outs, _, br, cw, br2 = run(eng)
        m = eng.metrics()
        assert eng.flush_cache() and eng.metrics()["kv_used_tokens"] == 0
    assert m["cached_tokens_total"] > 600 and m["cached_warms_total"] >= 1, m
    assert cw["cached_tokens"] == len(prompts[0]) + 2   # the mostly cached warm took no pass
    with Engine(**kw, disable_radix_cache=True, overlap_schedule="off") as ref:
        r_outs, _, r_br, _, r_br2 = run(ref)
        assert_greedy(ref, prompts, outs)
    for o, r, s in zip(outs, r_outs, starts):
        got, want = o["meta_info"]["input_token_logprobs"], r["meta_info"]["input_token_logprobs"]
        assert [t for _, t in got] == [t for _, t in want], s
        for (a, _), (b, _) in zip(got, want):
            assert (a is None) == (b is None) and (a is None or abs(a - b) <= 1e-3 * max(1.0, abs(b))), (s, a, b)
    for a, b in zip(br + br2, r_br + r_br2):
        assert a["output_ids"] == b["output_ids"]


@pytest.mark.parametrize("victim", ["a", "b"])
def test_overlap_abort_while_a_shared_chunk_is_in_flight(victim):
    """A's first chunk enters the tree as it is launched; its twin b attends to it from the next batch while that
    chunk may still be in flight. Aborting either one mid-flight: the other's answer stays right, no slot is freed
    twice or leaked, no lock is left behind."""
    sched = make(OverlapScheduler, pool=300, chunk=16, budget=32)
    ex = sched.executor
    head = [(3 * i) % 47 + 1 for i in range(40)]
    a = Req(rid="a", input_ids=head + [5], sampling_params=SamplingParams(max_new_tokens=6))
    sched.add(a)
    sched.step()                                  # a's chunk 1 launched: in the tree already
    assert sched.inflight[0].entries[0].shared and a.cached_len == 16 and len(a.kv_slots) == 0
    b = Req(rid="b", input_ids=head + [6, 7], sampling_params=SamplingParams(max_new_tokens=6))
    sched.add(b)
    sched.step()                                  # b joins behind a's chunk
    check_ownership(sched, ex)
    sched.step()
    check_ownership(sched, ex)
    assert sched.abort(victim)
    check_ownership(sched, ex)
    while sched.has_work:
        sched.step()
        check_ownership(sched, ex)
    live = b if victim == "a" else a
    assert live.output_ids == expected_output(live.input_ids, 6)
    assert_all_free(sched)
