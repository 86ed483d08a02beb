"""apply_token_bitmask_ on CUDA vs the CPU result (skipped without a GPU)."""
from __future__ import annotations

import numpy as np
import pytest

from grammar import apply_token_bitmask_, bitmask_width

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("batch,vocab,tok_vocab", [(1, 49152, 49152), (8, 49280, 49152), (64, 128256, 128000)])
def test_cuda_matches_cpu(batch, vocab, tok_vocab):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    rng = np.random.default_rng(batch)
    bits = rng.random((batch, bitmask_width(tok_vocab) * 32)) < 0.1
    bits[:, tok_vocab:] = False
    mask = torch.from_numpy(np.packbits(bits, axis=1, bitorder="little").view(np.int32).copy())
    logits = torch.randn(batch, vocab, generator=torch.Generator().manual_seed(batch))
    expected = logits.clone()
    apply_token_bitmask_(expected, mask)
    on_gpu = logits.cuda()
    apply_token_bitmask_(on_gpu, mask.cuda())
    assert torch.equal(on_gpu.cpu(), expected)
    assert torch.isinf(expected[:, tok_vocab:]).all()
