"""Symbol alphabet of one constraint: code points grouped by which character classes hold them.

Every ``chars`` node of an ``rx`` tree is a set of code points; the elementary intervals between
all their bounds are *atoms*, and atoms with the same membership signature form one *symbol*.
Automata then run over a handful of symbols instead of 1.1M code points.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import rx


@dataclass(frozen=True, eq=False)
class Alphabet:
    """``atom_starts`` (sorted int64, first is 0) and ``atom_sym`` (symbol of each atom)."""

    atom_starts: np.ndarray
    atom_sym: np.ndarray
    num_symbols: int
    class_syms: dict  # ranges tuple → sorted tuple of symbol ids (only needed while compiling)

    def symbols_of(self, cps: np.ndarray) -> np.ndarray:
        """Symbol id of each code point (vectorized)."""
        return self.atom_sym[np.searchsorted(self.atom_starts, cps, side="right") - 1]

    def symbol_of(self, cp: int) -> int:
        return int(self.symbols_of(np.array([cp]))[0])

    def live_atoms(self) -> np.ndarray:
        """Atoms that hold encodable code points (not surrogates)."""
        return (self.atom_starts < 0xD800) | (self.atom_starts >= 0xE000)

    def symbol_sizes(self) -> np.ndarray:
        """Number of code points in each symbol (surrogates included)."""
        ends = np.append(self.atom_starts[1:], rx.MAX_CP + 1)
        return np.bincount(self.atom_sym, weights=ends - self.atom_starts,
                           minlength=self.num_symbols).astype(np.int64)

    def first_cp(self) -> np.ndarray:
        """The smallest code point of each symbol."""
        out = np.full(self.num_symbols, -1, dtype=np.int64)
        for s, start in zip(self.atom_sym[::-1].tolist(), self.atom_starts[::-1].tolist()):
            out[s] = start
        return out


def collect_classes(node: rx.Node, out: set) -> set:
    """All character classes of ``node`` (a DAG: shared subtrees are visited once)."""
    seen: set[int] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        kind = n[0]
        if kind == "chars":
            out.add(n[1])
        elif kind in ("seq", "alt"):
            stack.extend(n[1])
        elif kind == "mod":
            out.update(((c, c),) for c in b"-0123456789")
        elif kind in ("rep", "unit"):
            stack.append(n[1])
        else:  # and / diff
            stack.append(n[1])
            stack.append(n[2])
    return out


def build_alphabet(node: rx.Node) -> Alphabet:
    """The alphabet of ``node``: atoms and symbols from all its character classes."""
    classes = sorted(collect_classes(node, set()))
    bounds = {0, 0xD800, 0xE000}  # surrogates get atoms of their own (never valid UTF-8)
    for ranges in classes:
        for lo, hi in ranges:
            bounds.add(lo)
            if hi < rx.MAX_CP:
                bounds.add(hi + 1)
    starts = np.array(sorted(bounds), dtype=np.int64)
    member = np.zeros((len(starts), max(len(classes), 1)), dtype=bool)
    for ci, ranges in enumerate(classes):
        if not ranges:
            continue
        arr = np.asarray(ranges, dtype=np.int64)
        # an atom is in the class iff its start lies in one of the ranges
        idx = np.searchsorted(arr[:, 0], starts, side="right") - 1
        ok = idx >= 0
        member[ok, ci] = starts[ok] <= arr[idx[ok], 1]
    _, atom_sym = np.unique(member, axis=0, return_inverse=True)
    atom_sym = atom_sym.reshape(-1).astype(np.int64)
    class_syms = {}
    for ci, ranges in enumerate(classes):
        class_syms[ranges] = tuple(sorted(set(atom_sym[member[:, ci]].tolist())))
    return Alphabet(starts, atom_sym, int(atom_sym.max()) + 1, class_syms)
