"""Token index: for each DFA state, the allowed tokens and the state each one leads to.

Tokens are walked over the symbol DFA, all states at once, with numpy: tokens are grouped by
their first symbol (a depth-1 trie), then every live (state, token) pair advances one character
per step and dead pairs are dropped. Tokens that end inside a multi-byte UTF-8 character lead to
*mid states* ``(state, pending bytes)``; those rare states get their rows lazily (see
:meth:`TokenIndex.mid_row`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .fsm import DEAD, CharDFA
from .tokenizer_info import TokenizerInfo, split_utf8, tail_interval

# NOTE: states whose first step alone admits more tokens than this (free-text states) are
# indexed lazily, on first visit (a few ms each); all others are indexed at compile time.
EAGER_PAIRS_PER_STATE = 6000


@dataclass(eq=False)
class TokenIndex:
    """Per state: (sorted allowed token ids, next states), computed eagerly or on first use.

    Next states ≥ ``num_char_states`` are mid states ``mid[i] = (char state, pending bytes)``.
    """

    num_char_states: int
    rows: dict = field(default_factory=dict)
    mid: list = field(default_factory=list)
    mid_ids: dict = field(default_factory=dict)

    def row(self, dfa: CharDFA, info: TokenizerInfo, state: int) -> tuple[np.ndarray, np.ndarray]:
        """(sorted allowed token ids, next states) of ``state`` (char or mid state)."""
        cached = self.rows.get(state)
        if cached is None:
            if state < self.num_char_states:
                index_states(self, dfa, info, np.array([state], dtype=np.int32))
            else:
                self.rows[state] = self._mid_row(dfa, info, state)
            cached = self.rows[state]
        return cached

    def mid_state(self, q: int, pending: bytes) -> int:
        key = (q, pending)
        m = self.mid_ids.get(key)
        if m is None:
            m = self.mid_ids[key] = self.num_char_states + len(self.mid)
            self.mid.append(key)
        return m

    def _mid_row(self, dfa: CharDFA, info: TokenizerInfo, state: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens starting with UTF-8 continuation bytes that complete the pending character."""
        q, pending = self.mid[state - self.num_char_states]
        toks, nexts = [], []
        for tid, data in sorted(info.token_data().cont.items()):
            nxt = self.walk_bytes(dfa, q, pending + data)
            if nxt is not None:
                toks.append(tid)
                nexts.append(nxt)
        return np.asarray(toks, dtype=np.int32), np.asarray(nexts, dtype=np.int32)

    def walk_bytes(self, dfa: CharDFA, q: int, data: bytes) -> int | None:
        """State after ``data`` from char state ``q`` (None if rejected); may add a mid state."""
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
        if not _tail_allowed(dfa, q, lo, hi):
            return None
        return self.mid_state(q, tail)


def _tail_allowed(dfa: CharDFA, q: int, lo: int, hi: int) -> bool:
    alpha = dfa.alphabet
    a0 = int(np.searchsorted(alpha.atom_starts, lo, side="right")) - 1
    a1 = int(np.searchsorted(alpha.atom_starts, hi, side="right")) - 1
    atoms = np.arange(a0, a1 + 1)
    atoms = atoms[alpha.live_atoms()[atoms]]
    return bool((dfa.trans[q, alpha.atom_sym[atoms]] != DEAD).any())


def build_index(dfa: CharDFA, info: TokenizerInfo) -> TokenIndex:
    """Index the narrow states now; broad (free-text) states wait for their first visit."""
    td = info.token_data()
    index = TokenIndex(dfa.num_states)
    counts = _prepare(index, dfa, td)[2]
    per_state = ((dfa.trans != DEAD) * counts[None, :]).sum(axis=1)
    eager = np.flatnonzero(per_state <= EAGER_PAIRS_PER_STATE)
    index_states(index, dfa, info, eager[eager != DEAD].astype(np.int32))
    index.rows[DEAD] = (np.zeros(0, np.int32), np.zeros(0, np.int32))
    return index


