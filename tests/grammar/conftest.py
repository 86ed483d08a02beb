"""Shared fixtures: the embedded model's tokenizer and a private grammar cache dir."""
from __future__ import annotations

import os
import tempfile

import pytest


# NOTE: a fresh on-disk grammar cache per session, so stale entries never hide a bug
os.environ.setdefault("SGLC_CACHE_DIR", tempfile.mkdtemp(prefix="sglc-grammar-test-"))

@pytest.fixture(scope="session")
def hf_tokenizer():
    from runtime.tokenizer import load_tokenizer
    return load_tokenizer()


@pytest.fixture(scope="session")
def info(hf_tokenizer):
    from grammar import TokenizerInfo
    return TokenizerInfo.from_hf(hf_tokenizer)
