"""The per-request cursor over a :class:`grammar.pda.CfgFSM` (same interface as :class:`Matcher`)."""
from __future__ import annotations

import numpy as np

from .matcher import Cursor
from .pda import CfgFSM


class CfgMatcher(Cursor):
    """Masks, advance, rollback and jump-forward for a context-free constraint.

    The state is a kernel (a frozenset of stacks); the history keeps one kernel per accepted step.
    """

    def __init__(self, fsm: CfgFSM) -> None:
        super().__init__(fsm, fsm.runner.start_kernel())

    def _mask_row(self, state: frozenset) -> np.ndarray:
        return self.fsm.mask_row(state)

    def _allowed(self, state: frozenset) -> np.ndarray:
        return self.fsm.allowed(state)

    def _next(self, state: frozenset, token_id: int) -> frozenset | None:
        info = self.fsm.info
        if not 0 <= token_id < info.vocab_size:
            return None
        data = info.token_bytes[token_id]
        return self._walk(state, data) if data else None

    def _walk(self, state: frozenset, data: bytes) -> frozenset | None:
        return self.fsm.advance(state, data) or None

    def _has_tokens(self, state: frozenset) -> bool:
        return bool(len(self.fsm.allowed(state)))
