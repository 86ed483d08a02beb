"""Constrained decoding end to end on the embedded model: outputs re-matched with `re` / jsonschema."""
from __future__ import annotations

import json
import re

import jsonschema
import pytest

from runtime.engine import Engine
from runtime.errors import EngineError

IP = r"((25[0-5]|2[0-4]\d|[01]?\d\d?)\.){3}(25[0-5]|2[0-4]\d|[01]?\d\d?)"
HP = (r"""\{\n    "name": "[\w\d\s]{1,16}",\n    "house": "(Gryffindor|Slytherin|Ravenclaw|Hufflepuff)",\n"""
      r"""    "blood status": "(Pure-blood|Half-blood|Muggle-born)",\n"""
      r"""    "occupation": "(student|teacher|auror|ministry of magic|death eater|order of the phoenix)",\n"""
      r"""    "wand": \{\n        "wood": "[\w\d\s]{1,16}",\n        "core": "[\w\d\s]{1,16}",\n"""
      r"""        "length": [0-9]{1,2}\.[0-9]{0,2}\n    \},\n    "alive": "(Alive|Deceased)",\n"""
      r"""    "patronus": "[\w\d\s]{1,16}",\n    "bogart": "[\w\d\s]{1,16}"\n\}""")
SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0, "maximum": 150},
    "skills": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3}},
    "required": ["name", "age", "skills"], "additionalProperties": False}


@pytest.fixture(scope="module")
def engine():
    with Engine(max_total_tokens=8192) as e:
        yield e


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_regex_ip(engine, temperature):
    out = engine.generate("The IP address of the Google DNS server is ",
                          {"temperature": temperature, "max_new_tokens": 32, "regex": IP, "seed": 1})
    assert re.fullmatch(IP, out["text"]), out["text"]
    assert out["meta_info"]["finish_reason"]["type"] == "stop"


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_harry_potter_regex_with_jump_forward(engine, temperature):
    out = engine.generate("Harry Potter is a wizard. Describe him in JSON:\n",
                          {"temperature": temperature, "max_new_tokens": 256, "regex": HP, "seed": 2})
    assert re.fullmatch(HP, out["text"]), out["text"]
    m = out["meta_info"]
    # jump-forward: the constant JSON skeleton is appended without sampling
    assert m["jump_forward_tokens"] > 0 and m["forward_passes"] < m["completion_tokens"]


def test_json_schema_mixed_with_unconstrained(engine):
    outs = engine.generate(["Describe a programmer as JSON:\n", "The capital of France is"],
                           [{"temperature": 0, "max_new_tokens": 128, "json_schema": json.dumps(SCHEMA)},
                            {"temperature": 0, "max_new_tokens": 6}])
    jsonschema.validate(json.loads(outs[0]["text"]), SCHEMA)
    assert "Paris" in outs[1]["text"]


def test_bad_constraint_is_a_clear_error_and_engine_keeps_serving(engine):
    with pytest.raises(EngineError, match="invalid constraint"):
        engine.generate("x", {"regex": "(a"})
    with pytest.raises(EngineError, match="invalid constraint"):
        engine.generate("x", {"json_schema": '{"type": "strnig"}'})
    assert "Paris" in engine.generate("The capital of France is", {"temperature": 0, "max_new_tokens": 6})["text"]


def test_forced_prefix_prompt_is_shared(engine):
    """A constraint that forces the first output tokens still puts the prompt in the radix cache after its
    first pass, so identical requests arriving together compute it once (the twins hit the cache)."""
    engine.flush_cache()
    prompt = ("Describe a wizard from the Harry Potter books as a JSON object. Use the fields name, house, "
              "blood status, occupation, wand wood, wand core, wand length, alive, patronus and boggart; "
              "answer with the JSON object only:")
    sp = {"temperature": 0, "max_new_tokens": 24, "regex": r'\{"name": "[a-z ]{8,40}"\}'}
    outs = engine.generate([prompt] * 3, sp)
    cached = sorted(o["meta_info"]["cached_tokens"] for o in outs)
    n = outs[0]["meta_info"]["prompt_tokens"]
    assert n >= 40 and cached[0] == 0 and cached[1] >= n - 1 and cached[2] >= n - 1, (n, cached)
