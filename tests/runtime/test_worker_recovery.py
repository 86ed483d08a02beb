"""A step that raises fails the requests in flight, not the worker: they get an error event each (none is left
waiting), their KV is released and later requests run; only repeated failures in a row are fatal."""
from __future__ import annotations

import pytest
import torch
import transformers

from runtime.config import RuntimeConfig
from runtime.engine import _Batch
from runtime.worker import Worker

VOCAB, CTX = 128, 256
GREEDY = {"temperature": 0, "max_new_tokens": 4, "ignore_eos": True}


@pytest.fixture(scope="module", params=["off", "on"], ids=["sync", "overlap"])
def worker(request, tmp_path_factory):
    """A worker on a tiny random model, with the synchronous scheduler and with the overlap one (its in-flight
    pass is the hard case: a failure while collecting it)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny")
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                   num_key_value_heads=1, vocab_size=VOCAB, max_position_embeddings=CTX)
    transformers.LlamaForCausalLM(cfg).save_pretrained(path, safe_serialization=True)
    return Worker(RuntimeConfig(model_path=str(path), skip_tokenizer_init=True, max_total_tokens=1024,
                                max_running_requests=8, num_threads=1, overlap_schedule=request.param))


def _method(w: Worker) -> str:
    """The executor call a step makes: ``run`` (sync), or ``collect`` of the in-flight pass (overlap)."""
    return "collect" if hasattr(w.scheduler, "inflight") else "run"


def _submit(w: Worker, prompts: list[list[int]], tag: str) -> list[dict]:
    b = _Batch(VOCAB, CTX)
    for i, ids in enumerate(prompts):
        b.add(f"{tag}{i}", ids, GREEDY, -1)
    return w.add_batch(b.message(False, 0, False)[1])


def _run(w: Worker) -> dict[str, dict]:
    done = {}
    while w.busy:
        events, fatal = w.safe_step()
        assert fatal is None
        done.update({e["rid"]: e for e in events if e["finished"]})
    return done


def _fail_call(worker, monkeypatch, which: int) -> None:
    """Make the ``which``-th executor call of a step (run, or collect with overlap) raise, once."""
    name = _method(worker)
    real = getattr(worker.scheduler.executor, name)
    calls = {"n": 0}

    def flaky(*args):
        calls["n"] += 1
        out = real(*args)
        if calls["n"] == which:
            raise RuntimeError("injected failure")
        return out

    monkeypatch.setattr(worker.scheduler.executor, name, flaky)


def test_a_failed_prefill_leaves_nothing_matchable(worker, monkeypatch):
    """The failed pass is the prompts' prefill: its requests had left the waiting queue and not joined the running
    one, and their prompts were in the radix tree with KV never written. They are released, the cache empties,
    and the same prompts afterwards give the same tokens as before the failure (they gave other tokens, read from
    the unwritten KV, when the requests kept their locks)."""
    prompts = [[1 + i, 2, 3, 4, 5] + list(range(10, 50)) for i in range(5)]
    _submit(worker, prompts, "p")
    want = {rid: e["output_ids"] for rid, e in _run(worker).items()}
    assert worker.flush_cache()
    _fail_call(worker, monkeypatch, 1)
    _submit(worker, prompts, "q")
    done = _run(worker)
    assert sorted(done) == sorted(f"q{i}#0" for i in range(5)) and all(e["error"] for e in done.values())
    assert not worker.live and worker.cache.protected_size == 0 and worker.metrics()["kv_used_tokens"] == 0
    monkeypatch.undo()
    _submit(worker, prompts, "r")
    assert {rid.replace("r", "p"): e["output_ids"] for rid, e in _run(worker).items()} == want
    assert worker.flush_cache()


def test_a_failed_step_fails_its_requests_and_the_worker_serves_on(worker, monkeypatch):
    prompts = [[1 + i, 2, 3, 4, 5] for i in range(5)]
    _submit(worker, prompts, "a")
    want = {rid: e["output_ids"] for rid, e in _run(worker).items()}
    assert len(want) == 5 and all(len(ids) == 4 for ids in want.values())
    _fail_call(worker, monkeypatch, 2)   # the second pass: the first one's requests have their first token
    _submit(worker, prompts, "b")
    done = _run(worker)
    assert sorted(done) == sorted(f"b{i}#0" for i in range(5))   # every request answered, none left waiting
    for ev in done.values():
        assert ev["unavailable"] and "injected failure" in ev["error"] and "failed inside the engine" in ev["error"]
        assert ev["meta_info"]["finish_reason"]["type"] == "abort"
    assert not worker.live and worker.failed_steps == 1
    # the failed pass's prompts may be in the radix tree with KV never written: the cache was emptied
    assert worker.metrics()["kv_used_tokens"] == 0
    _submit(worker, prompts, "c")   # the worker serves on, with the same results as before
    assert {rid.replace("c", "a"): e["output_ids"] for rid, e in _run(worker).items()} == want
    assert worker.failed_steps == 0   # (a good step resets the count)
    assert worker.flush_cache() and worker.metrics()["kv_used_tokens"] == 0


def test_repeated_failures_are_fatal(worker, monkeypatch):
    def broken(*args):
        raise RuntimeError("the device is gone")

    monkeypatch.setattr(worker.scheduler.executor, _method(worker), broken)
    fatal, steps = None, 0
    while fatal is None and steps < 8 * Worker.MAX_FAILED_STEPS:
        _submit(worker, [[1, 2, 3]], f"d{steps}-")
        for _ in range(4):   # the request's steps, then idle loop iterations: they prove nothing
            _, fatal = worker.safe_step()
            steps += 1
            if fatal is not None:
                break
    # (sync: every step with a pass fails; overlap: every other one only launches, and does not count either)
    assert fatal is not None and "the device is gone" in fatal, steps
