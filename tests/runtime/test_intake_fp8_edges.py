"""Edge cases of the fp8 KV cache (``kv_cache_dtype='fp8_e4m3'``) and of the worker's sliced intake
(``Worker.add_batch`` takes a large call in by slices of ``max_running_requests``), written in review (session 6).
CPU only, small shapes (< 20 s)."""
from __future__ import annotations

import json
import math
import random
import threading
import time
import types

import pytest
import torch

from runtime.config import RuntimeConfig
from runtime.engine import _Batch
from runtime.mem.kv_pool import KVPool, fp8_max, to_kv

FP8 = torch.float8_e4m3fn
VOCAB, CTX, POOL = 128, 512, 2048
CFG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 96,
       "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": VOCAB,
       "max_position_embeddings": CTX, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
       "torch_dtype": "float32"}
GREEDY = {"temperature": 0, "max_new_tokens": 3, "ignore_eos": True}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("review-tiny-llama")
    (d / "config.json").write_text(json.dumps(CFG))
    return str(d)


def _cfg(model_dir, **kw):
    base = {"model_path": model_dir, "load_format": "dummy", "device": "cpu", "dtype": "float32",
            "skip_tokenizer_init": True, "max_total_tokens": POOL, "num_threads": 1}
    base.update(kw)
    return RuntimeConfig(**base)


# ============================================================================================
# Change 1: the fp8 KV cache
# ============================================================================================

def test_to_kv_saturates_and_keeps_other_dtypes():
    x = torch.tensor([1000.0, -1000.0, 448.0, 1.0, float("inf"), -float("inf")])
    got = to_kv(x, FP8).float()
    assert got.tolist() == [448.0, -448.0, 448.0, 1.0, 448.0, -448.0]   # no NaN from overflow
    assert fp8_max(FP8) == 448.0 and fp8_max(torch.bfloat16) == 0.0 and fp8_max(torch.float32) == 0.0
    y = torch.tensor([1000.0, 3.3])
    assert torch.equal(to_kv(y, torch.float32), y) and to_kv(y, torch.bfloat16).dtype == torch.bfloat16


