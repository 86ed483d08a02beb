"""Context-free constraints: a :class:`Grammar` (rules over ``rx`` with rule calls) → :class:`BytePDA`.

A rule call is one ``chars`` node holding the code point ``REF_BASE + rule``: surrogates never occur
in UTF-8 text, so each rule body compiles with the regular pipeline (:func:`grammar.fsm.compile_rx`)
to a minimal symbol DFA in which call symbols are ordinary edges. Those DFAs are then expanded to
bytes (:mod:`grammar.utf8_bytes`) into one table for the whole grammar: a recursive transition
network, i.e. a pushdown automaton whose stack holds return states.

A *stack* is a tuple of byte states (bottom … top); the top is where the next byte is read, the
others are return states. Rule 0 is the start rule; the text is complete when a stack of depth 1
sits in an accepting state of rule 0.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from . import rx
from .errors import GrammarError
from .fsm import DEAD, START, CharDFA, compile_rx
from .utf8_bytes import fill_row, utf8_sequences

REF_BASE = 0xD800     # rule i is called by the code point REF_BASE + i (a surrogate)
MAX_RULES = 0x800     # the surrogate block
UNKNOWN = -1          # bottom marker of a truncated stack (frames below are not known)
Stack = tuple


class CfgUnsupported(GrammarError):
    """The grammar cannot be run as a pushdown automaton (left recursion, calls inside and/diff)."""


@dataclass(frozen=True)
class Grammar:
    """Rule bodies as ``rx`` nodes (``call(i)`` refers to rule i); rule 0 is the start."""

    rules: tuple
    names: tuple


def call(rule: int) -> rx.Node:
    """The ``rx`` node that calls rule ``rule``."""
    if not 0 <= rule < MAX_RULES:
        raise GrammarError(f"a grammar may have at most {MAX_RULES} recursive rules")
    return ("chars", ((REF_BASE + rule, REF_BASE + rule),))


def _callee(node: rx.Node) -> int | None:
    if node[0] == "chars" and len(node[1]) == 1 and node[1][0][0] == node[1][0][1]:
        cp = node[1][0][0]
        if REF_BASE <= cp < REF_BASE + MAX_RULES:
            return cp - REF_BASE
    return None


def _rewrite(node: rx.Node, dead: set[int], memo: dict, in_set_op: bool = False) -> rx.Node:
    """Strip surrogates from character classes, drop calls to rules in ``dead``, refuse calls
    under ``and``/``diff`` (set operations are not defined on calls)."""
    key = (id(node), in_set_op)
    hit = memo.get(key)
    if hit is not None:
        return hit[1]
    kind = node[0]
    callee = _callee(node)
    if callee is not None:
        if in_set_op:
            raise CfgUnsupported("a recursive reference under an intersection or difference "
                                 "(allOf/not/oneOf over a recursive schema)")
        out = rx.NOTHING if callee in dead else node
    elif kind == "chars":
        out = rx.chars(r for r in _minus_surrogates(node[1]))
    elif kind in ("seq", "alt"):
        out = (kind, tuple(_rewrite(n, dead, memo, in_set_op) for n in node[1]))
    elif kind in ("rep", "unit"):
        out = (kind, _rewrite(node[1], dead, memo, in_set_op), *node[2:])
    elif kind in ("and", "diff"):
        out = (kind, _rewrite(node[1], dead, memo, True), _rewrite(node[2], dead, memo, True))
    else:
        out = node
    memo[key] = (node, out)  # keeps ``node`` alive so its id stays unique
    return out


def _minus_surrogates(ranges):
    for lo, hi in ranges:
        if lo < 0xD800:
            yield lo, min(hi, 0xD7FF)
        if hi > 0xDFFF:
            yield max(lo, 0xE000), hi


def _productive(node: rx.Node, ok: set[int]) -> bool:
    """Whether ``node`` derives some string when only the rules in ``ok`` do (and/diff: assumed)."""
    callee = _callee(node)
    if callee is not None:
        return callee in ok
    kind = node[0]
    if kind == "chars":
        return bool(node[1])
    if kind == "seq":
        return all(_productive(n, ok) for n in node[1])
    if kind == "alt":
        return any(_productive(n, ok) for n in node[1])
    if kind == "rep":
        return node[2] == 0 or _productive(node[1], ok)
    if kind == "unit":
        return _productive(node[1], ok)
    return True


@dataclass(frozen=True, eq=False)
class BytePDA:
    """The compiled grammar: byte transitions, rule ends and calls per state (state 0 is dead)."""

    trans: np.ndarray     # int32 [S, 256]; 0 = no transition
    accept: np.ndarray    # bool [S]: the state's rule may end (return) here
    calls: tuple          # per state: ((callee start state, return state), ...)
    starts: tuple         # start state of each rule
    names: tuple

    @property
    def num_states(self) -> int:
        return int(self.trans.shape[0])

    def fullmatch(self, data: bytes) -> bool:
        """Whether ``data`` is a complete sentence (for tests and tools; not the fast path)."""
        runner = Runner(self)
        kernel = runner.start_kernel()
        for b in data:
            kernel = runner.step(kernel, b)
            if not kernel:
                return False
        return runner.closure(kernel)[2]


class Runner:
    """Stack-set operations over a :class:`BytePDA` (Python lists: faster than numpy scalars)."""

    def __init__(self, pda: BytePDA) -> None:
        self.pda = pda
        self.trans = pda.trans.tolist()
        self.accept = pda.accept.tolist()
        self.calls = pda.calls

    def start_kernel(self) -> frozenset:
        return frozenset({(self.pda.starts[0],)})

    def closure(self, kernel) -> tuple[frozenset, bool, bool]:
        """(all stacks reachable without reading a byte, popped below a truncated bottom, accepting)."""
        out: set[Stack] = set()
        todo = list(kernel)
        touch = acc = False
        calls, accept = self.calls, self.accept
        while todo:
            st = todo.pop()
            if st in out:
                continue
            out.add(st)
            top = st[-1]
            for start, ret in calls[top]:
                todo.append(st[:-1] + (ret, start))
            if accept[top]:
                if len(st) == 1:
                    acc = True
                elif len(st) == 2 and st[0] == UNKNOWN:
                    touch = True
                else:
                    todo.append(st[:-1])
        return frozenset(out), touch, acc

    def step_closed(self, closed, b: int) -> frozenset:
        """The kernel after reading byte ``b`` from the closed stack set ``closed``."""
        trans = self.trans
        return frozenset(st[:-1] + (t,) for st in closed if (t := trans[st[-1]][b]))

    def step(self, kernel, b: int) -> frozenset:
        return self.step_closed(self.closure(kernel)[0], b)


# NOTE: a small process-wide memo (frontends validate a grammar, then the compiler builds it)
_COMPILED: OrderedDict[Grammar, BytePDA] = OrderedDict()
_COMPILED_LOCK = threading.Lock()


def compile_grammar(grammar: Grammar) -> BytePDA:
    """Check and compile ``grammar`` (memoized); raises :class:`GrammarError` / :class:`CfgUnsupported`."""
    with _COMPILED_LOCK:
        pda = _COMPILED.get(grammar)
    if pda is None:
        pda = _compile_grammar(grammar)
        with _COMPILED_LOCK:
            _COMPILED[grammar] = pda
            while len(_COMPILED) > 32:
                _COMPILED.popitem(last=False)
    return pda


def _compile_grammar(grammar: Grammar) -> BytePDA:
    n = len(grammar.rules)
    if n > MAX_RULES:
        raise GrammarError(f"a grammar may have at most {MAX_RULES} recursive rules (has {n})")
    memo: dict = {}
    bodies = [_rewrite(b, set(), memo) for b in grammar.rules]
    ok: set[int] = set()
    while True:
        new = {i for i in range(n) if i not in ok and _productive(bodies[i], ok)}
        if not new:
            break
        ok |= new
    if 0 not in ok:
        raise GrammarError("the grammar derives no finite string (every derivation recurses forever)")
    dead = set(range(n)) - ok
    if dead:
        memo = {}
        bodies = [_rewrite(b, dead, memo) if i in ok else rx.NOTHING for i, b in enumerate(bodies)]
    dfas = [compile_rx(b) for b in bodies]
    edges = [_edges(d, n) for d in dfas]
    _check_left_recursion(dfas, edges, grammar.names)
    return _to_bytes(dfas, edges, grammar.names)


def _edges(dfa: CharDFA, n_rules: int) -> list[tuple[list, list]]:
    """Per DFA state: (char edges [(lo, hi, target)], call edges [(rule, target)])."""
    alpha = dfa.alphabet
    ends = np.append(alpha.atom_starts[1:], rx.MAX_CP + 1)
    ranges: list[list[tuple[int, int]]] = [[] for _ in range(alpha.num_symbols)]
    for lo, end, sym in zip(alpha.atom_starts.tolist(), ends.tolist(), alpha.atom_sym.tolist()):
        ranges[sym].append((lo, end - 1))
    callee = [None] * alpha.num_symbols
    for sym, rs in enumerate(ranges):
        if len(rs) == 1 and rs[0][0] == rs[0][1] and REF_BASE <= rs[0][0] < REF_BASE + n_rules:
            callee[sym] = rs[0][0] - REF_BASE
    out = []
    for row in dfa.trans.tolist():
        chars, calls = [], []
        for sym, tgt in enumerate(row):
            if tgt == DEAD:
                continue
            if callee[sym] is not None:
                calls.append((callee[sym], tgt))
            else:
                chars.extend((lo, hi, tgt) for lo, hi in ranges[sym])
        out.append((chars, calls))
    return out


def _check_left_recursion(dfas: list[CharDFA], edges: list, names: tuple) -> None:
    """Refuse rules that can call themselves before reading a byte (the stack would grow forever)."""
    n = len(dfas)
    nullable = [False] * n
    left: list[set[int]] = [set() for _ in range(n)]
    changed = True
    while changed:
        changed = False
        for r in range(n):
            seen, todo = {START}, [START]
            while todo:
                q = todo.pop()
                if dfas[r].accept[q] and not nullable[r]:
                    nullable[r] = changed = True
                for callee, tgt in edges[r][q][1]:
                    if callee not in left[r]:
                        left[r].add(callee)
                        changed = True
                    if nullable[callee] and tgt not in seen:
                        seen.add(tgt)
                        todo.append(tgt)
    for r in range(n):
        todo, seen = list(left[r]), set()
        while todo:
            x = todo.pop()
            if x == r:
                raise CfgUnsupported(f"rule {names[r]!r} is left-recursive (it can reach itself before reading "
                                     "any text); rewrite `a: a x | y` as `a: y x*`")
            if x not in seen:
                seen.add(x)
                todo.extend(left[x])


def _to_bytes(dfas: list[CharDFA], edges: list, names: tuple) -> BytePDA:
    base, total = [], 1
    for d in dfas:
        base.append(total - 1)  # DFA state s (≥ 1) of rule r is byte state base[r] + s
        total += d.num_states - 1
    rows = [[0] * 256 for _ in range(total)]
    accept = [False] * total
    calls: list[tuple] = [()] * total

    def new_state() -> int:
        rows.append([0] * 256)
        accept.append(False)
        calls.append(())
        return len(rows) - 1

    memo: dict = {}
    for r, d in enumerate(dfas):
        acc = d.accept.tolist()
        for q in range(1, d.num_states):
            g = base[r] + q
            accept[g] = bool(acc[q])
            chars, rcalls = edges[r][q]
            calls[g] = tuple((base[c] + START, base[r] + t) for c, t in rcalls)
            items = [(seq, base[r] + t) for lo, hi, t in chars for seq in utf8_sequences(lo, hi)]
            fill_row(rows[g], items, rows, new_state, memo)
    starts = tuple(base[r] + START for r in range(len(dfas)))
    return BytePDA(np.array(rows, dtype=np.int32), np.array(accept, dtype=bool), tuple(calls), starts, names)