def index_states(index: TokenIndex, dfa: CharDFA, info: TokenizerInfo, states: np.ndarray) -> None:
    """Walk every token from each of ``states`` (vectorized) and store their rows."""
    td = info.token_data()
    trans = dfa.trans
    flat_sym, order, counts, group_start = _prepare(index, dfa, td)
    starts_at = td.off[:-1]
    qi, syms = np.nonzero(trans[states] != DEAD)
    qs = states[qi]
    per = counts[syms]
    total = int(per.sum())
    pair_q = np.repeat(qs, per).astype(np.int32)
    within = np.arange(total) - np.repeat(np.cumsum(per) - per, per)
    pair_t = order[np.repeat(group_start[syms], per) + within]
    cur = np.repeat(trans[qs, syms], per)
    out_q, out_t, out_s = [], [], []
    # NOTE: the first PAD characters run without filtering: padded positions map to an identity
    # column, so every (state, token) pair takes the same gathers (a few big numpy ops, no Python
    # per length); dead pairs are dropped every few steps and long tokens finish in the loop below.
    sym_cols, trans_flat, width = _padded(index, dfa, td, flat_sym)
    cur = cur.astype(np.int32)
    for j in range(1, PAD):
        # NOTE: 1-D gathers (column-major symbols, flattened table) are ~2x faster than 2-D ones
        cur = trans_flat[cur * width + sym_cols[j][pair_t]]
        if j % 4 == 0:
            live = cur != DEAD
            pair_q, pair_t, cur = pair_q[live], pair_t[live], cur[live]
    live = cur != DEAD
    pair_q, pair_t, cur = pair_q[live], pair_t[live], cur[live]
    short = td.clen[pair_t] <= PAD
    out_q.append(pair_q[short])
    out_t.append(pair_t[short])
    out_s.append(cur[short])
    pair_q, pair_t, cur = pair_q[~short], pair_t[~short], cur[~short]
    j = PAD
    while len(pair_t):
        cur = trans[cur, flat_sym[starts_at[pair_t] + j]]
        j += 1
        live = cur != DEAD
        pair_q, pair_t, cur = pair_q[live], pair_t[live], cur[live]
        done = td.clen[pair_t] == j
        out_q.append(pair_q[done])
        out_t.append(pair_t[done])
        out_s.append(cur[done])
        pair_q, pair_t, cur = pair_q[~done], pair_t[~done], cur[~done]
    fq = np.concatenate(out_q) if out_q else np.zeros(0, np.int32)
    ft = np.concatenate(out_t) if out_t else np.zeros(0, np.int64)
    fs = np.concatenate(out_s).astype(np.int32) if out_s else np.zeros(0, np.int32)
    fq, ft, fs = _resolve_tails(dfa, td, index, states, fq, ft, fs)
    _store_rows(index, states, fq, td.ids[ft], fs, info.vocab_size)


def _store_rows(index: TokenIndex, states: np.ndarray, fq, tok_ids, fs, vocab_size: int) -> None:
    """Group (state, token, next) triples into sorted rows.

    NOTE: a scatter into a [chunk, vocab] table replaces sorting (O(vocab) per state, no log factor).
    """
    if not len(states):
        return
    if len(fq) * 8 < len(states) * vocab_size:  # sparse rows: sorting is cheaper than tables
        srt = np.lexsort((tok_ids, fq))
        fq, tok_ids, fs = fq[srt], tok_ids[srt].astype(np.int32), fs[srt].astype(np.int32)
        lo, hi = np.searchsorted(fq, states, side="left"), np.searchsorted(fq, states, side="right")
        for q, a, b in zip(states.tolist(), lo.tolist(), hi.tolist()):
            index.rows[q] = (tok_ids[a:b], fs[a:b])
        return
    states = np.sort(states)  # chunks of sorted states own contiguous ranges of sorted fq
    slot = np.full(int(states.max()) + 1, -1, dtype=np.int64)
    chunk = 64
    order = np.argsort(fq, kind="stable")
    fq, tok_ids, fs = fq[order], tok_ids[order], fs[order]
    for c0 in range(0, len(states), chunk):
        part = states[c0:c0 + chunk]
        slot[part] = np.arange(len(part))
        lo, hi = np.searchsorted(fq, part.min()), np.searchsorted(fq, part.max(), side="right")
        table = np.full((len(part), vocab_size), -1, dtype=np.int32)
        table[slot[fq[lo:hi]], tok_ids[lo:hi]] = fs[lo:hi]
        for i, q in enumerate(part.tolist()):
            toks = np.flatnonzero(table[i] >= 0).astype(np.int32)
            index.rows[q] = (toks, table[i, toks])
        slot[part] = -1


