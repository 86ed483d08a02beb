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

    assert triton_decode_kwargs(Env(decode_config="", fp8_dot_dtype="bf16")) == {}
    assert triton_decode_kwargs(Env(decode_config="128,4,3", fp8_dot_dtype="f16")) == {
        "block_n": 128, "num_warps": 4, "num_stages": 3, "fp16_dots": True}
    assert extend_lpt_tiles(Env(extend_tiles="lpt")) and not extend_lpt_tiles(Env(extend_tiles="grid"))
    with pytest.raises(EngineError, match="SGLC_FP8_DOT_DTYPE='fp16': expected bf16 or f16"):
        triton_decode_kwargs(Env(fp8_dot_dtype="fp16"))
    with pytest.raises(EngineError, match="SGLC_EXTEND_TILES='LPT': expected grid or lpt"):
        extend_lpt_tiles(Env(extend_tiles="LPT"))
