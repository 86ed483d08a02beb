"""The device request-to-token table mirrors each request's host slot list through extends, replacements,
finishes, row reuse and growth; ``gather`` equals the host-built CSR ``kv_indices``."""
from __future__ import annotations

import random

import torch

from runtime.mem.req_to_token import ReqToTokenTable, Writes
from runtime.sampling_params import SamplingParams
from runtime.scheduler.request import FinishReason, Req


def _step(table: ReqToTokenTable, batch: list[Req], new: list[list[int]]) -> None:
    """What the executor does for one pass: plan, upload, scatter the new slots, gather, check."""
    prefix = [len(r.kv_slots) for r in batch]
    writes = Writes()
    rows = table.plan(batch, prefix, [len(n) for n in new], writes)
    t = table.table
    if writes:
        i32 = lambda x: torch.tensor(x, dtype=torch.int32)
        table.write(i32(writes.rows), i32(writes.lens), i32(writes.shifts), i32(writes.vals),
                    (i32(writes.dst), i32(writes.src), i32(writes.n), sum(writes.n)))
    for row, p, slots in zip(rows, prefix, new):
        t[row, p:p + len(slots)] = torch.tensor(slots, dtype=torch.int32)
    seq = [p + len(n) for p, n in zip(prefix, new)]
    indptr = torch.tensor([0] + seq).cumsum(0).to(torch.int32)
    got = table.gather(torch.tensor(rows, dtype=torch.int32), torch.tensor(seq, dtype=torch.int32), indptr,
                       sum(seq))
    want = [s for r, n in zip(batch, new) for s in r.kv_slots + n]
    assert got.tolist() == want
    assert len(set(rows)) == len(rows)
    for r, n in zip(batch, new):
        r.kv_slots.extend(n)   # the scheduler's _apply
    return writes


def test_table_follows_host_lists_through_random_histories():
    rng = random.Random(0)
    table = ReqToTokenTable(rows=4, width=8, device="cpu")   # tiny: forces reuse and growth
    reqs = [Req(rid=f"r{i}", input_ids=[1], sampling_params=SamplingParams()) for i in range(12)]
    slot = iter(range(10**6))
    for _ in range(300):
        live = [r for r in reqs if not r.finished]
        batch = rng.sample(live, k=min(len(live), rng.randint(1, 6)))
        for r in batch:
            op = rng.random()
            if op < 0.15 and r.kv_slots:     # cache insert: a new list, same head, a different tail
                keep = rng.randint(0, len(r.kv_slots))
                r.kv_slots = r.kv_slots[:keep] + [next(slot) for _ in range(len(r.kv_slots) - keep)]
            elif op < 0.2:                   # retraction / release
                r.kv_slots = []
        new = [[next(slot) for _ in range(rng.choice([1, 1, 1, 3, 17]))] for _ in batch]
        _step(table, batch, new)
        for r in reqs:
            if not r.finished and rng.random() < 0.03:
                r.finish = FinishReason.STOP
        if all(r.finished for r in reqs):
            break
    assert table.rows > 4 or table.width > 8   # growth was exercised


def test_unchanged_rows_upload_only_new_slots():
    table = ReqToTokenTable(rows=8, width=64, device="cpu")
    reqs = [Req(rid=f"r{i}", input_ids=[1], sampling_params=SamplingParams()) for i in range(3)]
    for i, r in enumerate(reqs):
        r.kv_slots = list(range(100 * i, 100 * i + 10))
    writes = Writes()
    table.plan(reqs, [10] * 3, [1] * 3, writes)
    assert len(writes.vals) == 30 and writes.lens == [10] * 3   # first sight: every cached slot
    for r in reqs:
        r.kv_slots.append(999)
    writes = Writes()
    table.plan(reqs, [11] * 3, [1] * 3, writes)
    assert not writes                    # decode: nothing but the new token (scattered by the caller)
    reqs[1].kv_slots = reqs[1].kv_slots[:5] + [7, 7, 7, 7, 7, 7, 7]   # replaced list, tail differs
    writes = Writes()
    table.plan(reqs, [11, 12, 11], [1] * 3, writes)
    assert writes.lens == [7] and writes.shifts == [5] and writes.vals == [7] * 7


def test_rows_sharing_a_cached_prefix_copy_it_on_the_device():
    """Fresh requests locked on one radix node with the same cached length (fork branches, few-shot requests)
    upload that prefix once; the other rows copy it from the first on the device."""
    table = ReqToTokenTable(rows=4, width=8, device="cpu")
    node_a, node_b = object(), object()
    pre_a, pre_b = list(range(1000, 1040)), list(range(2000, 2033))

    def req(i, node, prefix, own):
        r = Req(rid=f"r{i}", input_ids=[1], sampling_params=SamplingParams())
        r.kv_slots, r.cached_len, r.last_node = prefix + own, len(prefix), node
        return r

    batch = [req(0, node_a, pre_a, [1, 2, 3]), req(1, node_b, pre_b, []), req(2, node_a, pre_a, [7]),
             req(3, node_a, pre_a, []), req(4, node_b, pre_b, [9, 9]),
             req(5, node_a, pre_a[:10], [])]          # a short cached prefix: uploaded, never copied
    writes = _step(table, batch, [[100 + i] for i in range(len(batch))])
    assert writes.n == [40, 40, 33] and writes.vals.count(1000) == 2   # pre_a once + the short one's head
    assert writes.vals.count(2000) == 1
    assert [table.owner[d].rid for d in writes.dst] == ["r2", "r3", "r4"]
    # the next pass: the same rows continue (one new slot each), nothing re-uploaded or copied
    writes = _step(table, batch, [[200 + i] for i in range(len(batch))])
    assert writes.vals == [] and writes.dst == []
