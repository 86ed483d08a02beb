"""grammar — constraints compiled to token-level automata, with jump-forward.

Contract (what the runtime calls)::

    from grammar import GrammarError, compile_constraint, TokenizerInfo
    info = TokenizerInfo.from_hf(hf_tokenizer)      # cached per tokenizer object
    fsm = compile_constraint(kind, source, info)     # kind: "regex" | "json_schema" | "ebnf" | "json_object"
    m = fsm.matcher()                                # per request
    m.fill_bitmask(row)        # int32 [ceil(vocab/32)]; bit i ⇔ token i allowed; EOS bit ⇔ accepting
    m.allowed_token_ids(); m.accept_token(tid) -> bool; m.accept_string(text) -> bool
    m.is_accepting(); m.is_terminated(); m.forced_string(); m.rollback(n)
    grammar.apply_token_bitmask_(logits, bitmask)    # torch, in place, CPU or CUDA

Pipeline: frontend (regex / JSON schema / EBNF) → ``rx`` IR → symbol DFA (minimized) →
token index → matcher. No torch at import time; never imports ``runtime`` or ``sglc``.
"""
from __future__ import annotations

from .compiler import GrammarCompiler, compile_constraint, compile_pydantic, to_rx
from .errors import GrammarError
from .kernels import apply_token_bitmask_
from .matcher import Matcher, TokenFSM, bitmask_width
from .tokenizer_info import TokenizerInfo

INT_REGEX = r"-?(0|[1-9][0-9]*)"
FLOAT_REGEX = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?"
BOOL_REGEX = r"(true|false)"

__all__ = [
    "BOOL_REGEX", "FLOAT_REGEX", "INT_REGEX", "GrammarCompiler", "GrammarError", "Matcher",
    "TokenFSM", "TokenizerInfo", "apply_token_bitmask_", "bitmask_width", "compile_constraint",
    "compile_pydantic", "to_rx",
]
