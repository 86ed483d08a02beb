"""GPU test fixtures: every test here is ``@pytest.mark.gpu`` and skips cleanly without CUDA.

``SGLC_TRITON_INTERPRET=1`` (with ``TRITON_INTERPRET=1`` and triton importable) runs the Triton kernel
tests on the CPU through Triton's interpreter — slow, small shapes only, but it checks the indexing
logic without a GPU.

``SGLC_TEST_SHARD=I/N`` keeps every N-th test from the I-th (0-based): ``scripts/gpu_check.sh tests`` runs N
shards side by side, since the kernel tests spend most of their time compiling (one CPU core each).
"""
from __future__ import annotations

import os

import pytest
import torch
from gpu_helpers import INTERPRET, has_triton


@pytest.fixture
def device() -> str:
    """``cuda`` where a GPU is present, ``cpu`` under the Triton interpreter, else skip."""
    if torch.cuda.is_available() and has_triton():
        return "cuda"
    if INTERPRET and has_triton():
        return "cpu"
    pytest.skip("needs a CUDA device with triton (or SGLC_TRITON_INTERPRET=1 TRITON_INTERPRET=1)")


@pytest.fixture
def cuda_only() -> str:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return "cuda"


def shard_of(spec: str) -> tuple[int, int]:
    """``"I/N"`` as ``(I, N)``, checked."""
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise pytest.UsageError(f"SGLC_TEST_SHARD={spec!r}: expected I/N, e.g. 0/3") from None
    if not 0 <= i < n:
        raise pytest.UsageError(f"SGLC_TEST_SHARD={spec!r}: I must be in 0..N-1")
    return i, n


def pytest_collection_modifyitems(config, items):
    spec = os.environ.get("SGLC_TEST_SHARD", "")
    if not spec:
        return
    i, n = shard_of(spec)
    config.hook.pytest_deselected(items=[t for k, t in enumerate(items) if k % n != i])
    items[:] = items[i::n]
