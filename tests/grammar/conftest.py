"""Shared fixtures: the embedded model's tokenizer and a private grammar cache dir."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

# NOTE: a fresh on-disk grammar cache per session, so stale entries never hide a bug
if "SGLC_CACHE_DIR" not in os.environ:
    os.environ["SGLC_CACHE_DIR"] = tempfile.mkdtemp(prefix="sglc-grammar-test-")
    atexit.register(shutil.rmtree, os.environ["SGLC_CACHE_DIR"], True)

@pytest.fixture(scope="session")
def hf_tokenizer():
    from runtime.tokenizer import load_tokenizer
    return load_tokenizer()


@pytest.fixture(scope="session")
def info(hf_tokenizer):
    from grammar import TokenizerInfo
    return TokenizerInfo.from_hf(hf_tokenizer)
