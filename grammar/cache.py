"""Compiled-constraint caches: in memory (LRU) and on disk (``.npz`` per content hash).

Disk location: ``$SGLC_CACHE_DIR/grammar`` or ``~/.cache/sglc/grammar``. The key is
sha256(format version, kind, source, tokenizer fingerprint); entries are plain arrays (no pickle).
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .alphabet import Alphabet
from .fsm import CharDFA
from .matcher import TokenFSM
from .token_index import TokenIndex
from .tokenizer_info import TokenizerInfo

logger = logging.getLogger(__name__)
FORMAT_VERSION = "sglc-grammar-3"  # 2: recursive ebnf/$ref are pushdown (never on disk); 3: alive-set index


def cache_key(kind: str, source: str, info: TokenizerInfo) -> str:
    h = hashlib.sha256()
    for part in (FORMAT_VERSION, kind, source, info.fingerprint):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


def default_cache_dir() -> Path:
    """``$SGLC_CACHE_DIR/grammar`` (default ``~/.cache/sglc/grammar``)."""
    root = os.environ.get("SGLC_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "sglc")
    return Path(root) / "grammar"


class MemoryCache:
    """A small LRU of compiled FSMs, shared by all requests of one process."""

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, TokenFSM] = OrderedDict()

    def get(self, key: str) -> TokenFSM | None:
        fsm = self._items.get(key)
        if fsm is not None:
            self._items.move_to_end(key)
        return fsm

    def put(self, key: str, fsm: TokenFSM) -> None:
        self._items[key] = fsm
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)


def save_fsm(path: Path, fsm: TokenFSM) -> None:
    """Write ``fsm`` as arrays (atomic rename); failures are logged, not raised."""
    arrays = {
        "trans": fsm.dfa.trans, "accept": fsm.dfa.accept, "atom_starts": fsm.dfa.alphabet.atom_starts,
        "atom_sym": fsm.dfa.alphabet.atom_sym, "tok_set": fsm.index.tok_set, "sets": fsm.index.sets,
        "meta": np.array([fsm.kind, fsm.info.fingerprint]),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError as e:
        logger.warning("could not write the grammar cache %s: %s", path, e)


def load_fsm(path: Path, info: TokenizerInfo) -> TokenFSM | None:
    """Read an FSM written by :func:`save_fsm`; None if absent, unreadable or for another vocab."""
    try:
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError) as e:
        if path.exists():
            logger.warning("ignoring unreadable grammar cache %s: %s", path, e)
        return None
    kind, fingerprint = (str(x) for x in a["meta"])
    if fingerprint != info.fingerprint:
        return None
    num_syms = int(a["trans"].shape[1])
    dfa = CharDFA(a["trans"], a["accept"], Alphabet(a["atom_starts"], a["atom_sym"], num_syms, {}))
    index = TokenIndex(dfa.num_states, a["tok_set"], a["sets"])
    return TokenFSM(dfa, index, info, kind)
