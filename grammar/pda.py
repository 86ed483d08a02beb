"""Token masks for context-free constraints: a lazy DFA over PDA stack sets, with adaptive caches.

How a mask is computed (``CfgFSM.mask_row``):

* The matcher's state is a *kernel*: the set of stacks right after the last byte (before any
  push/pop). Stacks are truncated to their top ``k`` frames below an ``UNKNOWN`` marker.
* Level ``k = 1`` is xgrammar's per-(rule, position) cache: every token is walked from the
  truncated kernel, all tokens in lockstep (numpy), through a lazily built DFA whose states are
  stack sets (rows of 256 byte transitions, shared by every request of this grammar). A token that
  would need to return *below* the known frames (the rule ends mid-token: ``"},`` inside a nested
  string) is *context-dependent*: it is set aside, not decided.
* Context-dependent tokens (usually a few dozen) are walked again from the kernel truncated at
  ``k = 2, 4, 8, …`` until decided. Each level's result is memoized by its truncated kernel, so a
  state seen at any nesting depth costs a dict lookup and a row copy after its first visit.

Special tokens have no bytes and are never walked; EOS is added when a depth-1 stack accepts.
"""
from __future__ import annotations

import logging
import threading

import numpy as np

from .cfg import UNKNOWN, BytePDA, Grammar, Runner, compile_grammar
from .tokenizer_info import TokenizerInfo

logger = logging.getLogger(__name__)
MAX_LAZY_STATES = 200_000   # lazy-DFA states kept before the tables are dropped and rebuilt
MAX_LEVEL_ENTRIES = 100_000  # memoized (truncated kernel → tokens) entries kept
MAX_FORCED_BYTES = 256


class _Vocab:
    """Token bytes grouped by first byte: the lockstep walk gathers byte ``k`` of every live token."""

    def __init__(self, info: TokenizerInfo) -> None:
        toks = [(b[0], i, b) for i, b in enumerate(info.token_bytes) if b]
        toks.sort()
        self.ids = np.array([i for _, i, _ in toks], dtype=np.int32)
        self.lens = np.array([len(b) for _, _, b in toks], dtype=np.int64)
        self.off = np.zeros(len(toks), dtype=np.int64)
        np.cumsum(self.lens[:-1], out=self.off[1:])
        self.flat = np.frombuffer(b"".join(b for _, _, b in toks), dtype=np.uint8)
        self.counts = np.bincount([f for f, _, _ in toks], minlength=256)

    @classmethod
    def of(cls, info: TokenizerInfo) -> _Vocab:
        v = info._memo.get("cfg_vocab")
        if v is None:
            v = info._memo["cfg_vocab"] = cls(info)
        return v


