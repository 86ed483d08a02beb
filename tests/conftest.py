"""Fixtures shared by the test folders (each folder's own conftest.py adds its own)."""
from __future__ import annotations

import os
import sys
import types

import pytest


@pytest.fixture(scope="module")
def embedded_engine():
    """An Engine on the embedded model, one per test module.

    NOTE: one OpenMP thread in the worker: on the shared 2-core CI box oversubscribed OpenMP threads made decoding
    ~8x slower (see tests/server/conftest.py). The worker process inherits the environment."""
    from runtime.engine import Engine

    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        eng = Engine()
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = old
    yield eng
    eng.shutdown()


@pytest.fixture
def flashinfer_standin(monkeypatch):
    """``install(decode, prefill, store_kv)``: the FlashInfer backend then finds a ``flashinfer`` whose two
    wrapper classes are the ``decode`` and ``prefill`` factories, and stores K/V with ``store_kv`` (its own store
    is a Triton kernel; CPU CI has no triton)."""
    def install(decode, prefill, store_kv) -> None:
        import runtime.attention.flashinfer_backend as fib

        monkeypatch.setattr(fib, "flashinfer", types.SimpleNamespace(BatchDecodeWithPagedKVCacheWrapper=decode,
                                                                     BatchPrefillWithPagedKVCacheWrapper=prefill))
        monkeypatch.setitem(sys.modules, "runtime.attention.triton_ops.store_kv", types.SimpleNamespace(store_kv=store_kv))

    return install
