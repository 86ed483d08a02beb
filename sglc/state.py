"""``ProgramState``: what a program's ``s`` is when it runs (eagerly) and what ``run`` returns."""
from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any

import ir

from .executor import RunContext, StreamExecutor
from .expr import as_expr
from .location import user_location
from .state_group import RoleMethods, StateGroup


class ProgramState(RoleMethods):
    """The state of one stream: append with ``+=``, read variables with ``s["name"]`` (set one with
    ``s["name"] = value``); roles with ``s.user(...)`` or ``with s.user():`` (:class:`RoleMethods`).

    Appends return immediately (generation runs on the stream's worker thread); reads wait.
    """

    def __init__(self, executor: StreamExecutor) -> None:
        self._ex = executor
        self.ret_value: Any = None
        self._anon = 0

    # -- appending --------------------------------------------------------------------------------
    def __iadd__(self, value: Any) -> ProgramState:  # noqa: PYI034
        loc = user_location(2)
        for node in as_expr(value).nodes:
            self._ex.submit(self._ex.ctx.next_id(), self._bind(node, loc))
        return self

    def _bind(self, node: ir.Node, loc: str) -> ir.Node:
        changes: dict[str, Any] = {"stream": self._ex.sid, "loc": loc}
        if node.defines == "":
            self._anon += 1
            changes["name"] = f"_gen_{self._anon}"
        return dataclasses.replace(node, **changes)

    # -- reading ----------------------------------------------------------------------------------
    def sync(self) -> None:
        """Wait for every pending gen/select of this stream; raise its error if one failed."""
        self._ex.sync()

    def __getitem__(self, name: str) -> Any:
        return self.get_var(name)

    def get_var(self, name: str) -> Any:
        """The value of variable ``name`` (waits for the gen that sets it)."""
        self._ex.sync()
        try:
            return self._ex.variables[name]
        except KeyError:
            raise KeyError(f"variable {name!r} is not set in this program state; set it with "
                           f"sgl.gen({name!r}) or sgl.select({name!r}, ...); known: "
                           f"{sorted(self._ex.variables)}") from None

    def set_var(self, name: str, value: Any) -> None:
        self._ex.sync()
        self._ex.variables[name] = value

    __setitem__ = set_var

    def __contains__(self, name: str) -> bool:
        self._ex.sync()
        return name in self._ex.variables

    def get_meta_info(self, name: str) -> dict[str, Any]:
        """Meta info of the gen/select that set ``name`` (token counts, finish reason, scores, ...)."""
        self._ex.sync()
        return self._ex.meta_info.get(name, {})

    def text(self) -> str:
        """The full prompt text so far (waits for pending generation)."""
        self._ex.sync()
        return self._ex.text

    def messages(self) -> list[dict[str, str]]:
        """The finished role blocks as ``[{"role": ..., "content": ...}, ...]``."""
        self._ex.sync()
        return list(self._ex.messages)

    def variables(self) -> dict[str, Any]:
        self._ex.sync()
        return dict(self._ex.variables)

    def error(self) -> BaseException | None:
        return self._ex.error

    def text_iter(self, var_name: str | None = None) -> Iterator[str]:
        """Yield text pieces as they are appended (of one variable if ``var_name``); ends with the program."""
        ex, i = self._ex, 0
        while True:
            with ex.cond:
                pieces = ex.chunks if var_name is None else ex.var_chunks.get(var_name, [])
                done = ex.ended or (var_name is not None and var_name in ex.var_done)
                while i >= len(pieces) and not done:
                    ex.cond.wait()
                    pieces = ex.chunks if var_name is None else ex.var_chunks.get(var_name, [])
                    done = ex.ended or (var_name is not None and var_name in ex.var_done)
                new, i = pieces[i:], len(pieces)
            yield from new
            if done and i >= len(pieces):
                break
        if ex.error is not None:
            raise ex.error

    async def text_async_iter(self, var_name: str | None = None) -> AsyncIterator[str]:
        """Async version of :meth:`text_iter` (the waiting happens in a worker thread)."""
        it = self.text_iter(var_name)
        sentinel = object()
        while True:
            piece = await asyncio.to_thread(next, it, sentinel)
            if piece is sentinel:
                return
            yield piece

    # -- forks ------------------------------------------------------------------------------------
    def fork(self, size: int = 1) -> ProgramStateGroup:
        """``size`` copies of this state that continue independently (and in parallel)."""
        ctx = self._ex.ctx
        loc = user_location(2)
        fork_id = ctx.next_id()
        self._ex.submit(fork_id, ir.Fork(stream=self._ex.sid, loc=loc, n=size))
        children = []
        for i in range(size):
            child = ctx.new_executor(f"{self._ex.sid}.{i}")
            child.submit(ctx.next_id(), ir.GetForkItem(stream=child.sid, loc=loc, fork=fork_id, index=i))
            children.append(child)
        ctx.fork_children[fork_id] = children
        return ProgramStateGroup([ProgramState(c) for c in children], self, fork_id)

    def __repr__(self) -> str:
        return f"ProgramState(stream={self._ex.sid!r}, text={self._ex.text[-40:]!r})"


class ProgramStateGroup(StateGroup["ProgramState"]):
    """The forks of a state: index them, append to all with ``+=``, and ``join()`` them."""

    def join(self, mode: str = "gather_variable") -> None:
        """Wait for the forks; ``gather_variable`` makes each new variable a list in the parent,
        ``concate_and_append`` appends each fork's new text to the parent."""
        if mode not in ir.JOIN_MODES:
            raise ValueError(f"join mode must be one of {ir.JOIN_MODES}, got {mode!r}")
        ex = self.parent._ex
        ex.submit(ex.ctx.next_id(), ir.Join(stream=ex.sid, loc=user_location(2), fork=self.fork_id, mode=mode))


def new_root_state(ctx: RunContext) -> ProgramState:
    return ProgramState(ctx.new_executor(ir.ROOT_STREAM))
