"""The compiled constraint (:class:`TokenFSM`) and its per-request :class:`Matcher`."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .fsm import DEAD, START, CharDFA
from .token_index import TokenIndex, build_index
from .tokenizer_info import TokenizerInfo

logger = logging.getLogger(__name__)
PRECOMPUTE_MAX_BYTES = 64 << 20  # packed mask rows kept per compiled constraint by precompute()


def bitmask_width(vocab_size: int) -> int:
    """Number of int32 words of a token bitmask row."""
    return (vocab_size + 31) // 32


@dataclass(eq=False)
class TokenFSM:
    """A constraint compiled against one tokenizer: symbol DFA + token index (+ caches).

    Use :meth:`matcher` for a per-request cursor. Every state's allowed tokens are known after
    :meth:`build`; a state's bitmask row is packed on first use (tens of µs) and cached;
    :meth:`precompute` packs all of them at once.
    """

    dfa: CharDFA
    index: TokenIndex
    info: TokenizerInfo
    kind: str = "regex"
    _masks: dict = field(default_factory=dict, repr=False)
    _forced: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, dfa: CharDFA, info: TokenizerInfo, kind: str = "regex") -> TokenFSM:
        fsm = cls(dfa, build_index(dfa, info), info, kind)
        fsm.mask(START)  # NOTE: every request's first mask (~50-100 µs cold): packed with the compile
        return fsm

    @property
    def vocab_size(self) -> int:
        return self.info.vocab_size

    @property
    def num_states(self) -> int:
        return self.dfa.num_states

    def matcher(self) -> Matcher:
        """A fresh per-request matcher at the start state."""
        return Matcher(self)

    def precompute(self, max_bytes: int = PRECOMPUTE_MAX_BYTES) -> bool:
        """Pack every char state's bitmask row now (otherwise packed on first visit).

        Stops once the rows take ``max_bytes`` (big automata stay lazy); returns whether every
        state's row is packed.
        """
        row_bytes = bitmask_width(self.vocab_size) * 4
        for state in range(1, self.num_states):
            if state not in self._masks and len(self._masks) * row_bytes >= max_bytes:
                logger.info("precompute stopped at %d rows; the rest stay lazy", len(self._masks))
                return False
            self.mask(state)
        return True

    def is_accepting(self, state: int) -> bool:
        return state < self.dfa.num_states and bool(self.dfa.accept[state])

    def row(self, state: int) -> tuple[np.ndarray, np.ndarray]:
        """(sorted allowed token ids, next states) of ``state``, EOS not included (a full walk:
        for tests and tools; the matcher uses :meth:`mask` and :meth:`next_state`)."""
        return self.index.row(self.dfa, self.info, state)

    def next_state(self, state: int, token_id: int) -> int:
        """The state after ``token_id`` (DEAD if it is not allowed)."""
        return self.index.next_state(self.dfa, self.info, state, token_id)

    def has_tokens(self, state: int) -> bool:
        """Whether any token (EOS aside) is allowed from ``state``."""
        return self.index.has_tokens(self.dfa, self.info, state)

    def mask(self, state: int) -> np.ndarray:
        """The int32 bitmask row of ``state`` (cached; EOS bit set iff accepting)."""
        row = self._masks.get(state)
        if row is None:
            bits = self.index.mask_bytes(self.dfa, self.info, state)
            if self.is_accepting(state):
                eos = self.info.eos_token_id
                bits[eos >> 3] |= 1 << (eos & 7)
            row = bits.view(np.int32)
            self._masks[state] = row
        return row

    def forced_bytes(self, state: int) -> bytes:
        """The bytes every continuation from ``state`` must start with (complete characters only)."""
        cached = self._forced.get(state)
        if cached is not None:
            return cached
        out: list[str] = []
        if state < self.dfa.num_states:
            alpha = self.dfa.alphabet
            sizes, firsts = alpha.symbol_sizes(), alpha.first_cp()
            seen = set()
            q = state
            while not self.dfa.accept[q] and q not in seen:
                seen.add(q)
                live = np.flatnonzero(self.dfa.trans[q] != DEAD)
                if len(live) != 1 or sizes[live[0]] != 1:
                    break
                out.append(chr(int(firsts[live[0]])))
                q = int(self.dfa.trans[q, live[0]])
        cached = self._forced[state] = "".join(out).encode("utf-8")
        return cached


class Cursor:
    """A per-request position in a compiled constraint, with one history entry per accepted step.

    The shared half of :class:`Matcher` (regex/JSON DFAs) and :class:`grammar.cfg_matcher.CfgMatcher`
    (pushdown grammars): EOS handling, rollback, reset and the mask/jump-forward plumbing. Subclasses
    implement the state-space hooks ``_mask_row``, ``_allowed``, ``_next``, ``_walk``, ``_has_tokens``.
    """

    def __init__(self, fsm, start) -> None:
        self.fsm = fsm
        self._start = start
        self._states = [start]
        self._eos = [False]

    # -- hooks ------------------------------------------------------------------------------------
    def _mask_row(self, state) -> np.ndarray:
        raise NotImplementedError

    def _allowed(self, state) -> np.ndarray:
        raise NotImplementedError

    def _next(self, state, token_id: int):
        """The state after ``token_id`` (None if it is not allowed)."""
        raise NotImplementedError

    def _walk(self, state, data: bytes):
        """The state after raw bytes (None if they are not allowed)."""
        raise NotImplementedError

    def _has_tokens(self, state) -> bool:
        raise NotImplementedError

    # -- interface --------------------------------------------------------------------------------
    @property
    def state(self):
        return self._states[-1]

    def fill_bitmask(self, bitmask_row: np.ndarray) -> None:
        """Write the allowed-token bits into ``bitmask_row`` (int32, ≥ ceil(vocab/32) words)."""
        if self._eos[-1]:
            bitmask_row[:] = 0
            return
        row = self._mask_row(self.state)
        bitmask_row[: len(row)] = row
        bitmask_row[len(row):] = 0

    def allowed_token_ids(self) -> np.ndarray:
        """Sorted ids of the tokens allowed now (EOS included when accepting)."""
        if self._eos[-1]:
            return np.zeros(0, dtype=np.int32)
        toks = self._allowed(self.state)
        if self.is_accepting():
            toks = np.union1d(toks, [self.fsm.info.eos_token_id])
        return toks.astype(np.int32)

    def accept_token(self, token_id: int) -> bool:
        """Advance by one token; False (and no change) if it is not allowed now."""
        if self._eos[-1]:
            return False
        if token_id == self.fsm.info.eos_token_id:
            if not self.is_accepting():
                return False
            self._push(self.state, True)
            return True
        nxt = self._next(self.state, int(token_id))
        if nxt is None:
            return False
        self._push(nxt, False)
        return True

    def accept_string(self, text: str | bytes) -> bool:
        """Advance by raw text (e.g. a jump-forward string); counts as one step for rollback."""
        data = text.encode("utf-8") if isinstance(text, str) else text
        if self._eos[-1]:
            return False
        nxt = self._walk(self.state, data)
        if nxt is None:
            return False
        self._push(nxt, False)
        return True

    def _push(self, state, eos: bool) -> None:
        self._states.append(state)
        self._eos.append(eos)

    def is_accepting(self) -> bool:
        """Whether the text so far is complete (EOS allowed now)."""
        return self.fsm.is_accepting(self.state)

    def is_terminated(self) -> bool:
        """EOS was accepted, or no token can follow (the runtime should stop)."""
        return self._eos[-1] or not self._has_tokens(self.state)

    def forced_string(self) -> str:
        """Jump-forward: the longest string (whole characters) the constraint forces from here ("" if none)."""
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


class Matcher(Cursor):
    """Per-request cursor over a :class:`TokenFSM`: masks, advance, rollback, jump-forward."""

    def __init__(self, fsm: TokenFSM) -> None:
        super().__init__(fsm, START)

    def _mask_row(self, state: int) -> np.ndarray:
        return self.fsm.mask(state)

    def _allowed(self, state: int) -> np.ndarray:
        return np.flatnonzero(self.fsm.index.allowed(self.fsm.dfa, self.fsm.info, state))

    def _next(self, state: int, token_id: int) -> int | None:
        nxt = self.fsm.next_state(state, token_id)
        return None if nxt == DEAD else nxt

    def _walk(self, state: int, data: bytes) -> int | None:
        return self.fsm.index.walk_bytes(self.fsm.dfa, state, data)

    def _has_tokens(self, state: int) -> bool:
        return self.fsm.has_tokens(state)
