"""``rx`` IR → symbol NFA (Thompson) → DFA (subset construction) → minimal DFA.

A :class:`CharDFA` is a plain value over the constraint's :class:`Alphabet`: ``trans[state,
symbol]`` (int32) and ``accept[state]``; state 0 is dead (absorbing, rejecting), 1 the start.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from . import rx
from .alphabet import Alphabet, build_alphabet
from .errors import GrammarError

DEAD, START = 0, 1
MAX_DFA_STATES = 100_000


@dataclass(frozen=True, eq=False)
class CharDFA:
    """A DFA over symbols: ``trans`` int32 [S, K], ``accept`` bool [S]; 0 dead, 1 start."""

    trans: np.ndarray
    accept: np.ndarray
    alphabet: Alphabet

    @property
    def num_states(self) -> int:
        return int(self.trans.shape[0])

    def run(self, text: str, state: int = START) -> int:
        if not text:
            return state
        syms = self.alphabet.symbols_of(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32))
        for s in syms.tolist():
            state = int(self.trans[state, s])
            if state == DEAD:
                break
        return state

    def fullmatch(self, text: str) -> bool:
        return bool(self.accept[self.run(text)])


class _NFA:
    def __init__(self, alphabet: Alphabet, units: dict | None = None, inline: set | None = None) -> None:
        self.alphabet = alphabet
        self.units: dict[int, tuple[rx.Node, CharDFA]] = {} if units is None else units
        self.inline: set[int] = inline or set()  # ids of units built in place (see _inlined_units)
        self.eps: list[list[int]] = []
        self.edges: list[list[tuple[tuple[int, ...], int]]] = []

    def new(self) -> int:
        self.eps.append([])
        self.edges.append([])
        return len(self.eps) - 1

    def build(self, node: rx.Node) -> tuple[int, int]:
        return getattr(self, "_" + node[0])(node)

    def _chars(self, node: rx.Node) -> tuple[int, int]:
        start, end = self.new(), self.new()
        syms = self.alphabet.class_syms[node[1]]
        if syms:
            self.edges[start].append((syms, end))
        return start, end

    def _seq(self, node: rx.Node) -> tuple[int, int]:
        items = node[1]
        loops = _separated_lists(items)
        start = cur = self.new()
        i = 0
        while i < len(items):
            hit = loops.get(i)
            if hit is None:
                s, e = self.build(items[i])
                self.eps[cur].append(s)
                cur = e
                i += 1
                continue
            # NOTE: "x (s x)*" (JSON arrays and objects) builds x once and loops back through s:
            # half the NFA, and the DFA gets no twin states for "first item" and "later items"
            n, sep = hit
            x_in = self.new()
            self.eps[cur].append(x_in)
            cur = x_in
            for sub in items[i:i + n]:
                s, e = self.build(sub)
                self.eps[cur].append(s)
                cur = e
            s, e = self._seq(("seq", sep))
            self.eps[cur].append(s)
            self.eps[e].append(x_in)
            i += n + 1
        return start, cur

    def _alt(self, node: rx.Node) -> tuple[int, int]:
        start, end = self.new(), self.new()
        for sub in node[1]:
            s, e = self.build(sub)
            self.eps[start].append(s)
            self.eps[e].append(end)
        return start, end

    def _rep(self, node: rx.Node) -> tuple[int, int]:
        _, sub, lo, hi = node
        start = cur = self.new()
        for _ in range(lo):
            s, e = self.build(sub)
            self.eps[cur].append(s)
            cur = e
        end = self.new()
        self.eps[cur].append(end)
        if hi is None:
            s, e = self.build(sub)
            self.eps[cur].append(s)
            self.eps[e].append(cur)
            return start, end
        for _ in range(hi - lo):  # nested optionals x(x(x)?)? keep the subset construction small
            s, e = self.build(sub)
            self.eps[cur].append(s)
            self.eps[e].append(end)
            cur = e
        return start, end

    def _and(self, node: rx.Node) -> tuple[int, int]:
        return self._embed(self._product(node, "and"))

    def _diff(self, node: rx.Node) -> tuple[int, int]:
        return self._embed(self._product(node, "diff"))

    def _product(self, node: rx.Node, op: str) -> CharDFA:
        hit = self.units.get(id(node))
        if hit is None:
            hit = self.units[id(node)] = (node, product(self._sub(node[1]), self._sub(node[2]), op))
        return hit[1]

    def _mod(self, node: rx.Node) -> tuple[int, int]:
        k = node[1]
        sym = {d: self.alphabet.class_syms[((48 + d, 48 + d),)] for d in range(10)}
        start, neg, end = self.new(), self.new(), self.new()
        rem = [self.new() for _ in range(k)]
        self.edges[start].append((self.alphabet.class_syms[((45, 45),)], neg))
        self.edges[start].append((sym[0], end))
        for d in range(1, 10):
            self.edges[start].append((sym[d], rem[d % k]))
            self.edges[neg].append((sym[d], rem[d % k]))
        for r in range(k):
            for d in range(10):
                self.edges[rem[r]].append((sym[d], rem[(10 * r + d) % k]))
        self.eps[rem[0]].append(end)
        return start, end

    def _unit(self, node: rx.Node) -> tuple[int, int]:
        if id(node) in self.inline:
            return self.build(node[1])
        hit = self.units.get(id(node))
        if hit is None:
            hit = self.units[id(node)] = (node, remap(shared_unit(node[1]), self.alphabet))
        return self._embed(hit[1])

    def _sub(self, node: rx.Node) -> CharDFA:
        # NOTE: keyed by identity: shared subtrees are compiled once (the node is kept alive here)
        hit = self.units.get(id(node))
        if hit is None:
            hit = self.units[id(node)] = (node, _compile(node, self.alphabet, self.units, self.inline))
        return hit[1]

    def _embed(self, dfa: CharDFA) -> tuple[int, int]:
        base = len(self.eps)
        src, syms, tgt, accepting = _edge_groups(dfa)
        self.eps.extend([] for _ in range(dfa.num_states + 1))
        self.edges.extend([] for _ in range(dfa.num_states + 1))
        end = base + dfa.num_states
        edges, eps = self.edges, self.eps
        for s, group, t in zip((src + base).tolist(), syms, (tgt + base).tolist()):
            edges[s].append((group, t))
        for s in accepting:
            eps[base + s].append(end)
        return base + START, end

def _separated_lists(items: tuple) -> dict[int, tuple[int, tuple]]:
    """Where ``items`` holds ``x (s x)*``: {index of x's first item: (len(x), s's items)}, x being
    the ``n`` items right before a ``("rep", ("seq", s + x), 0, None)``."""
    out: dict[int, tuple[int, tuple]] = {}
    free = 0  # items before this index are claimed by a list already
    for r, node in enumerate(items):
        if node[0] != "rep" or node[2] != 0 or node[3] is not None or node[1][0] != "seq":
            continue
        inner = node[1][1]
        for n in range(min(r - free, len(inner) - 1), 0, -1):
            if items[r - n:r] == inner[len(inner) - n:]:
                out[r - n] = (n, inner[:len(inner) - n])
                free = r + 1
                break
    return out


def _edge_groups(dfa: CharDFA) -> tuple[np.ndarray, list[tuple[int, ...]], np.ndarray, list[int]]:
    """(source, symbols, target) of each group of a DFA's live edges with one source and target,
    and the accepting states (cached on the DFA: a unit is embedded many times)."""
    got = dfa.__dict__.get("_edge_groups")
    if got is None:
        trans = dfa.trans.copy()
        trans[DEAD] = DEAD
        src, sym = np.nonzero(trans)
        key = src.astype(np.int64) * dfa.num_states + trans[src, sym]
        srt = np.argsort(key, kind="stable")  # symbols stay sorted inside a group
        key, sym = key[srt], sym[srt].tolist()
        cut = np.flatnonzero(key[1:] != key[:-1]) + 1
        bounds = [0, *cut.tolist(), len(sym)]
        first = key[bounds[:-1]] if len(sym) else key[:0]
        groups = [tuple(sym[lo:hi]) for lo, hi in pairwise(bounds)] if len(sym) else []
        accepting = np.flatnonzero(dfa.accept).tolist()
        got = (first // dfa.num_states, groups, first % dfa.num_states, [q for q in accepting if q != DEAD])
        dfa.__dict__["_edge_groups"] = got
    return got


class _Closures:
    """Epsilon closures restricted to *important* NFA states (with symbol edges, or final).

    NOTE: subsets of important states only are smaller and hash faster, and single-state
    closures are memoized, so a subset's closure is a union of cached sets.
    """

    def __init__(self, nfa: _NFA, final: int) -> None:
        self.nfa, self.final = nfa, final
        self.single: dict[int, frozenset[int]] = {}
        self.sets: dict[frozenset, frozenset] = {}
        self.eps = self._shortcut(nfa, final)

    @staticmethod
    def _shortcut(nfa: _NFA, final: int) -> list[list[int]]:
        """Epsilon lists with chains of pass-through states (no symbol edge, one epsilon) skipped."""
        eps, edges = nfa.eps, nfa.edges
        through = [len(e) == 1 and not edges[s] and s != final for s, e in enumerate(eps)]

        def land(t: int) -> int:
            seen = set()
            while through[t] and t not in seen:
                seen.add(t)
                t = eps[t][0]
            return t
        return [[land(t) for t in e] for e in eps]

    def of_state(self, start: int) -> frozenset[int]:
        hit = self.single.get(start)
        if hit is None:
            eps, edges = self.eps, self.nfa.edges
            seen, stack, keep = {start}, [start], []
            while stack:
                s = stack.pop()
                if edges[s] or s == self.final:
                    keep.append(s)
                for t in eps[s]:
                    if t not in seen:
                        seen.add(t)
                        stack.append(t)
            hit = self.single[start] = frozenset(keep)
        return hit

    def of_set(self, targets: frozenset) -> frozenset[int]:
        hit = self.sets.get(targets)
        if hit is None:
            if len(targets) == 1:
                hit = self.of_state(next(iter(targets)))
            else:
                hit = frozenset().union(*map(self.of_state, targets))
            self.sets[targets] = hit
        return hit


def _determinize(nfa: _NFA, start: int, final: int) -> CharDFA:
    k = nfa.alphabet.num_symbols
    closures = _Closures(nfa, final)
    init = closures.of_state(start)
    index = {frozenset(): DEAD, init: START}
    order = [frozenset(), init]
    flat: list[int] = [DEAD] * k  # the rows, concatenated
    edges = nfa.edges
    single: dict[int, int] = {}  # NFA state t → the DFA state of t's closure

    def state_of(key: frozenset) -> int:
        idx = index.get(key)
        if idx is None:
            if len(order) >= MAX_DFA_STATES:
                raise GrammarError(f"the constraint needs more than {MAX_DFA_STATES} automaton "
                                   "states; simplify it (smaller repetition counts, fewer options)")
            idx = index[key] = len(order)
            order.append(key)
        return idx

    i = 1
    while i < len(order):
        row = [DEAD] * k
        live = [s for s in order[i] if edges[s]]
        # NOTE: the common case: one live NFA state; its edges are disjoint (every edge comes from
        # a char class, a DFA row or the mod automaton), so each symbol has one target
        if len(live) == 1:
            for syms, t in edges[live[0]]:
                idx = single.get(t)
                if idx is None:
                    idx = single[t] = state_of(closures.of_state(t))
                for c in syms:
                    row[c] = idx
        else:
            moves: dict[int, set[int]] = {}
            for s in live:
                for syms, t in edges[s]:
                    for c in syms:
                        got = moves.get(c)
                        if got is None:
                            moves[c] = {t}
                        else:
                            got.add(t)
            for c, targets in moves.items():
                if len(targets) == 1:
                    t = next(iter(targets))
                    idx = single.get(t)
                    if idx is None:
                        idx = single[t] = state_of(closures.of_state(t))
                else:
                    idx = state_of(closures.of_set(frozenset(targets)))
                row[c] = idx
        flat.extend(row)
        i += 1
    trans = np.array(flat, dtype=np.int32).reshape(len(order), k)
    accept = np.array([final in s for s in order], dtype=bool)
    return CharDFA(trans, accept, nfa.alphabet)


def minimize(dfa: CharDFA) -> CharDFA:
    """Prune states that cannot reach acceptance, then merge equivalent states.

    Merging is exact (Moore refinement) when that converges within ``MOORE_ROUNDS`` rounds; long
    literal chains can need hundreds, and then states with identical rows are merged instead
    (always sound, nearly as small for regex DFAs). Renumbered: 0 dead, 1 start.
    """
    trans, accept = dfa.trans, dfa.accept
    alive = _coreachable(trans, accept)
    trans = np.where(alive[trans], trans, DEAD)
    part = _moore(trans, np.where(alive, np.where(accept, 2, 1), 0))
    if part is None:
        part = _merge_identical(trans, accept & alive)
    if not alive[START]:
        return CharDFA(np.zeros((2, trans.shape[1]), dtype=np.int32), np.zeros(2, dtype=bool), dfa.alphabet)
    # block ids: dead's block 0, start's 1, the others in order of their first state
    first = np.empty(int(part.max()) + 1, dtype=np.int64)
    first[part[::-1]] = np.arange(len(part))[::-1]  # the first state of each block
    rank = np.argsort(np.where(np.arange(len(first)) == part[START], -1, first), kind="stable")
    rank = rank[rank != part[DEAD]]
    new = np.empty(len(first), dtype=np.int32)
    new[part[DEAD]] = DEAD
    new[rank] = np.arange(1, len(rank) + 1)
    reps = first[rank]
    out = np.zeros((len(rank) + 1, trans.shape[1]), dtype=np.int32)
    out[1:] = new[part[trans[reps]]]
    acc = np.zeros(len(rank) + 1, dtype=bool)
    acc[1:] = accept[reps]
    return CharDFA(out, acc, dfa.alphabet)


def _coreachable(trans: np.ndarray, accept: np.ndarray) -> np.ndarray:
    """States from which an accepting state is reachable (a reverse search over live edges)."""
    num, k = trans.shape
    src = np.repeat(np.arange(num), k)
    dst = trans.reshape(-1).astype(np.int64)
    edges = np.unique(dst[dst != DEAD] * num + src[dst != DEAD])  # sorted by target
    preds = (edges % num).tolist()
    bounds = np.searchsorted(edges // num, np.arange(num + 1)).tolist()
    alive = accept.tolist()
    alive[DEAD] = False
    stack = [q for q in range(num) if alive[q]]
    while stack:
        q = stack.pop()
        for p in preds[bounds[q]:bounds[q + 1]]:
            if not alive[p]:
                alive[p] = True
                stack.append(p)
    return np.array(alive, dtype=bool)


MOORE_ROUNDS = 48


def _moore(trans: np.ndarray, part: np.ndarray) -> np.ndarray | None:
    """Moore refinement to the coarsest stable partition; None if it needs over MOORE_ROUNDS.

    NOTE: rows are compared through a random hash summed over the *live* edges only (JSON and
    regex DFAs are sparse: a few live symbols per state), one cumulative sum per round; the
    result is verified exactly and recomputed row-wise if a hash collided.
    """
    rng = np.random.default_rng(0x5EED)
    weights = rng.integers(1, 2**62, size=trans.shape[1] + 1, dtype=np.uint64) | np.uint64(1)
    src, sym = np.nonzero(trans)  # sorted by source state
    tgt = trans[src, sym]
    w_edge = weights[1 + sym]
    bounds = np.searchsorted(src, np.arange(len(trans) + 1))
    _, part = np.unique(part, return_inverse=True)
    part = part.reshape(-1)
    nparts = int(part.max()) + 1
    for _ in range(MOORE_ROUNDS):
        with np.errstate(over="ignore"):
            cum = np.zeros(len(src) + 1, dtype=np.uint64)
            np.cumsum((part[tgt].astype(np.uint64) + np.uint64(1)) * w_edge, out=cum[1:])
            sig = part.astype(np.uint64) * weights[0] + (cum[bounds[1:]] - cum[bounds[:-1]])
        _, new = np.unique(sig, return_inverse=True)
        new = new.reshape(-1)
        count = int(new.max()) + 1
        part = new
        if count == nparts:
            break
        nparts = count
    else:
        return None
    reps = np.zeros(nparts, dtype=np.int64)
    reps[part[::-1]] = np.arange(len(part))[::-1]
    if not (part[trans] == part[trans[reps[part]]]).all():  # a hash collision merged too much
        while True:
            sig = np.concatenate([part[:, None], part[trans]], axis=1)
            _, new = np.unique(sig, axis=0, return_inverse=True)
            new = new.reshape(-1)
            if int(new.max()) + 1 == nparts:
                break
            part, nparts = new, int(new.max()) + 1
    return part


def _merge_identical(trans: np.ndarray, accept: np.ndarray) -> np.ndarray:
    """Merge states with equal acceptance and equal successor blocks, repeatedly (each round's
    partition only relates equivalent states, so stopping early is sound)."""
    part = np.arange(len(trans))
    for _ in range(MOORE_ROUNDS):
        sig = np.concatenate([accept[:, None].astype(part.dtype), part[trans]], axis=1)
        _, new = np.unique(sig, axis=0, return_inverse=True)
        new = new.reshape(-1)
        if int(new.max()) + 1 == int(part.max()) + 1:
            return new
        part = new
    return part


def product(a: CharDFA, b: CharDFA, op: str) -> CharDFA:
    """Intersection (``op="and"``) or difference (``"diff"``) of two DFAs on one alphabet."""
    nb = b.num_states
    index = {(START, START): START}
    pairs = [(DEAD, DEAD), (START, START)]
    rows = [np.zeros(a.trans.shape[1], dtype=np.int32)]
    i = 1
    while i < len(pairs):
        sa, sb = pairs[i]
        keys = a.trans[sa].astype(np.int64) * nb + b.trans[sb]
        row = np.zeros(len(keys), dtype=np.int32)
        live = a.trans[sa] != DEAD
        for k in np.unique(keys[live]).tolist():
            pair = (k // nb, k % nb)
            if pair not in index:
                index[pair] = len(pairs)
                pairs.append(pair)
            row[keys == k] = index[pair]
        row[~live] = DEAD
        rows.append(row)
        i += 1
    pa = np.array([p[0] for p in pairs])
    pb = np.array([p[1] for p in pairs])
    acc = a.accept[pa] & (b.accept[pb] if op == "and" else ~b.accept[pb])
    acc[DEAD] = False
    return minimize(CharDFA(np.stack(rows), acc, a.alphabet))


def _compile(node: rx.Node, alphabet: Alphabet, units: dict | None = None, inline: set | None = None) -> CharDFA:
    nfa = _NFA(alphabet, units, inline)
    start, end = nfa.build(node)
    return minimize(_determinize(nfa, start, end))


# NOTE: process-wide LRU of unit DFAs (each over its own alphabet), so a sub-language shared by
# many constraints (e.g. free-form JSON values) is determinized once per process.
_UNITS: OrderedDict[rx.Node, CharDFA] = OrderedDict()
_UNITS_CAPACITY = 512


_UNITS_LOCK = threading.Lock()


def shared_unit(node: rx.Node) -> CharDFA:
    with _UNITS_LOCK:
        dfa = _UNITS.get(node)
        if dfa is not None:
            _UNITS.move_to_end(node)
            return dfa
    dfa = compile_rx(node)  # outside the lock: may recurse into shared_unit
    with _UNITS_LOCK:
        _UNITS[node] = dfa
        while len(_UNITS) > _UNITS_CAPACITY:
            _UNITS.popitem(last=False)
    return dfa


def clear_unit_cache() -> None:
    """Forget the process-wide unit DFAs (benchmarks measuring cold compiles)."""
    with _UNITS_LOCK:
        _UNITS.clear()


def remap(dfa: CharDFA, alphabet: Alphabet) -> CharDFA:
    """The same DFA over a finer ``alphabet`` (each new symbol lies inside one old symbol)."""
    old = dfa.alphabet.symbols_of(alphabet.first_cp())
    return CharDFA(np.ascontiguousarray(dfa.trans[:, old]), dfa.accept, alphabet)


def compile_rx(node: rx.Node) -> CharDFA:
    """Compile an ``rx`` node to a minimal DFA over its own symbol alphabet."""
    if node[0] == "unit":  # the same DFA (and alphabet) as its body: compile that once
        return shared_unit(node[1])
    return _compile(node, build_alphabet(node), None, _inlined_units(node))


def _inlined_units(root: rx.Node) -> set[int]:
    """Ids of the ``unit`` nodes that the NFA of ``root`` embeds exactly once.

    NOTE: such a unit gains nothing from being determinized on its own (a fixed ~1-3 ms of
    alphabet, subset construction and minimization each; nested JSON schemas have a dozen), so it
    is built in place; units embedded twice or more (shared, repeated) stay units.
    """
    count: dict[int, int] = {}
    stack = [(root, False)]
    while stack:
        node, many = stack.pop()
        kind = node[0]
        if kind == "unit":
            seen = count.get(id(node), 0)
            count[id(node)] = seen + (2 if many else 1)
            if not seen:
                stack.append((node[1], False))  # counted relative to the unit's own body
        elif kind in ("seq", "alt"):
            stack.extend((sub, many) for sub in node[1])
        elif kind == "rep":
            stack.append((node[1], many or node[2] > 1 or node[3] != 1))
        elif kind in ("and", "diff"):
            stack.append((node[1], many))
            stack.append((node[2], many))
    return {uid for uid, n in count.items() if n == 1}
