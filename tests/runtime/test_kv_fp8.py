"""``kv_cache_dtype='fp8_e4m3'`` on the CPU torch backend: the pool stores K/V in fp8 (half the bytes of bf16,
a quarter of fp32), and a tiny random Llama's logits over prefill, an extend over a cached prefix and greedy decode
stay close to the same model with a full-precision pool (teacher-forced), and so do its greedy choices."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gpu"))
from gpu_helpers import make_runner, randomize_, rel_err, write_tiny_config
from test_model_parity import run_greedy


def test_fp8_pool_stays_close_to_full_precision(tmp_path):
    model_dir = write_tiny_config(tmp_path)
    ref = make_runner(model_dir, "cpu", "torch")
    fp8 = make_runner(model_dir, "cpu", "torch", kv_cache_dtype="fp8_e4m3")
    assert fp8.kv_pool.k_buffer[0].dtype == torch.float8_e4m3fn and fp8.kv_pool.size == ref.kv_pool.size
    assert fp8.kv_pool.k_buffer[0].element_size() * 4 == ref.kv_pool.k_buffer[0].element_size()
    randomize_(ref.model)
    randomize_(fp8.model)
    toks, logits = run_greedy(ref)
    got_toks, _ = run_greedy(fp8)
    _, got = run_greedy(fp8, forced=toks)
    errs = [rel_err(a, b) for a, b in zip(got, logits)]
    assert max(errs) < 0.15 and min(errs) > 0, errs   # fp8 rounding (3 mantissa bits) shows, and stays small
    # teacher-forced: the fp8 pool's argmax agrees with the full-precision greedy token at most positions
    # (a wrong K/V read would agree on ~1/512 of them; near-ties may flip under the fp8 noise)
    ref_argmax = torch.cat([lg.argmax(-1) for lg in logits])
    got_argmax = torch.cat([lg.argmax(-1) for lg in got])
    assert (ref_argmax == got_argmax).float().mean() >= 0.8   # 88% on this random model (2026-11-27)
    assert [t[0] for t in got_toks] == [t[0] for t in toks]


def test_kv_cache_dtype_option_is_checked():
    from runtime.config import RuntimeConfig
    from runtime.errors import EngineError, EngineUnsupported

    RuntimeConfig.from_kwargs(kv_cache_dtype="fp8_e4m3")
    with pytest.raises(EngineError, match="kv_cache_dtype"):
        RuntimeConfig.from_kwargs(kv_cache_dtype="int4")
    with pytest.raises(EngineUnsupported, match="FlashInfer"):
        RuntimeConfig.from_kwargs(kv_cache_dtype="fp8_e4m3", attention_backend="flashinfer")


def test_engine_serves_from_an_fp8_pool(tmp_path):
    from runtime.engine import Engine

    kw = {"model_path": write_tiny_config(tmp_path), "load_format": "dummy", "device": "cpu", "dtype": "float32",
          "skip_tokenizer_init": True, "max_total_tokens": 2048}
    prompts = [[5, 6, 7] * 30, [5, 6, 7] * 30 + [9, 9], [11] * 7]   # a shared prefix, decode staging, a loner
    with Engine(**kw, kv_cache_dtype="fp8_e4m3") as eng:
        assert eng.model_info()["kv_cache_dtype"] == "float8_e4m3fn"
        outs = eng.generate(input_ids=prompts, sampling_params={"temperature": 0, "max_new_tokens": 6,
                                                                 "ignore_eos": True})
        assert [len(o["output_ids"]) for o in outs] == [6, 6, 6]
        assert eng.flush_cache() and eng.metrics()["kv_used_tokens"] == 0
