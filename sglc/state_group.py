"""The container both program states and traced states return from ``fork``."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar

S = TypeVar("S")


class StateGroup(Generic[S]):
    """The forks of a state: index them, iterate, and append to all with ``+=`` (one item, or one per fork).
    Subclasses define ``join``."""

    def __init__(self, states: list[S], parent: S, fork_id: int) -> None:
        self.states = states
        self.parent = parent
        self.fork_id = fork_id

    def __getitem__(self, i: int) -> S:
        return self.states[i]

    def __len__(self) -> int:
        return len(self.states)

    def __iter__(self) -> Iterator[S]:
        return iter(self.states)

    def __iadd__(self, other: Any):
        items = other if isinstance(other, (list, tuple)) else [other] * len(self.states)
        for state, item in zip(self.states, items):
            state += item
        return self
