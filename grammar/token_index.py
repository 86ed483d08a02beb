"""Token index: which tokens each DFA state allows, and the state each one leads to.

Built *backward*, all tokens at once: the set of states from which a token's suffix survives is a
function of its next symbol and the set for the suffix after it, ``A_i = {q : trans[q, s_i] ∈
A_i+1}``. These *alive sets* (bit rows over DFA states) are few (hundreds; they only record
where a suffix matches literal text or fits a counter), so each one is computed once, memoized on
``(set, symbol)``, and every token is mapped to the set of states that allow it in ~max-token-length
numpy gathers over the vocabulary. A state's mask is then one gather, ``bit[q] of sets[tok_set]``,
done on first visit (tens of µs). Next states are walked per accepted token (a few characters).

Tokens that end inside a multi-byte UTF-8 character lead to *mid states* ``(state, pending
bytes)``, allowed only when some allowed character starts with those bytes; tokens starting with
continuation bytes are allowed only from mid states, whose rows are built on first use.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .fsm import DEAD, CharDFA
from .tokenizer_info import TokenData, TokenizerInfo, split_utf8, tail_interval

NEVER = 0  # alive-set id of tokens no char state allows (the empty set)
BIG_GROUP = 8  # sets with more tokens are OR-ed into masks as packed rows, not scattered...
MAX_BIG_ROWS = 512  # ...up to this many (the largest sets; 6 KB each for a 49k vocabulary)
_CHUNK_CELLS = 1 << 22  # bools per temporary [sets, states] block


@dataclass(eq=False)
class TokenIndex:
    """Per token its alive set; per set a packed bit row over char states (see the module doc).

    ``tok_set`` int64 [vocab]; ``sets`` uint8 [num_sets, ceil(S/8)] (``np.packbits`` rows). Next states ≥
    ``num_char_states`` are mid states ``mid[i] = (char state, pending bytes)``.
    """

    num_char_states: int
    tok_set: np.ndarray
    sets: np.ndarray
    nonempty: np.ndarray = field(init=False)
    groups: _Groups = field(init=False)
    mid: list = field(default_factory=list)
    mid_ids: dict = field(default_factory=dict)
    mid_rows: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        used = np.flatnonzero(np.bincount(self.tok_set, minlength=len(self.sets)))
        union = np.bitwise_or.reduce(self.sets[used], axis=0) if len(used) else self.sets[0]
        self.nonempty = np.unpackbits(union, count=self.num_char_states).astype(bool)
        self.groups = _Groups.build(self.tok_set, len(self.sets))

    def allowed(self, dfa: CharDFA, info: TokenizerInfo, state: int) -> np.ndarray:
        """Bool [vocab]: the tokens allowed from ``state`` (char or mid state), EOS not included."""
        bits = self.mask_bytes(dfa, info, state)
        return np.unpackbits(bits, count=len(self.tok_set), bitorder="little").view(bool)

    def mask_bytes(self, dfa: CharDFA, info: TokenizerInfo, state: int) -> np.ndarray:
        """uint8 [4 * ceil(vocab/32)]: the allowed tokens of ``state`` as little-endian bits.

        NOTE: a char state's mask is the union of the token groups of the alive sets holding it:
        big groups (sets 1..nb, the sets are sorted by size) are OR-ed as packed rows, small ones
        scattered from a padded table: ~10 numpy calls, no O(vocab) gather (tens of µs).
        """
        width = 4 * ((len(self.tok_set) + 31) // 32)
        if state >= self.num_char_states:
            flags = np.zeros(8 * width, dtype=bool)
            flags[self._mid_row(dfa, info, state)[0]] = True
            return np.packbits(flags, bitorder="little")
        g = self.groups
        col = (self.sets[:, state >> 3] >> (7 - (state & 7))) & 1  # bit ``state`` of every set
        big = col[1:1 + g.num_big]
        # NOTE: a state held by most big sets (free text: a JSON string's inside) is built from the
        # complement: the allowed tokens are the indexable ones minus the groups of the sets that do
        # *not* hold it, so at most half of the big rows are ever OR-ed (they are 6 KB each)
        invert = 2 * int(np.count_nonzero(big)) > g.num_big
        want = 0 if invert else 1
        flags = np.zeros(8 * width + 1, dtype=bool)  # the last slot takes the table's padding
        flags[g.small_tok[np.flatnonzero(col[1 + g.num_big:] == want)]] = True
        out = np.packbits(flags[:-1], bitorder="little")
        rows = np.flatnonzero(big == want)
        if len(rows):
            out |= np.bitwise_or.reduce(g.big_bits[rows], axis=0)
        if invert:
            np.bitwise_and(g.indexed, ~out, out=out)
        return out

    def has_tokens(self, dfa: CharDFA, info: TokenizerInfo, state: int) -> bool:
        if state >= self.num_char_states:
            return len(self._mid_row(dfa, info, state)[0]) > 0
        return bool(self.nonempty[state])

    def next_state(self, dfa: CharDFA, info: TokenizerInfo, state: int, token_id: int) -> int:
        """The state after ``token_id`` from ``state``, or DEAD if it is not allowed."""
        if state >= self.num_char_states:
            toks, nexts = self._mid_row(dfa, info, state)
            i = int(np.searchsorted(toks, token_id))
            return int(nexts[i]) if i < len(toks) and toks[i] == token_id else DEAD
        if not 0 <= token_id < len(self.tok_set):
            return DEAD
        sid = int(self.tok_set[token_id])
        if not (self.sets[sid, state >> 3] >> (7 - (state & 7))) & 1:
            return DEAD
        nxt = self.walk_bytes(dfa, state, info.token_bytes[token_id])
        assert nxt is not None, "alive set and walk disagree"
        return nxt

    def row(self, dfa: CharDFA, info: TokenizerInfo, state: int) -> tuple[np.ndarray, np.ndarray]:
        """(sorted allowed token ids, next states) of ``state``: a vectorized walk (tests, tools)."""
        if state >= self.num_char_states:
            return self._mid_row(dfa, info, state)
        toks = np.flatnonzero(self.allowed(dfa, info, state)).astype(np.int32)
        return toks, walk_tokens(self, dfa, info.token_data(), state, toks)

    def mid_state(self, q: int, pending: bytes) -> int:
        key = (q, pending)
        m = self.mid_ids.get(key)
        if m is None:
            m = self.mid_ids[key] = self.num_char_states + len(self.mid)
            self.mid.append(key)
        return m

    def _mid_row(self, dfa: CharDFA, info: TokenizerInfo, state: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens starting with UTF-8 continuation bytes that complete the pending character."""
        row = self.mid_rows.get(state)
        if row is None:
            q, pending = self.mid[state - self.num_char_states]
            toks, nexts = [], []
            for tid, data in sorted(info.token_data().cont.items()):
                nxt = self.walk_bytes(dfa, q, pending + data)
                if nxt is not None:
                    toks.append(tid)
                    nexts.append(nxt)
            row = self.mid_rows[state] = (np.asarray(toks, dtype=np.int32), np.asarray(nexts, dtype=np.int32))
        return row

    def walk_bytes(self, dfa: CharDFA, q: int, data: bytes) -> int | None:
        """State after ``data`` from ``q`` (None if rejected); may add a mid state."""
        if q >= self.num_char_states:
            q, pending = self.mid[q - self.num_char_states]
            data = pending + data
        text, tail = split_utf8(data)
        if text is None:
            return None
        q = dfa.run(text, q)
        if q == DEAD:
            return None
        if not tail:
            return q
        lo, hi = tail_interval(tail)
        if not _tail_syms_live(dfa, lo, hi, np.array([q]))[0]:
            return None
        return self.mid_state(q, tail)


