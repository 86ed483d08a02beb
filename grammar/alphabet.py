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
    sizes = [len(ranges) for ranges in classes]
    ranges = np.array([r for rs in classes for r in rs], dtype=np.int64).reshape(-1, 2)
    ends = ranges[:, 1] + 1
    # surrogates get atoms of their own (never valid UTF-8)
    starts = np.unique(np.concatenate([[0, 0xD800, 0xE000], ranges[:, 0], ends[ends <= rx.MAX_CP]]))
    # membership [atom, class] by +1/-1 at each range's first and past-the-end atom, summed down
    num_classes = max(len(classes), 1)
    cls = np.repeat(np.arange(len(classes)), sizes)
    cells = (len(starts) + 1) * num_classes
    first = np.searchsorted(starts, ranges[:, 0]) * num_classes + cls
    past = np.searchsorted(starts, ends) * num_classes + cls
    diff = np.bincount(first, minlength=cells) - np.bincount(past, minlength=cells)
    member = np.cumsum(diff.reshape(-1, num_classes), axis=0)[:-1] > 0
    atom_sym = _row_ids(member)
    num_symbols = int(atom_sym.max()) + 1
    present = np.zeros((num_classes, num_symbols), dtype=bool)
    rows, cols = np.nonzero(member)
    present[cols, atom_sym[rows]] = True
    class_syms = {ranges: tuple(np.flatnonzero(present[ci]).tolist()) for ci, ranges in enumerate(classes)}
    return Alphabet(starts, atom_sym, num_symbols, class_syms)


def _row_ids(member: np.ndarray) -> np.ndarray:
    """Dense ids of the distinct rows of a bool matrix, numbered in sorted row order.

    NOTE: rows are packed into uint64 words first; sorting a few words per row is far faster than
    ``np.unique(axis=0)`` over bools (thousands of atoms for Unicode classes such as ``\\w``).
    """
    packed = np.packbits(member, axis=1)
    words = (packed.shape[1] + 7) // 8
    padded = np.zeros((len(member), 8 * words), dtype=np.uint8)
    padded[:, :packed.shape[1]] = packed
    keys = padded.view(">u8")  # big-endian: word order = bit order
    if words == 1:
        _, inv = np.unique(keys[:, 0], return_inverse=True)
    else:
        _, inv = np.unique(keys, axis=0, return_inverse=True)
    return inv.reshape(-1).astype(np.int64)
