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


def random_walk(fsm, rng: random.Random, max_steps: int = 300, eos_prob: float = 0.3, bias: float = 0.0):
    """Sample uniformly among allowed tokens until EOS/termination; returns (bytes, finished).

    With probability ``bias`` a step samples only among short structural tokens (quotes,
    brackets, digits), so free-text strings end within a few hundred steps.
    """
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
            if bias and rng.random() < bias:
                short = choices[_structural_ids(fsm.info)[choices]]
                choices = short if len(short) else choices
            tid = int(choices[rng.randrange(len(choices))])
        assert m.accept_token(tid)
        if tid == eos:
            return bytes(out), True
        out += fsm.info.token_bytes[tid]
    return bytes(out), False


_STRUCTURAL: dict = {}


def _structural_ids(info):
    """Boolean array over the vocabulary: short tokens with quotes, brackets or digits."""
    table = _STRUCTURAL.get(id(info))
    if table is None:
        import numpy as np
        table = np.array([bool(b) and len(b) <= 3 and any(c in b'"]},:0123456789tfn' for c in b)
                          for b in info.token_bytes])
        _STRUCTURAL[id(info)] = table
    return table
