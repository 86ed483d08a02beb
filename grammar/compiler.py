"""``compile_constraint``: frontend (by kind) → rx IR → DFA → token index, with caches."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import rx
from .cache import MemoryCache, cache_key, default_cache_dir, load_fsm, save_fsm
from .cfg import Grammar
from .errors import GrammarError
from .fsm import compile_rx
from .matcher import TokenFSM
from .pda import CfgFSM
from .tokenizer_info import TokenizerInfo

logger = logging.getLogger(__name__)


def _regex(source: str) -> rx.Node:
    from .regex_parser import parse_regex
    return parse_regex(source)


def _json_schema(source: str) -> rx.Node:
    from .json_schema import schema_text_to_rx
    return schema_text_to_rx(source)


def _json_object(source: str) -> rx.Node:
    from .json_schema import json_object_rx
    return json_object_rx()


def _ebnf(source: str) -> rx.Node | Grammar:
    from .ebnf import ebnf_to_grammar
    return ebnf_to_grammar(source)


# The registry of frontends: kind → source text → rx IR (or a context-free Grammar: recursion).
FRONTENDS: dict[str, Callable[[str], rx.Node | Grammar]] = {
    "regex": _regex, "json_schema": _json_schema, "json_object": _json_object, "ebnf": _ebnf,
}


def to_rx(kind: str, source: str) -> rx.Node | Grammar:
    """Run the frontend of ``kind`` on ``source``."""
    front = FRONTENDS.get(kind)
    if front is None:
        raise GrammarError(f"unknown constraint kind {kind!r}; use one of {sorted(FRONTENDS)}")
    if not isinstance(source, str):
        raise GrammarError(f"a {kind} constraint must be given as text (str), got {type(source).__name__}")
    return front(source)


class GrammarCompiler:
    """Compiles constraints for tokenizers, with an in-memory LRU and an on-disk cache."""

    def __init__(self, cache_dir: Path | None = None, disk: bool = True, capacity: int = 256) -> None:
        self.cache_dir = cache_dir
        self.disk = disk
        self.memory = MemoryCache(capacity)
        self._lock = threading.Lock()  # the runtime may compile from worker threads

    def compile(self, kind: str, source: str, info: TokenizerInfo, precompute: bool = True) -> TokenFSM:
        """Compile (or fetch from the caches); ``precompute`` indexes free-text states now too."""
        if kind not in FRONTENDS:
            raise GrammarError(f"unknown constraint kind {kind!r}; use one of {sorted(FRONTENDS)}")
        if not isinstance(source, str):
            raise GrammarError(f"a {kind} constraint must be given as text (str), got {type(source).__name__}"
                               " (for a schema dict, pass json.dumps(schema))")
        key = cache_key(kind, source, info)
        with self._lock:
            fsm = self.memory.get(key)
        if fsm is not None:
            return fsm
        path = (self.cache_dir or default_cache_dir()) / f"{key}.npz"
        fsm = load_fsm(path, info) if self.disk else None
        if fsm is None:
            t0 = time.perf_counter()
            built = to_rx(kind, source)
            if isinstance(built, Grammar):  # context-free: a pushdown matcher, cached in memory only
                fsm = CfgFSM.build(built, info, kind)
                if precompute:
                    fsm.precompute()
            else:
                fsm = TokenFSM.build(compile_rx(built), info, kind)
                if precompute:
                    fsm.precompute()
                if self.disk:
                    save_fsm(path, fsm)
            logger.debug("compiled %s constraint in %.1f ms (%d states)", kind,
                         (time.perf_counter() - t0) * 1e3, fsm.num_states)
        with self._lock:
            self.memory.put(key, fsm)
        return fsm


# NOTE: the process-wide default compiler (its caches are what makes repeated compiles free).
DEFAULT_COMPILER = GrammarCompiler()


def compile_constraint(kind: str, source: str, info: TokenizerInfo,
                       compiler: GrammarCompiler | None = None, precompute: bool = True) -> TokenFSM:
    """Compile a constraint (``kind`` in regex, json_schema, ebnf, json_object) for ``info``.

    Cached in memory and on disk by sha256(kind, source, tokenizer fingerprint). Raises
    :class:`GrammarError` for anything it cannot express. With ``precompute`` (default) every
    state is indexed now, so mask fills never stall a batch; call it off the critical path.
    ``precompute=False`` compiles faster and indexes free-text states on first visit.
    """
    return (compiler or DEFAULT_COMPILER).compile(kind, source, info, precompute)


def compile_pydantic(model: Any, info: TokenizerInfo) -> TokenFSM:
    """Compile a Pydantic model class through ``model.model_json_schema()``."""
    import json
    if not hasattr(model, "model_json_schema"):
        raise GrammarError(f"{model!r} is not a Pydantic v2 model (no model_json_schema())")
    return compile_constraint("json_schema", json.dumps(model.model_json_schema()), info)