PAD = 12  # characters walked without per-step filtering (most tokens are shorter)


def _padded(index: TokenIndex, dfa: CharDFA, td, flat_sym: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Token symbols for the first PAD characters, column-major ([PAD, T]; pad = an identity
    symbol), and the flattened transition table extended with that identity column."""
    prep = index.__dict__.get("_padded")
    if prep is None:
        num_syms = dfa.trans.shape[1]
        cols = np.arange(PAD)
        pos = td.off[None, :-1] + cols[:, None]
        inside = cols[:, None] < td.clen[None, :]
        sym_cols = np.where(inside, flat_sym[np.minimum(pos, len(flat_sym) - 1)], num_syms).astype(np.int32)
        trans_ext = np.concatenate([dfa.trans, np.arange(dfa.num_states, dtype=np.int32)[:, None]], axis=1)
        prep = index.__dict__["_padded"] = (np.ascontiguousarray(sym_cols), trans_ext.reshape(-1), num_syms + 1)
    return prep


def _prepare(index: TokenIndex, dfa: CharDFA, td) -> tuple:
    """Tokens as symbols, grouped by first symbol (kept on the index for lazy rows)."""
    prep = index.__dict__.get("_prep")
    if prep is None:
        flat_sym = dfa.alphabet.symbols_of(td.cps)[td.cp_idx]
        has = np.flatnonzero(td.clen > 0)
        first = flat_sym[td.off[:-1][has]]
        order = has[np.argsort(first, kind="stable")]
        counts = np.bincount(first, minlength=dfa.trans.shape[1])
        group_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        prep = index.__dict__["_prep"] = (flat_sym, order, counts, group_start)
    return prep


def _resolve_tails(dfa: CharDFA, td, index: TokenIndex, states: np.ndarray, fq, ft, fs):
    """Tokens ending in a partial character: keep those some allowed character can complete."""
    has_tail = td.tail_lo[ft] >= 0
    pure = np.flatnonzero((td.clen == 0) & (td.tail_lo >= 0))
    if not has_tail.any() and not len(pure):
        return fq, ft, fs
    tq = np.concatenate([fq[has_tail], np.repeat(states, len(pure))])
    tt = np.concatenate([ft[has_tail], np.tile(pure, len(states))])
    ts = np.concatenate([fs[has_tail], np.repeat(states, len(pure))])
    alpha = dfa.alphabet
    cum = index.__dict__.get("_tail_cum")
    if cum is None:  # per state: prefix counts of live atoms (kept for lazy rows)
        live = (dfa.trans[:, alpha.atom_sym] != DEAD) & alpha.live_atoms()[None, :]
        cum = np.zeros((dfa.num_states, live.shape[1] + 1), dtype=np.int32)
        np.cumsum(live, axis=1, out=cum[:, 1:])
        index.__dict__["_tail_cum"] = cum
    a0 = np.searchsorted(alpha.atom_starts, td.tail_lo[tt], side="right") - 1
    a1 = np.searchsorted(alpha.atom_starts, td.tail_hi[tt], side="right") - 1
    ok = cum[ts, a1 + 1] - cum[ts, a0] > 0
    tq, tt, ts = tq[ok], tt[ok], ts[ok]
    mids = np.empty(len(tt), dtype=np.int32)
    for i, (s, tid) in enumerate(zip(ts.tolist(), td.ids[tt].tolist())):
        mids[i] = index.mid_state(s, td.tail_bytes[tid])
    keep = ~has_tail
    return (np.concatenate([fq[keep], tq]), np.concatenate([ft[keep], tt]),
            np.concatenate([fs[keep], mids]))