class _LazyDFA:
    """Interned kernels (stack sets) with closures and lazily computed 256-byte rows."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.clear()

    def clear(self) -> None:
        self.ids: dict[frozenset, int] = {frozenset(): 0}
        self.closed: list[frozenset] = [frozenset()]
        self.touch = np.zeros(1024, dtype=bool)
        self.has_row = np.zeros(1024, dtype=bool)
        self.table = np.zeros((1024, 256), dtype=np.int32)
        self.has_row[0] = True

    def intern(self, kernel: frozenset) -> int:
        sid = self.ids.get(kernel)
        if sid is None:
            sid = self.ids[kernel] = len(self.closed)
            closed, touch, _ = self.runner.closure(kernel)
            self.closed.append(closed)
            if sid >= len(self.touch):
                grow = len(self.touch)
                self.touch = np.concatenate([self.touch, np.zeros(grow, dtype=bool)])
                self.has_row = np.concatenate([self.has_row, np.zeros(grow, dtype=bool)])
                self.table = np.concatenate([self.table, np.zeros((grow, 256), dtype=np.int32)])
            self.touch[sid] = touch
        return sid

    def ensure_rows(self, sids: np.ndarray) -> None:
        for sid in sids[~self.has_row[sids]].tolist():
            self._fill(sid)

    def _fill(self, sid: int) -> None:
        stacks = list(self.closed[sid])
        tops = self.runner.pda.trans[[st[-1] for st in stacks]]          # [n, 256]
        # NOTE: bytes with the same targets on every stack share one kernel (one closure each)
        cols, inverse = np.unique(tops.T, axis=0, return_inverse=True)
        row = np.zeros(len(cols), dtype=np.int32)
        for c, col in enumerate(cols.tolist()):
            if any(col):
                kernel = frozenset(st[:-1] + (t,) for st, t in zip(stacks, col) if t)
                row[c] = self.intern(kernel)
        self.table[sid] = row[inverse.reshape(-1)]
        self.has_row[sid] = True


class CfgFSM:
    """A context-free constraint compiled for one tokenizer (duck-types :class:`TokenFSM`).

    Compiled in memory only (grammar → byte PDA is fast); masks are cached per truncated kernel.
    """

    def __init__(self, pda: BytePDA, info: TokenizerInfo, kind: str = "ebnf") -> None:
        self.pda = pda
        self.info = info
        self.kind = kind
        self.runner = Runner(pda)
        self.vocab = _Vocab.of(info)
        self.width = (info.vocab_size + 31) // 32
        self._lazy = _LazyDFA(self.runner)
        self._levels: dict[frozenset, tuple[np.ndarray, np.ndarray]] = {}
        self._packed: dict[frozenset, tuple[np.ndarray, np.ndarray]] = {}
        self._closures: dict[frozenset, tuple] = {}
        self._lock = threading.Lock()
        self._precomputed = False

    @classmethod
    def build(cls, grammar: Grammar, info: TokenizerInfo, kind: str = "ebnf") -> CfgFSM:
        return cls(compile_grammar(grammar), info, kind)

    @property
    def vocab_size(self) -> int:
        return self.info.vocab_size

    @property
    def num_states(self) -> int:
        return self.pda.num_states

    def matcher(self):
        from .cfg_matcher import CfgMatcher
        return CfgMatcher(self)

    def precompute(self) -> bool:
        """Build the level-1 mask of every single-stack state now (xgrammar's per-position cache),
        so first visits only walk context-dependent tokens. Idempotent; returns True.

        NOTE: the lock is taken per state, so requests already using this constraint keep getting
        masks while another thread precomputes (the runtime does this in its compile thread).
        """
        if self._precomputed:
            return True
        targets = np.unique(self.pda.trans)
        keys = [frozenset({(UNKNOWN, q)}) for q in targets[targets != 0].tolist()]
        end0 = self.pda.starts[1] if len(self.pda.starts) > 1 else self.pda.num_states
        keys += [frozenset({(q,)}) for q in range(self.pda.starts[0], end0)]
        for key in keys:
            with self._lock:
                self._packed_level1(key)
        self._precomputed = True
        return True

    # -- stack sets ------------------------------------------------------------------------
    def closure(self, kernel: frozenset) -> tuple:
        hit = self._closures.get(kernel)
        if hit is None:
            if len(self._closures) > 4096:
                self._closures.clear()
            hit = self._closures[kernel] = self.runner.closure(kernel)
        return hit

    def advance(self, kernel: frozenset, data: bytes) -> frozenset:
        """The kernel after ``data`` (empty: rejected)."""
        for b in data:
            kernel = self.runner.step_closed(self.closure(kernel)[0], b)
            if not kernel:
                break
        return kernel

    def is_accepting(self, kernel: frozenset) -> bool:
        return bool(kernel) and self.closure(kernel)[2]

    def forced_bytes(self, kernel: frozenset) -> bytes:
        """The bytes every continuation starts with (stops where EOS or two bytes are possible)."""
        out = bytearray()
        trans = self.pda.trans
        while kernel and len(out) < MAX_FORCED_BYTES:
            closed, _, acc = self.closure(kernel)
            if acc:
                break
            live = np.flatnonzero(trans[[st[-1] for st in closed]].any(axis=0))
            if len(live) != 1:
                break
            out.append(int(live[0]))
            kernel = self.runner.step_closed(closed, int(live[0]))
        return bytes(out)

    # -- masks -----------------------------------------------------------------------------
    def _level(self, key: frozenset, pending: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        hit = self._levels.get(key)
        if hit is None:
            hit = self._levels[key] = self._walk(key, pending)
            if len(self._lazy.closed) > MAX_LAZY_STATES:
                self._lazy.clear()
            if len(self._levels) > MAX_LEVEL_ENTRIES:  # deep contexts seen once: start over
                self._levels.clear()
        return hit

    def _packed_level1(self, key: frozenset) -> tuple[np.ndarray, np.ndarray]:
        hit = self._packed.get(key)
        if hit is None:
            allowed, pending = self._level(key, None)
            bits = np.zeros(self.width * 32, dtype=bool)
            bits[allowed] = True
            hit = self._packed[key] = (np.packbits(bits, bitorder="little").view(np.int32), pending)
        return hit

    def _deeper(self, kernel: frozenset, pending: np.ndarray) -> list[np.ndarray]:
        """Decide the context-dependent tokens with ever more frames (2, 4, 8, …, all)."""
        out, k, key = [], 1, _truncate(kernel, 1)
        while len(pending) and key != kernel:
            k *= 2
            key = _truncate(kernel, k)
            allowed, pending = self._level(key, pending)
            out.append(allowed)
        return out

    def allowed(self, kernel: frozenset) -> np.ndarray:
        """Sorted allowed token ids (EOS not included)."""
        with self._lock:
            allowed, pending = self._level(_truncate(kernel, 1), None)
            parts = [allowed] + self._deeper(kernel, pending)
        return np.sort(np.concatenate(parts)) if len(parts) > 1 else allowed

    def mask_row(self, kernel: frozenset) -> np.ndarray:
        """The packed int32 bitmask of ``kernel`` (EOS bit iff accepting).

        The level-1 row is cached packed; context-dependent tokens and EOS are OR-ed into a copy.
        """
        key = _truncate(kernel, 1)
        with self._lock:
            hit = self._packed_level1(key)
            row, pending = hit
            extra = self._deeper(kernel, pending) if len(pending) else []
        accepting = self.is_accepting(kernel)
        if not (extra or accepting):
            return row
        row = row.copy()
        ids = np.concatenate(extra + [np.array([self.info.eos_token_id] if accepting else [], np.int64)])
        ids = ids.astype(np.int64)
        np.bitwise_or.at(row.view(np.uint32), ids >> 5, (np.uint32(1) << (ids & 31).astype(np.uint32)))
        return row

    def _walk(self, key: frozenset, subset: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(allowed token ids, undecided vocab positions) from the truncated kernel ``key``.

        ``subset``: vocab positions to walk (None: all). All live tokens advance one byte per numpy
        step; a token reaching a state that returns below the truncation with bytes left is undecided.
        """
        v, lazy = self.vocab, self._lazy
        sid = lazy.intern(key)
        lazy.ensure_rows(np.array([sid]))
        first = lazy.table[sid]
        undecided = []
        if lazy.touch[sid]:  # the rule may end right here: every token could continue below
            undecided.append(np.arange(len(v.ids)) if subset is None else subset)
        if subset is None:  # first byte by group: dead first bytes cost nothing
            live = np.repeat(first != 0, v.counts)
            pos = np.flatnonzero(live)
            st = np.repeat(first, v.counts)[pos]
        else:
            pos = subset
            st = first[v.flat[v.off[pos]]]
            keep = st != 0
            pos, st = pos[keep], st[keep]
        done, k = [], 1
        lens, flat, off = v.lens, v.flat, v.off
        while len(pos):
            fin = lens[pos] == k
            if fin.any():
                done.append(pos[fin])
                pos, st = pos[~fin], st[~fin]
                if not len(pos):
                    break
            missing = ~lazy.has_row[st]
            if missing.any():  # NOTE: rows are built once per stack set and shared by all requests
                lazy.ensure_rows(np.unique(st[missing]))
            t = lazy.touch[st]
            if t.any():  # may return below the known frames: undecided unless a known path accepts it
                undecided.append(pos[t])
            st = lazy.table[st, flat[off[pos] + k]]
            keep = st != 0
            pos, st = pos[keep], st[keep]
            k += 1
        ok = np.concatenate(done) if done else np.zeros(0, np.int64)
        if not undecided:
            return np.sort(v.ids[ok]), np.zeros(0, np.int64)
        mark = np.zeros(len(v.ids), dtype=bool)
        for u in undecided:
            mark[u] = True
        mark[ok] = False
        return np.sort(v.ids[ok]), np.flatnonzero(mark)


def _truncate(kernel: frozenset, k: int) -> frozenset:
    """Each stack cut to its top ``k`` frames (below an UNKNOWN marker when cut)."""
    if all(len(st) <= k for st in kernel):
        return kernel
    return frozenset(st if len(st) <= k else (UNKNOWN,) + st[-k:] for st in kernel)