def test_pool_sizing_uses_the_kv_dtype_not_the_model_dtype(monkeypatch):
    """On the GPU the pool is sized from free memory over bytes per token of the KV dtype: an fp8 pool next to a
    bf16 model holds twice the tokens; the weights are still counted in the model's dtype."""
    from runtime.model_runner import ModelRunner

    hf = types.SimpleNamespace(num_hidden_layers=32, hidden_size=4096, intermediate_size=14336, vocab_size=128256)
    gib = 2 ** 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev=None: (80 * gib, 80 * gib))

    def size(kv_dtype):
        r = ModelRunner.__new__(ModelRunner)
        r.cfg = RuntimeConfig(max_total_tokens=None, mem_fraction_static=0.9)
        r.device, r.dtype, r.kv_dtype = "cuda:0", torch.bfloat16, kv_dtype
        r.hf_config, r.num_kv_heads, r.head_dim = hf, 8, 128
        return r._pool_size(weights_bytes=16 * gib)

    bf16, fp8 = size(torch.bfloat16), size(FP8)
    per_tok = KVPool.bytes_per_token(32, 8, 128, FP8)
    assert per_tok * 2 == KVPool.bytes_per_token(32, 8, 128, torch.bfloat16)
    assert fp8 == int((80 * gib * 0.9 - 16 * gib) // per_tok) and fp8 in (2 * bf16, 2 * bf16 + 1)


def test_fp8_pool_scratch_slot_and_set_kv():
    pool = KVPool(16, 2, 2, 8, FP8, "cpu")
    assert pool.k_buffer[0].shape[0] == 17 and pool.scratch_slot == 16 and pool.k_buffer[1].dtype == FP8
    k = torch.full((3, 2, 8), 1e4)
    v = torch.full((3, 2, 8), -1e4)
    pool.set_kv(1, torch.tensor([0, 5, pool.scratch_slot]), k, v)
    assert (pool.k_buffer[1][[0, 5, 16]].float() == 448).all() and (pool.v_buffer[1][[0, 5, 16]].float() == -448).all()
    assert torch.isfinite(pool.k_buffer[1].float()).all()


def test_store_kv_fallback_for_strided_kv_into_an_fp8_pool():
    """``store_kv`` falls back to ``index_copy_`` when K/V rows are not contiguous (e.g. a padded head dim, or heads
    transposed); into an fp8 pool that must still store the saturated values. ``index_copy_`` has no Float8 kernel
    (CPU here; the CUDA dispatch lists Half/BFloat16/Bool/complex only), so this path raises NotImplementedError."""
    pytest.importorskip("triton")
    from runtime.attention.triton_ops.store_kv import store_kv

    t, hkv, d = 5, 2, 8
    k = (torch.randn(t, hkv, d + 8) * 300)[..., :d]     # stride(-2) = d + 8: not row-contiguous
    v = (torch.randn(t, hkv, d + 8) * 300)[..., :d]
    k[0, 0, 0] = 5000.0
    kb = torch.zeros(16, hkv, d, dtype=FP8)
    vb = torch.zeros_like(kb)
    loc = torch.tensor([3, 9, 0, 15, 7])
    store_kv(kb, vb, loc, k, v)
    assert torch.equal(kb[loc].float(), to_kv(k, FP8).float()) and torch.equal(vb[loc].float(), to_kv(v, FP8).float())
    assert kb[3, 0, 0].float().item() == 448.0


def test_fp8_pool_worker_runs_mixed_decode_staging_and_prefix_hits(model_dir):
    """The CPU torch backend over an fp8 pool: a shared prefix (radix hit: extend over an fp8 prefix), decode
    staging across steps with rows finishing at different times, everything finite and freed."""
    from runtime.worker import Worker

    w = Worker(_cfg(model_dir, kv_cache_dtype="fp8_e4m3", max_running_requests=8))
    assert w.runner.kv_pool.k_buffer[0].dtype == FP8 and w.info()["kv_cache_dtype"] == "float8_e4m3fn"
    rng = random.Random(3)
    shared = [rng.randrange(VOCAB) for _ in range(40)]
    ps = [shared + [rng.randrange(VOCAB) for _ in range(3)] for _ in range(6)]
    sps = [{**GREEDY, "max_new_tokens": 2 + i} for i in range(6)]
    done = _drive(w, _msg(ps, sps, return_logprob=True))
    assert sorted(done) == sorted(f"r{i}#0" for i in range(6))
    for i in range(6):
        ev = done[f"r{i}#0"]
        assert len(ev["output_ids"]) == 2 + i and ev["error"] is None
        assert all(lp is None or math.isfinite(lp) for lp, _ in ev["meta_info"]["output_token_logprobs"])
    assert w.flush_cache() and w.runner.kv_pool.allocator.used == 0


# ============================================================================================
# Change 2: the worker's sliced intake
# ============================================================================================

def _msg(prompts, sps, starts=None, return_logprob=False, top=0, stream=False, rids=None):
    b = _Batch(VOCAB, CTX)
    sps = sps if isinstance(sps, list) else [sps] * len(prompts)
    for i, ids in enumerate(prompts):
        b.add(rids[i] if rids else f"r{i}", ids, sps[i], -1 if starts is None else starts[i])
    assert b.range_error() is None
    return b.message(return_logprob, top, stream)[1]


def _drive(w, msg=None, max_steps=2000, events=None):
    """Run the worker until idle; every event's rid must finish exactly once. Returns rid -> merged event."""
    done: dict[str, dict] = {}
    acc: dict[str, list[int]] = {}

    def take(evs):
        for e in evs:
            assert e["rid"] not in done, f"{e['rid']} reported after it finished"
            acc.setdefault(e["rid"], []).extend(e["output_ids"])
            if e["finished"]:
                done[e["rid"]] = {**e, "output_ids": acc[e["rid"]]}

    if events:
        take(events)
    if msg is not None:
        take(w.add_batch(msg))
    for _ in range(max_steps):
        if not w.busy:
            break
        take(w.step())
        if not w.scheduler.has_work:
            time.sleep(0.002)   # as worker_main: only constraint compiles pending
    assert not w.busy, "the worker never went idle"
    return done


@pytest.fixture(scope="module")
def workers(model_dir):
    from runtime.worker import Worker

    small = Worker(_cfg(model_dir, max_running_requests=4))
    big = Worker(_cfg(model_dir, max_running_requests=64))
    return small, big


def _fewshot(n, seed, shared_len=24, own=3):
    rng = random.Random(seed)
    shared = [rng.randrange(VOCAB) for _ in range(shared_len)]
    return [shared + [rng.randrange(VOCAB) for _ in range(own)] for _ in range(n)]


def _record_reqs(w, monkeypatch):
    seen = []
    orig = w._add

    def spy(req, events):
        seen.append(req)
        orig(req, events)

    monkeypatch.setattr(w, "_add", spy)
    return seen


def test_n_samples_straddling_slices_own_their_prompts(workers, monkeypatch):
    """n = 3 samples of 5 prompts with slices of 4: samples of one prompt are created in different steps; each gets
    its own list equal to the prompt, index = its position in the call, and the same tokens as one big intake."""
    small, big = workers
    ps = _fewshot(5, seed=11)
    sp = {**GREEDY, "n": 3}
    seen = _record_reqs(small, monkeypatch)
    msg = _msg(ps, sp)
    first = small.add_batch(msg)
    assert len(seen) == 4 and small.metrics()["num_waiting_reqs"] == 15
    done = _drive(small, events=first)
    want = _drive(big, _msg(ps, sp))
    rids = [f"r{i}#{s}" for i in range(5) for s in range(3)]
    assert sorted(done) == sorted(rids) and [r.rid for r in seen] == rids
    assert [r.index for r in seen] == list(range(15))
    for i in range(5):
        lists = [r.input_ids for r in seen[3 * i:3 * i + 3]]
        assert all(x == ps[i] for x in lists)
        assert len({id(x) for x in lists}) == 3, "samples of one prompt share a token list"
    assert {r: done[r]["output_ids"] for r in rids} == {r: want[r]["output_ids"] for r in rids}
    assert all(done[r]["meta_info"]["prompt_tokens"] == len(ps[int(r[1])]) for r in rids)


def test_per_request_logprob_starts_in_later_slices(workers):
    small, big = workers
    ps = _fewshot(9, seed=12, shared_len=20, own=4)
    starts = [None, 0, 20, 5, None, 23, 0, 10, 1]
    msg = _msg(ps, GREEDY, starts=[-1 if s is None else s for s in starts], return_logprob=True, top=2)
    done = _drive(small, msg)
    want = _drive(big, _msg(ps, GREEDY, starts=[-1 if s is None else s for s in starts], return_logprob=True, top=2))
    for i, s in enumerate(starts):
        m = done[f"r{i}#0"]["meta_info"]
        n_in = len(m["input_token_logprobs"])
        assert n_in == (0 if s is None else len(ps[i]) - s), (i, s, n_in)
        assert [t for _, t in m["input_token_logprobs"]] == ps[i][len(ps[i]) - n_in:]
        assert len(m["output_top_logprobs"]) == 3 and all(len(x) == 2 for x in m["output_top_logprobs"])
        assert done[f"r{i}#0"]["output_ids"] == want[f"r{i}#0"]["output_ids"]


def test_abort_by_rid_reaches_a_pending_request_only(workers):
    """``abort('r13')`` while r13 is not taken in yet: r13's samples abort (not r1, r130...), the rest finish."""
    small, _ = workers
    ps = _fewshot(20, seed=13)
    rids = [f"r{i}" for i in range(20)]
    first = small.add_batch(_msg(ps, {**GREEDY, "n": 2}, rids=rids))
    assert small.metrics()["num_waiting_reqs"] == 40
    waiting = len(small.scheduler.waiting)
    ab = small.abort("r13")
    assert [e["rid"] for e in ab] == ["r13#0", "r13#1"]
    assert len(small.scheduler.waiting) == waiting          # the other pending requests stay where they wait
    assert small.metrics()["num_waiting_reqs"] == 38
    done = _drive(small, events=first + ab)
    assert sorted(done) == sorted(f"r{i}#{s}" for i in range(20) for s in range(2))
    reasons = {r: e["meta_info"]["finish_reason"]["type"] for r, e in done.items()}
    assert {r for r, t in reasons.items() if t == "abort"} == {"r13#0", "r13#1"}
    assert all(len(done[r]["output_ids"]) == 3 for r in done if not r.startswith("r13#"))
    assert small.metrics()["num_waiting_reqs"] == 0


def test_two_calls_keep_fifo_and_flush_waits_for_intake(workers):
    small, _ = workers
    a = _fewshot(10, seed=14)
    b = _fewshot(3, seed=15)
    seen = []
    orig = small.scheduler.add

    def spy(req):
        seen.append(req.rid)
        orig(req)

    small.scheduler.add = spy
    try:
        ev = small.add_batch(_msg(a, GREEDY, rids=[f"a{i}" for i in range(10)]))
        ev += small.add_batch(_msg(b, GREEDY, rids=[f"b{i}" for i in range(3)]))
        assert small.metrics()["num_waiting_reqs"] == 13 and not small.flush_cache()
        done = _drive(small, events=ev)
    finally:
        del small.scheduler.add
    assert seen == [f"a{i}#0" for i in range(10)] + [f"b{i}#0" for i in range(3)]
    assert len(done) == 13 and small.flush_cache()


def test_too_long_request_in_a_later_slice_fails_once(model_dir):
    from runtime.worker import Worker

    w = Worker(_cfg(model_dir, max_running_requests=2, max_total_tokens=300))
    ps = _fewshot(5, seed=16)
    ps[3] = [1] * 290
    done = _drive(w, _msg(ps, [GREEDY, GREEDY, GREEDY, {**GREEDY, "max_new_tokens": 20}, GREEDY]))
    assert sorted(done) == [f"r{i}#0" for i in range(5)]
    assert "KV pool" in (done["r3#0"]["error"] or "")
    assert all(done[f"r{i}#0"]["error"] is None and len(done[f"r{i}#0"]["output_ids"]) == 3 for i in (0, 1, 2, 4))


def test_engine_thread_worker_slices_stream_and_shutdown_with_pending_intake(model_dir):
    """End to end (thread worker, max_running_requests=2): a streamed call with n=2 reaches every index; a large call
    still pending at shutdown returns (aborted), nothing hangs."""
    from runtime.engine import Engine

    eng = Engine(model_dir, load_format="dummy", device="cpu", dtype="float32", skip_tokenizer_init=True,
                 max_total_tokens=POOL, num_threads=1, worker_mode="thread", max_running_requests=2)
    try:
        ps = _fewshot(5, seed=17)
        full = eng.generate(input_ids=ps, sampling_params={**GREEDY, "n": 2})
        assert [o["index"] for o in full] == list(range(10))
        got: dict[int, list[int]] = {i: [] for i in range(10)}
        fin = []
        for c in eng.generate(input_ids=ps, sampling_params={**GREEDY, "n": 2}, stream=True):
            got[c["index"]] += c["output_ids"]
            fin += [c["index"]] if c["finished"] else []
        assert sorted(fin) == list(range(10)) and [got[i] for i in range(10)] == [o["output_ids"] for o in full]

        out: dict[str, object] = {}

        def big():
            try:
                out["r"] = eng.generate(input_ids=_fewshot(200, seed=18),
                                        sampling_params={"temperature": 0, "max_new_tokens": 50, "ignore_eos": True})
            except Exception as e:   # noqa: BLE001
                out["e"] = e

        th = threading.Thread(target=big, daemon=True)
        th.start()
        for _ in range(200):
            m = eng.metrics()
            if m["num_running_reqs"]:
                break
        assert m["num_waiting_reqs"] > 100   # most of the call is still pending intake
    finally:
        eng.shutdown()
    th.join(timeout=15)
    assert not th.is_alive(), "a call pending intake hung across shutdown"
    res = out.get("r")
    assert res is not None and len(res) == 200, out
    reasons = [o["meta_info"]["finish_reason"]["type"] for o in res]
    assert set(reasons) <= {"abort", "length"} and reasons.count("abort") > 100, reasons


def test_constrained_requests_in_later_slices_are_reported_once(workers):
    """Grammar requests created by a later slice go through the compile pool (here: no tokenizer, so the compile
    fails): each is reported exactly once with its error, the plain ones finish, an abort reaches a pending one."""
    small, _ = workers
    ps = _fewshot(12, seed=19)
    sps = [{**GREEDY, "regex": "[ab]+"} if i % 3 == 2 else GREEDY for i in range(12)]
    first = small.add_batch(_msg(ps, sps))
    ab = small.abort("r11")
    done = _drive(small, events=first + ab)
    assert sorted(done) == sorted(f"r{i}#0" for i in range(12))
    for i in range(12):
        e = done[f"r{i}#0"]
        if i == 11:
            assert e["meta_info"]["finish_reason"]["type"] == "abort"
        elif i % 3 == 2:
            assert "constraint" in (e["error"] or ""), e
        else:
            assert e["error"] is None and len(e["output_ids"]) == 3
    assert not small.grammar.pending and small.metrics()["num_waiting_reqs"] == 0


def test_sliced_intake_under_overlap_and_mixed_batches(model_dir, workers):
    """The GPU defaults (overlap scheduler, mixed batches) with slices of 3: the same tokens as one big intake, each
    rid reported once, an abort of a pending request and a running one, the pool drained afterwards."""
    from runtime.worker import Worker

    _, big = workers
    w = Worker(_cfg(model_dir, max_running_requests=3, overlap_schedule="on", mixed_chunk="on"))
    ps = _fewshot(8, seed=20, own=5)
    sp = {**GREEDY, "n": 2, "max_new_tokens": 6}
    want = _drive(big, _msg(ps, sp))
    ev = w.add_batch(_msg(ps, sp))
    ev += w.step()
    ev += w.abort("r0") + w.abort("r6")
    done = _drive(w, events=ev)
    rids = [f"r{i}#{s}" for i in range(8) for s in range(2)]
    assert sorted(done) == sorted(rids)
    for r in rids:
        kind = done[r]["meta_info"]["finish_reason"]["type"]
        if r[:2] in ("r0", "r6"):
            assert kind == "abort", (r, kind)
        else:
            assert kind == "length" and done[r]["output_ids"] == want[r]["output_ids"], r
    w.scheduler.settle()
    assert w.flush_cache() and w.runner.kv_pool.allocator.used == 0