def _tail_syms_live(dfa: CharDFA, lo: int, hi: int, states: np.ndarray) -> np.ndarray:
    """Bool per state: some encodable code point in [lo, hi] has a live transition."""
    alpha = dfa.alphabet
    a0 = int(np.searchsorted(alpha.atom_starts, lo, side="right")) - 1
    a1 = int(np.searchsorted(alpha.atom_starts, hi, side="right")) - 1
    atoms = np.arange(a0, a1 + 1)
    syms = np.unique(alpha.atom_sym[atoms[alpha.live_atoms()[atoms]]])
    return (dfa.trans[states][:, syms] != DEAD).any(axis=1)


@dataclass(frozen=True, eq=False)
class _Groups:
    """The tokens of each alive set: sets 1..num_big as packed bit rows ``big_bits``, the others
    as rows of ``small_tok`` (token ids padded with ``8 * width``, a spare slot)."""

    num_big: int
    big_bits: np.ndarray
    small_tok: np.ndarray
    indexed: np.ndarray  # packed: the tokens some state allows (alive set not NEVER)

    @classmethod
    def build(cls, tok_set: np.ndarray, num_sets: int) -> _Groups:
        counts = np.bincount(tok_set, minlength=num_sets)
        num_big = min(int(np.count_nonzero(counts[1:] > BIG_GROUP)), MAX_BIG_ROWS)
        width = 4 * ((len(tok_set) + 31) // 32)
        toks = np.flatnonzero(tok_set != NEVER)
        sid = tok_set[toks]
        big = sid <= num_big
        flags = np.zeros((num_big, 8 * width), dtype=bool)
        flags[sid[big] - 1, toks[big]] = True
        toks, sid = toks[~big], sid[~big]
        srt = np.argsort(sid, kind="stable")
        toks, sid = toks[srt], sid[srt] - (1 + num_big)
        starts = np.searchsorted(sid, np.arange(num_sets - 1 - num_big))
        table = np.full((num_sets - 1 - num_big, int(counts[1 + num_big:].max(initial=0))), 8 * width, dtype=np.int64)
        table[sid, np.arange(len(sid)) - starts[sid]] = toks
        indexed = np.zeros(8 * width, dtype=bool)
        indexed[:len(tok_set)] = tok_set != NEVER
        return cls(num_big, np.packbits(flags, axis=1, bitorder="little"), table,
                   np.packbits(indexed, bitorder="little"))


class _SetTable:
    """Distinct bit rows over states (packed), with ids; id 0 is the empty set."""

    def __init__(self, num_states: int) -> None:
        self.num_states = num_states
        width = (num_states + 7) // 8
        self.rows = np.zeros((64, width), dtype=np.uint8)
        self.ids: dict[bytes, int] = {bytes(width): NEVER}
        self.size = 1

    def add(self, bits: np.ndarray) -> np.ndarray:
        """Ids of the bool rows ``bits`` [n, S] (new rows are appended)."""
        packed = np.packbits(bits, axis=1)
        out = np.empty(len(packed), dtype=np.int32)
        for i, row in enumerate(packed):
            key = row.tobytes()
            sid = self.ids.get(key)
            if sid is None:
                sid = self.ids[key] = self.size
                if self.size == len(self.rows):
                    self.rows = np.concatenate([self.rows, np.zeros_like(self.rows)])
                self.rows[self.size] = row
                self.size += 1
            out[i] = sid
        return out

    def unpack(self, ids: np.ndarray) -> np.ndarray:
        return np.unpackbits(self.rows[ids], axis=1, count=self.num_states).view(bool)


def build_index(dfa: CharDFA, info: TokenizerInfo) -> TokenIndex:
    """The alive set of every token (backward over token characters, memoized on (set, symbol))."""
    td = info.token_data()
    num_states, num_syms = dfa.trans.shape
    trans_t = np.ascontiguousarray(dfa.trans.T).astype(np.int64)  # [K, S]: one row per symbol
    table = _SetTable(num_states)
    order, counts, step_cps = _by_length(info, td)
    # NOTE: one gather maps every (step, token) character to its symbol (cps are few and cached)
    step_sym = dfa.alphabet.symbols_of(td.cps)[step_cps] if len(step_cps) else step_cps
    final = _initial_sets(dfa, td, table)[order].astype(np.int64)
    cur = final[:counts[0]] if len(counts) else final[:0]
    memo = np.full(64 * num_syms, -1, dtype=np.int64)  # flat [set, symbol] → set
    memo[NEVER * num_syms:(NEVER + 1) * num_syms] = NEVER
    pos = 0
    for j, n in enumerate(counts.tolist()):  # step j: the j-th character from the end
        keys = cur * num_syms + step_sym[pos:pos + n]
        pos += n
        got = memo[keys]
        miss = got < 0
        if miss.any():
            seen = np.zeros(len(memo), dtype=bool)
            seen[keys[miss]] = True
            new = np.flatnonzero(seen)
            ids = _extend(table, trans_t, new // num_syms, new % num_syms)
            if len(memo) < table.size * num_syms:
                memo = np.concatenate([memo, np.full(2 * table.size * num_syms, -1, dtype=np.int64)])
            memo[new] = ids
            got = memo[keys]
        nxt = int(counts[j + 1]) if j + 1 < len(counts) else 0
        final[nxt:n] = got[nxt:]  # tokens of exactly j + 1 characters are done
        cur = got[:nxt]
    tok_set = np.zeros(info.vocab_size, dtype=np.int64)
    tok_set[td.ids[order]] = final
    return _by_size(num_states, tok_set, table.rows[:table.size])


def _by_size(num_states: int, tok_set: np.ndarray, sets: np.ndarray) -> TokenIndex:
    """Renumber the sets by token count, largest first (NEVER stays 0): see ``mask_bytes``."""
    counts = np.bincount(tok_set, minlength=len(sets))
    counts[NEVER] = len(tok_set) + 1
    order = np.argsort(-counts, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return TokenIndex(num_states, rank[tok_set], sets[order])


def _by_length(info: TokenizerInfo, td: TokenData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Once per vocabulary: tokens longest first (those still walking at step j are a prefix),
    ``counts[j]`` = tokens longer than j characters, and the code point index (into ``td.cps``)
    of each such token's j-th character from the end, steps concatenated."""
    got = info._memo.get("by_length")
    if got is None:
        order = np.argsort(-td.clen, kind="stable")
        clen, last = td.clen[order], td.off[1:][order] - 1
        counts = np.searchsorted(-clen, -np.arange(int(clen.max(initial=0))), side="left")
        steps = [td.cp_idx[last[:n] - j] for j, n in enumerate(counts.tolist())]
        step_cps = np.concatenate(steps) if steps else np.zeros(0, np.int64)
        got = info._memo["by_length"] = (order, counts, step_cps.astype(np.int64))
    return got


def _extend(table: _SetTable, trans_t: np.ndarray, xs: np.ndarray, ss: np.ndarray) -> np.ndarray:
    """Id of {q : trans[q, ss[u]] ∈ set xs[u]} for each u (chunked: bounded temporary memory)."""
    out = np.empty(len(xs), dtype=np.int32)
    num_states = trans_t.shape[1]
    step = max(1, _CHUNK_CELLS // num_states)
    for lo in range(0, len(xs), step):
        src = table.unpack(xs[lo:lo + step]).reshape(-1)
        rows = np.arange(len(src) // num_states, dtype=np.int64)[:, None] * num_states
        out[lo:lo + step] = table.add(src[trans_t[ss[lo:lo + step]] + rows])
    return out


def _initial_sets(dfa: CharDFA, td: TokenData, table: _SetTable) -> np.ndarray:
    """Per token (``TokenData`` order): the states that accept its partial UTF-8 tail (all live
    states when it has none)."""
    alive = np.ones((1, dfa.num_states), dtype=bool)
    alive[0, DEAD] = False
    out = np.full(len(td.ids), table.add(alive)[0], dtype=np.int32)
    tails = np.flatnonzero(td.tail_lo >= 0)
    if len(tails):
        alpha = dfa.alphabet
        a0 = np.searchsorted(alpha.atom_starts, td.tail_lo[tails], side="right") - 1
        a1 = np.searchsorted(alpha.atom_starts, td.tail_hi[tails], side="right") - 1
        # per tail: which symbols hold a live (encodable) atom in its range, via prefix counts
        onehot = np.zeros((len(alpha.atom_sym) + 1, alpha.num_symbols), dtype=np.int32)
        onehot[np.flatnonzero(alpha.live_atoms()) + 1, alpha.atom_sym[alpha.live_atoms()]] = 1
        np.cumsum(onehot, axis=0, out=onehot)
        syms = (onehot[a1 + 1] - onehot[a0]) > 0
        uniq, inv = np.unique(syms, axis=0, return_inverse=True)
        live = (dfa.trans != DEAD).astype(np.float32)
        rows = (live @ uniq.T.astype(np.float32)) > 0  # [S, distinct symbol sets]
        out[tails] = table.add(np.ascontiguousarray(rows.T))[inv.reshape(-1)]
    return out


def walk_tokens(index: TokenIndex, dfa: CharDFA, td: TokenData, state: int, toks: np.ndarray) -> np.ndarray:
    """Next states of the allowed tokens ``toks`` from char state ``state`` (vectorized walk)."""
    pos = np.full(len(index.tok_set), -1, dtype=np.int64)
    pos[td.ids] = np.arange(len(td.ids))
    p = pos[toks]
    cur = np.full(len(toks), state, dtype=np.int32)
    clen, start = td.clen[p], td.off[p]
    flat_sym = dfa.alphabet.symbols_of(td.cps)[td.cp_idx]
    for j in range(int(clen.max()) if len(p) else 0):
        more = np.flatnonzero(clen > j)
        cur[more] = dfa.trans[cur[more], flat_sym[start[more] + j]]
    for i in np.flatnonzero(td.tail_lo[p] >= 0).tolist():
        cur[i] = index.mid_state(int(cur[i]), td.tail_bytes[int(toks[i])])
    return cur
