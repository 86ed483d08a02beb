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
