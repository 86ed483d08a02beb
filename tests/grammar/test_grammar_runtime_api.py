"""API edges the runtime relies on: no torch at import, bitmask kernel, caches."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from grammar import GrammarCompiler, GrammarError, apply_token_bitmask_, bitmask_width, compile_constraint
from grammar.cache import cache_key


def test_import_does_not_pull_torch_or_runtime():
    code = "import sys, grammar; print('torch' in sys.modules, 'runtime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_apply_token_bitmask_matches_reference():
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    batch, vocab, width = 3, 100, bitmask_width(90)  # logits wider than the tokenizer
    logits = torch.randn(batch, vocab, generator=gen)
    bits = torch.rand(batch, width * 32, generator=gen) < 0.3
    bits[:, 90:] = False
    packed = np.packbits(bits.numpy(), axis=1, bitorder="little").view(np.int32)
    expected = logits.clone()
    full = torch.zeros(batch, vocab, dtype=torch.bool)
    full[:, :90] = bits[:, :90]
    expected[~full] = float("-inf")
    apply_token_bitmask_(logits, torch.from_numpy(packed))
    assert torch.equal(logits, expected)


def test_disk_cache_roundtrip(tmp_path, info):
    pattern = r"(true|false|[0-9]{1,3}|é+)"
    first = GrammarCompiler(cache_dir=tmp_path).compile("regex", pattern, info)
    assert (tmp_path / f"{cache_key('regex', pattern, info)}.npz").exists()
    second = GrammarCompiler(cache_dir=tmp_path).compile("regex", pattern, info)
    assert second is not first
    for state in range(first.num_states):
        assert np.array_equal(first.mask(state), second.mask(state))
    assert compile_constraint("regex", pattern, info) is compile_constraint("regex", pattern, info)


def test_unknown_kind_and_non_text_source(info):
    with pytest.raises(GrammarError, match="unknown constraint kind"):
        compile_constraint("xml", "<a/>", info)
    with pytest.raises(GrammarError, match="as text"):
        compile_constraint("json_schema", {"type": "object"}, info)  # type: ignore[arg-type]


def test_precompute_is_capped_and_lazy_rows_still_work(info, hf_tokenizer):
    fsm = GrammarCompiler(disk=False).compile("regex", r"[^\n]{0,40}", info, precompute=False)
    assert fsm.precompute(max_bytes=20_000) is False  # stops early: the rest stays lazy
    m = fsm.matcher()
    for tid in hf_tokenizer.encode("hello world, 42!", add_special_tokens=False):
        assert m.accept_token(tid)
    assert m.is_accepting()
    assert fsm.precompute() is True


def test_forced_prefix_rides_with_the_prefill(info, hf_tokenizer):
    """runtime/constrained.py: text forced before any sampled token becomes the first output tokens
    (no forward pass of its own); not for requests that want prompt logprobs."""
    from grammar_helpers import HP_REGEX

    from runtime.constrained import GrammarManager
    from runtime.sampling_params import SamplingParams
    from runtime.scheduler.request import Req

    gm = GrammarManager(hf_tokenizer, info.vocab_size, None)
    fsm = compile_constraint("regex", HP_REGEX, info)
    req = Req("r", [1, 2], SamplingParams(max_new_tokens=64, regex=HP_REGEX))
    req.matcher = fsm.matcher()
    gm.force_prefix(req)
    assert hf_tokenizer.decode(req.output_ids) == '{\n    "name": "'
    assert req.forced_tokens == len(req.output_ids) == req.matcher.num_steps
    for tid in hf_tokenizer.encode('Harry Potter",', add_special_tokens=False):
        assert req.matcher.accept_token(tid)
    logprobs = Req("s", [1, 2], SamplingParams(max_new_tokens=64, regex=HP_REGEX), return_logprob=True,
                   logprob_start_len=0)
    logprobs.matcher = fsm.matcher()
    gm.force_prefix(logprobs)
    assert logprobs.output_ids == [] and logprobs.matcher.num_steps == 0
