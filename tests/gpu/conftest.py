"""GPU test fixtures: every test here is ``@pytest.mark.gpu`` and skips cleanly without CUDA.

``SGLC_TRITON_INTERPRET=1`` (with ``TRITON_INTERPRET=1`` and triton importable) runs the Triton kernel
tests on the CPU through Triton's interpreter — slow, small shapes only, but it checks the indexing
logic without a GPU.
"""
from __future__ import annotations

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

