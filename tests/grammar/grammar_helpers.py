"""Shared constants and helpers of the grammar tests."""
from __future__ import annotations

import random

HP_REGEX = (
    r"""\{\n"""
    r"""    "name": "[\w\d\s]{1,16}",\n"""
    r"""    "house": "(Gryffindor|Slytherin|Ravenclaw|Hufflepuff)",\n"""
    r"""    "blood status": "(Pure-blood|Half-blood|Muggle-born)",\n"""
    r"""    "occupation": "(student|teacher|auror|ministry of magic|death eater|order of the phoenix)",\n"""
    r"""    "wand": \{\n"""
    r"""        "wood": "[\w\d\s]{1,16}",\n"""
    r"""        "core": "[\w\d\s]{1,16}",\n"""
    r"""        "length": [0-9]{1,2}\.[0-9]{0,2}\n"""
    r"""    \},\n"""
    r"""    "alive": "(Alive|Deceased)",\n"""
    r"""    "patronus": "[\w\d\s]{1,16}",\n"""
    r"""    "bogart": "[\w\d\s]{1,16}"\n"""
    r"""\}"""
)
IPV4_REGEX = r"((25[0-5]|2[0-4]\d|[01]?\d\d?)\.){3}(25[0-5]|2[0-4]\d|[01]?\d\d?)"


def random_walk(fsm, rng: random.Random, max_steps: int = 300, eos_prob: float = 0.3):
    """Sample uniformly among allowed tokens until EOS/termination; returns (bytes, finished)."""
    m = fsm.matcher()
    out = bytearray()
    eos = fsm.info.eos_token_id
    for _ in range(max_steps):
        if m.is_terminated():
            return bytes(out), m.is_accepting()
        allowed = m.allowed_token_ids()
        if m.is_accepting() and rng.random() < eos_prob:
            tid = eos
        else:
            choices = allowed[allowed != eos]
            tid = int(choices[rng.randrange(len(choices))])
        assert m.accept_token(tid)
        if tid == eos:
            return bytes(out), True
        out += fsm.info.token_bytes[tid]
    return bytes(out), False
