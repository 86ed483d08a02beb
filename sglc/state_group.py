"""What program states and traced states share: the role methods, and the container ``fork`` returns."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

S = TypeVar("S")


class RoleMethods:
    """``s.system()`` / ``s.user()`` / ``s.assistant()`` (SGLang's): with no argument a context manager
    (``with s.user(): s += "Hi"``); with an expression, that expression appended inside the role
    (``s.user("Hi")``, the same as ``s += sgl.user("Hi")``)."""

    @contextlib.contextmanager
    def _role(self, role: str) -> Iterator[None]:
        from . import expr

        self += getattr(expr, f"{role}_begin")()
        yield
        self += getattr(expr, f"{role}_end")()

    def _role_common(self, role: str, body: Any) -> contextlib.AbstractContextManager | None:
        if body is None:
            return self._role(role)
        from . import expr

        self += getattr(expr, role)(body)
        return None

    def system(self, expr: Any = None) -> contextlib.AbstractContextManager | None:
        """``with s.system(): s += "..."``, or ``s.system("You are ...")``."""
        return self._role_common("system", expr)

    def user(self, expr: Any = None) -> contextlib.AbstractContextManager | None:
        """``with s.user(): s += "..."``, or ``s.user("Hi")``."""
        return self._role_common("user", expr)

    def assistant(self, expr: Any = None) -> contextlib.AbstractContextManager | None:
        """``with s.assistant(): s += sgl.gen("answer")``, or ``s.assistant(sgl.gen("answer"))``."""
        return self._role_common("assistant", expr)


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

    def __setitem__(self, i: int, state: S) -> None:
        # NOTE: ``forks[i] += expr`` appends to fork i, then assigns the same state back
        if state is not self.states[i]:
            raise TypeError("a fork can't be replaced: append to it with forks[i] += ...")

    def __iadd__(self, other: Any):
        """``forks += expr`` appends to every fork; a list/tuple gives one item per fork, and a function of
        the fork's index (``forks += lambda i: f"Tip {i + 1}: " + sgl.gen(...)``) makes each fork's item."""
        if callable(other) and not hasattr(other, "nodes"):
            items: Any = [other(i) for i in range(len(self.states))]
        else:
            items = other if isinstance(other, (list, tuple)) else [other] * len(self.states)
        for state, item in zip(self.states, items):
            state += item
        return self
