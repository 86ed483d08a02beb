"""The per-request cursor over a :class:`grammar.pda.CfgFSM` (same interface as :class:`Matcher`)."""
from __future__ import annotations

import numpy as np

from .pda import CfgFSM


class CfgMatcher:
    """Masks, advance, rollback and jump-forward for a context-free constraint.

    The state is a kernel (a frozenset of stacks); the history keeps one kernel per accepted step.
    """

    def __init__(self, fsm: CfgFSM) -> None:
        self.fsm = fsm
        self._start = fsm.runner.start_kernel()
        self._states = [self._start]
        self._eos = [False]

    @property
    def state(self) -> frozenset:
        return self._states[-1]

    def fill_bitmask(self, bitmask_row: np.ndarray) -> None:
        """Write the allowed-token bits into ``bitmask_row`` (int32, ≥ ceil(vocab/32) words)."""
        if self._eos[-1]:
            bitmask_row[:] = 0
            return
        row = self.fsm.mask_row(self.state)
        bitmask_row[: len(row)] = row
        bitmask_row[len(row):] = 0

    def allowed_token_ids(self) -> np.ndarray:
        """Sorted ids of the tokens allowed now (EOS included when accepting)."""
        if self._eos[-1]:
            return np.zeros(0, dtype=np.int32)
        toks = self.fsm.allowed(self.state)
        if self.is_accepting():
            toks = np.union1d(toks, [self.fsm.info.eos_token_id])
        return toks.astype(np.int32)

    def accept_token(self, token_id: int) -> bool:
        """Advance by one token; False (and no change) if it is not allowed now."""
        if self._eos[-1]:
            return False
        info = self.fsm.info
        if token_id == info.eos_token_id:
            if not self.is_accepting():
                return False
            self._push(self.state, True)
            return True
        if not 0 <= token_id < info.vocab_size:
            return False
        data = info.token_bytes[token_id]
        return bool(data) and self._advance(data)

    def accept_string(self, text: str | bytes) -> bool:
        """Advance by raw text (e.g. a jump-forward string); counts as one step for rollback."""
        data = text.encode("utf-8") if isinstance(text, str) else text
        return not self._eos[-1] and self._advance(data)

    def _advance(self, data: bytes) -> bool:
        kernel = self.fsm.advance(self.state, data)
        if not kernel:
            return False
        self._push(kernel, False)
        return True

    def _push(self, kernel: frozenset, eos: bool) -> None:
        self._states.append(kernel)
        self._eos.append(eos)

    def is_accepting(self) -> bool:
        """Whether the text so far is a complete sentence (EOS allowed now)."""
        return self.fsm.is_accepting(self.state)

    def is_terminated(self) -> bool:
        """EOS was accepted, or no token can follow (the runtime should stop)."""
        return self._eos[-1] or not len(self.fsm.allowed(self.state))

    def forced_string(self) -> str:
        """Jump-forward: the longest string (whole characters) the grammar forces from here."""
        if self._eos[-1]:
            return ""
        data = self.fsm.forced_bytes(self.state)
        for cut in range(len(data), max(len(data) - 4, -1), -1):
            try:
                return data[:cut].decode("utf-8")
            except UnicodeDecodeError:
                continue
        return ""

    def rollback(self, num_tokens: int) -> None:
        """Undo the last ``num_tokens`` accepted steps (tokens or strings)."""
        if num_tokens < 0 or num_tokens >= len(self._states):
            raise ValueError(f"cannot roll back {num_tokens} steps; {len(self._states) - 1} were accepted")
        if num_tokens:
            del self._states[-num_tokens:]
            del self._eos[-num_tokens:]

    def reset(self) -> None:
        self._states, self._eos = [self._start], [False]

    @property
    def num_steps(self) -> int:
        return len(self._states) - 1
