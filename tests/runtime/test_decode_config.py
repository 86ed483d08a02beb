"""``SGLC_DECODE_CONFIG``: the Triton decode kernel's block config from the environment (for measuring a
swept config through the engine)."""
import pytest

from runtime.envs import decode_config
from runtime.errors import EngineError


def test_empty_means_the_kernel_defaults():
    assert decode_config("") == {}
    assert decode_config("  ") == {}


def test_parses_block_warps_stages():
    assert decode_config("128,4,2") == {"block_n": 128, "num_warps": 4, "num_stages": 2}
    assert decode_config(" 32, 8 ,4") == {"block_n": 32, "num_warps": 8, "num_stages": 4}


@pytest.mark.parametrize("bad", ["64", "64,4", "a,b,c", "64,4,3,1", "48,4,3", "8,4,3", "64,3,3", "64,4,0",
                                 "64,4,9"])
def test_bad_values_name_the_variable_and_the_form(bad):
    with pytest.raises(EngineError, match="SGLC_DECODE_CONFIG"):
        decode_config(bad)


def test_the_kernel_knobs_together():
    from runtime.envs import Env, extend_lpt_tiles, triton_decode_kwargs

    assert triton_decode_kwargs(Env(decode_config="", fp8_dot_dtype="bf16")) == {"fp16_dots": False,
                                                                                 "heads_first": True}
    # the defaults: fp16 dots over an fp8 pool, a row's KV heads side by side, longest-first extend tiles
    assert triton_decode_kwargs(Env()) == {"fp16_dots": True, "heads_first": True} and extend_lpt_tiles(Env())
    assert triton_decode_kwargs(Env(decode_config="128,4,3", fp8_dot_dtype="f16")) == {
        "block_n": 128, "num_warps": 4, "num_stages": 3, "fp16_dots": True, "heads_first": True}
    assert extend_lpt_tiles(Env(extend_tiles="lpt")) and not extend_lpt_tiles(Env(extend_tiles="grid"))
    with pytest.raises(EngineError, match="SGLC_FP8_DOT_DTYPE='fp16': expected bf16 or f16"):
        triton_decode_kwargs(Env(fp8_dot_dtype="fp16"))
    with pytest.raises(EngineError, match="SGLC_EXTEND_TILES='LPT': expected grid or lpt"):
        extend_lpt_tiles(Env(extend_tiles="LPT"))
    assert triton_decode_kwargs(Env(decode_grid="heads")) == {"fp16_dots": True, "heads_first": True}
    assert triton_decode_kwargs(Env(decode_grid="rows")) == {"fp16_dots": True, "heads_first": False}
    with pytest.raises(EngineError, match="SGLC_DECODE_GRID='head': expected rows or heads"):
        triton_decode_kwargs(Env(decode_grid="head"))


def test_an_empty_variable_counts_as_unset(monkeypatch):
    from runtime.envs import _get

    monkeypatch.setenv("SGLC_EXTEND_TILES", "")
    assert _get("SGLC_EXTEND_TILES", "lpt") == "lpt"
    monkeypatch.setenv("SGLC_EXTEND_TILES", "grid")
    assert _get("SGLC_EXTEND_TILES", "lpt") == "grid"


def test_gpu_running_cap_follows_the_kv_pool():
    """The GPU's default ``max_running_requests`` doubles where the pool holds 768 tokens a request for 1,024 of
    them (an fp8 pool of Llama-3-8B on an H100: 888k tokens); an explicit value always wins; the CPU keeps 128."""
    from runtime.config import RuntimeConfig, scheduler_defaults

    cfg = RuntimeConfig(model_path="x")
    cap = lambda pool, device="cuda:0", c=cfg: scheduler_defaults(c, device, pool)["max_running_requests"]
    assert cap(None) == 512 and cap(444_053) == 512 and cap(1024 * 768 - 1) == 512
    assert cap(1024 * 768) == 1024 and cap(888_107) == 1024 and cap(10_000_000) == 1024
    assert cap(888_107, "cpu") == 128
    assert cap(888_107, c=RuntimeConfig(model_path="x", max_running_requests=300)) == 300


def test_cuda_graph_cap():
    """Decode graphs cover batches up to the running cap, at most 1,024 unless set; never past the running cap."""
    from runtime.config import RuntimeConfig, cuda_graph_max_bs
    from runtime.errors import EngineError

    cfg = RuntimeConfig(model_path="x")
    assert cuda_graph_max_bs(cfg, 1024) == 1024 and cuda_graph_max_bs(cfg, 128) == 128
    assert cuda_graph_max_bs(cfg, 4096) == 1024
    set_ = RuntimeConfig(model_path="x", cuda_graph_max_bs=256)
    assert cuda_graph_max_bs(set_, 1024) == 256 and cuda_graph_max_bs(set_, 128) == 128
    with pytest.raises(EngineError, match="cuda_graph_max_bs must be positive"):
        RuntimeConfig.from_kwargs(model_path="x", cuda_graph_max_bs=0)
