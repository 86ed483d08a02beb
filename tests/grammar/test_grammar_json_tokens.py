"""JSON schema / json_object / Pydantic constraints at the token level (self-check for the runtime)."""
from __future__ import annotations

import enum
import json
import random
from typing import Literal

import jsonschema
import pydantic
import pytest
from grammar_helpers import random_walk

from grammar import GrammarError, compile_constraint, compile_pydantic

NESTED = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "score": {"type": "number", "minimum": -5, "maximum": 5},
        "address": {"type": "object", "properties": {
            "city": {"type": "string", "minLength": 1, "maxLength": 10},
            "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["city", "zip"], "additionalProperties": False},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
        "when": {"type": "string", "format": "date"},
        "id": {"type": "string", "format": "uuid"},
        "kind": {"anyOf": [{"type": "null"}, {"const": "x"}, {"type": "boolean"}]},
    },
    "required": ["name", "age", "address"],
    "additionalProperties": False,
}
TREE = {
    "$defs": {"node": {"type": "object", "properties": {
        "v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}},
        "required": ["v"], "additionalProperties": False}},
    "$ref": "#/$defs/node",
}


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Wand(pydantic.BaseModel):
    wood: str = pydantic.Field(max_length=10)
    length: float


class Character(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=16)
    house: Literal["Gryffindor", "Slytherin"]
    color: Color
    wand: Wand
    friends: list[str] = pydantic.Field(max_length=2)
    age: int | None = None


@pytest.mark.parametrize("schema", [NESTED, TREE], ids=["nested", "recursive"])
def test_random_walks_validate(info, schema):
    fsm = compile_constraint("json_schema", json.dumps(schema), info)
    rng = random.Random(1)
    done = 0
    for _ in range(12):
        data, finished = random_walk(fsm, rng, max_steps=400, bias=0.7)
        if finished:
            done += 1
            jsonschema.validate(json.loads(data.decode("utf-8")), schema)
    assert done >= 6


def test_json_object_walks_parse(info):
    fsm = compile_constraint("json_object", "", info)
    rng = random.Random(2)
    done = 0
    for _ in range(12):
        data, finished = random_walk(fsm, rng, max_steps=400, bias=0.7)
        if finished:
            done += 1
            assert isinstance(json.loads(data.decode("utf-8")), dict)
    assert done >= 6


def test_pydantic_model(info):
    fsm = compile_pydantic(Character, info)
    rng = random.Random(3)
    done = 0
    for _ in range(10):
        data, finished = random_walk(fsm, rng, max_steps=400, bias=0.7)
        if finished:
            done += 1
            Character.model_validate_json(data)
    assert done >= 5
    m = fsm.matcher()
    assert m.forced_string() == '{"name": "'


def test_schema_jump_forward(info, hf_tokenizer):
    fsm = compile_constraint("json_schema", json.dumps(NESTED), info)
    m = fsm.matcher()
    assert m.forced_string() == '{"name": "'
    assert m.accept_string('{"name": "Al", "age": 7')
    assert m.forced_string() == ""  # ", " then a choice of properties, or more digits, or "}"
    assert m.accept_string(', "address": {"city": "Oslo", ')
    assert m.forced_string() == '"zip": "'


@pytest.mark.parametrize("schema,word", [
    ({"type": "array", "uniqueItems": True}, "uniqueItems"),
    ({"not": {"type": "object", "properties": {"a": {"type": "integer"}}}}, "not"),
    ({"type": "object", "patternProperties": {"^a": {}, "^b": {}, "^c": {}, "^d": {}}}, "patternProperties"),
    ({"$ref": "https://example.com/other.json"}, "outside"),
    ({"type": "number", "multipleOf": 0.3}, "multipleOf"),
    ({"type": "strin"}, "unknown type"),
    ({"typo_keyword": 1}, "typo_keyword"),
    ({"$dynamicRef": "#x"}, "dynamicRef"),
])
def test_refused_schemas(info, schema, word):
    with pytest.raises(GrammarError, match=word):
        compile_constraint("json_schema", json.dumps(schema), info)


def test_invalid_schema_text(info):
    with pytest.raises(GrammarError, match="not valid JSON"):
        compile_constraint("json_schema", "{type: object}", info)


class Cat(pydantic.BaseModel):
    kind: Literal["cat"]
    lives: int = pydantic.Field(ge=0, le=9)


class Dog(pydantic.BaseModel):
    kind: Literal["dog"]
    good: bool


class Pet(pydantic.BaseModel):
    pet: Cat | Dog = pydantic.Field(discriminator="kind")


def test_discriminated_union_one_of(info):
    schema = Pet.model_json_schema()
    assert "oneOf" in json.dumps(schema)
    fsm = compile_pydantic(Pet, info)
    for text in ['{"pet": {"kind": "cat", "lives": 9}}', '{"pet": {"kind": "dog", "good": true}}']:
        assert fsm.matcher().accept_string(text)
        Pet.model_validate_json(text)
    assert not fsm.matcher().accept_string('{"pet": {"kind": "dog", "lives": 9}}')
    with pytest.raises(GrammarError, match="oneOf"):
        overlapping = {"oneOf": [{"type": "object", "properties": {"a": {"type": "integer"}}},
                                 {"type": "object", "properties": {"b": {"type": "integer"}}}]}
        compile_constraint("json_schema", json.dumps(overlapping), info)


@pytest.mark.parametrize("kind,source", [("json_schema", json.dumps(NESTED)), ("json_object", "")],
                         ids=["nested", "json_object"])
def test_every_state_mask_matches_alive_sets(info, kind, source):
    """Each char state's packed mask (OR of token groups, or its complement for states most big
    groups hold) equals the direct gather ``bit q of sets[tok_set[t]]``, EOS iff accepting."""
    import numpy as np
    fsm = compile_constraint(kind, source, info, precompute=False)
    index, g = fsm.index, fsm.index.groups
    inverted = 0
    for q in range(1, fsm.num_states):
        col = np.unpackbits(index.sets[:, q >> 3:(q >> 3) + 1], axis=1)[:, q & 7].astype(bool)
        want = col[index.tok_set]
        want[info.eos_token_id] = fsm.is_accepting(q)
        got = np.unpackbits(fsm.mask(q).view(np.uint8), bitorder="little")[:info.vocab_size].astype(bool)
        assert np.array_equal(got, want), q
        inverted += 2 * int(col[1:1 + g.num_big].sum()) > g.num_big
    assert inverted > 0  # the complement path ran
