"""The compiled constraint (:class:`TokenFSM`) and its per-request :class:`Matcher`."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .fsm import DEAD, START, CharDFA
from .token_index import TokenIndex, build_index, index_states
from .tokenizer_info import TokenizerInfo

logger = logging.getLogger(__name__)
PRECOMPUTE_MAX_PAIRS = 4_000_000  # ≈ 32 MB of index per compiled constraint


def bitmask_width(vocab_size: int) -> int:
    """Number of int32 words of a token bitmask row."""
    return (vocab_size + 31) // 32


@dataclass(eq=False)
class TokenFSM:
    """A constraint compiled against one tokenizer: symbol DFA + token index (+ caches).

    Use :meth:`matcher` for a per-request cursor. Rows of free-text states are indexed on first
    use; :meth:`precompute` indexes everything at once (call it off the critical path).
    """

    dfa: CharDFA
    index: TokenIndex
    info: TokenizerInfo
    kind: str = "regex"
    _masks: dict = field(default_factory=dict, repr=False)
    _forced: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, dfa: CharDFA, info: TokenizerInfo, kind: str = "regex") -> TokenFSM:
        return cls(dfa, build_index(dfa, info), info, kind)

    @property
    def vocab_size(self) -> int:
        return self.info.vocab_size

    @property
    def num_states(self) -> int:
        return self.dfa.num_states

    def matcher(self) -> Matcher:
        """A fresh per-request matcher at the start state."""
        return Matcher(self)

    def precompute(self, max_pairs: int = PRECOMPUTE_MAX_PAIRS) -> bool:
        """Index every state now (free-text states are otherwise indexed on first visit).

        Stops once the index holds ``max_pairs`` (token, next state) pairs (8 bytes each), so long
        counted free text (``.{0,300}``) stays lazy instead of taking seconds and 100+ MB.
        Returns whether every state is indexed.
        """
        missing = [s for s in range(1, self.num_states) if s not in self.index.rows]
        stored = sum(len(r[0]) for r in self.index.rows.values())
        for lo in range(0, len(missing), 16):
            if stored > max_pairs:
                logger.info("precompute stopped at %d pairs; %d states stay lazy", stored, len(missing) - lo)
                return False
            chunk = np.array(missing[lo:lo + 16], dtype=np.int32)
            index_states(self.index, self.dfa, self.info, chunk)
            stored += sum(len(self.index.rows[int(s)][0]) for s in chunk)
        return True

    def is_accepting(self, state: int) -> bool:
        return state < self.dfa.num_states and bool(self.dfa.accept[state])

    def row(self, state: int) -> tuple[np.ndarray, np.ndarray]:
        """(sorted allowed token ids, next states) of ``state``, EOS not included."""
        return self.index.row(self.dfa, self.info, state)

    def next_state(self, state: int, token_id: int) -> int:
        toks, nexts = self.row(state)
        i = int(np.searchsorted(toks, token_id))
        return int(nexts[i]) if i < len(toks) and toks[i] == token_id else DEAD

    def mask(self, state: int) -> np.ndarray:
        """The int32 bitmask row of ``state`` (cached; EOS bit set iff accepting)."""
        row = self._masks.get(state)
        if row is None:
            toks = self.row(state)[0]
            bits = np.zeros(bitmask_width(self.vocab_size) * 32, dtype=bool)
            bits[toks] = True
            if self.is_accepting(state):
                bits[self.info.eos_token_id] = True
            row = np.packbits(bits, bitorder="little").view(np.int32)
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


class Matcher:
    """Per-request cursor over a :class:`TokenFSM`: masks, advance, rollback, jump-forward."""

    def __init__(self, fsm: TokenFSM) -> None:
        self.fsm = fsm
        self._states = [START]
        self._eos = [False]

    @property
    def state(self) -> int:
        return self._states[-1]

    def fill_bitmask(self, bitmask_row: np.ndarray) -> None:
        """Write the allowed-token bits into ``bitmask_row`` (int32, ≥ ceil(vocab/32) words)."""
        if self._eos[-1]:
            bitmask_row[:] = 0
            return
        row = self.fsm.mask(self.state)
        bitmask_row[: len(row)] = row
        bitmask_row[len(row):] = 0

    def allowed_token_ids(self) -> np.ndarray:
        """Sorted ids of the tokens allowed now (EOS included when accepting)."""
        if self._eos[-1]:
            return np.zeros(0, dtype=np.int32)
        toks = self.fsm.row(self.state)[0]
        if self.is_accepting():
            toks = np.union1d(toks, [self.fsm.info.eos_token_id]).astype(np.int32)
        return toks

    def accept_token(self, token_id: int) -> bool:
        """Advance by one token; False (and no change) if it is not allowed now."""
        if self._eos[-1]:
            return False
        if token_id == self.fsm.info.eos_token_id:
            if not self.is_accepting():
                return False
            self._states.append(self.state)
            self._eos.append(True)
            return True
        nxt = self.fsm.next_state(self.state, int(token_id))
        if nxt == DEAD:
            return False
        self._states.append(nxt)
        self._eos.append(False)
        return True

    def accept_string(self, text: str | bytes) -> bool:
        """Advance by raw text (e.g. a jump-forward string); counts as one step for rollback."""
        data = text.encode("utf-8") if isinstance(text, str) else text
        if self._eos[-1]:
            return False
        nxt = self.fsm.index.walk_bytes(self.fsm.dfa, self.state, data)
        if nxt is None:
            return False
        self._states.append(nxt)
        self._eos.append(False)
        return True

    def is_accepting(self) -> bool:
        """Whether the text so far is a complete match (EOS allowed now)."""
        return self.fsm.is_accepting(self.state)

    def is_terminated(self) -> bool:
        """EOS was accepted, or no token can follow (the runtime should stop)."""
        return self._eos[-1] or len(self.fsm.row(self.state)[0]) == 0

    def forced_string(self) -> str:
        """Jump-forward: the longest string the constraint forces from here ("" if none)."""
        if self._eos[-1]:
            return ""
        return self.fsm.forced_bytes(self.state).decode("utf-8")

    def rollback(self, num_tokens: int) -> None:
        """Undo the last ``num_tokens`` accepted steps (tokens or strings)."""
        if num_tokens < 0 or num_tokens >= len(self._states):
            raise ValueError(f"cannot roll back {num_tokens} steps; {len(self._states) - 1} were accepted")
        if num_tokens:
            del self._states[-num_tokens:]
            del self._eos[-num_tokens:]

    def reset(self) -> None:
        self._states, self._eos = [START], [False]

    @property
    def num_steps(self) -> int:
        return len(self._states) - 1
