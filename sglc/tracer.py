"""Tracing: run a program once on symbolic values and record an ``ir.Graph``.

Arguments without a value become :class:`SymbolicArg`; ``s["name"]`` becomes :class:`SymbolicVar`.
Both can be appended (``s += arg``, ``"Q: " + arg``) but not inspected: using one in ``if``,
an f-string, ``str()``, comparisons or string methods raises :class:`TraceError` naming the line
and the rewrite.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import ir

from .errors import TraceError
from .expr import Expr, as_expr
from .location import user_location, user_source_line
from .state_group import StateGroup

_FIXES = {
    "bool": "control flow cannot depend on a value known only at run time; branch with "
            "sgl.select(name, choices=[...]) and append per-choice text, or run the program eagerly with fn.run(...)",
    "str": "a traced value has no text yet; build text by concatenation (s += \"Q: \" + question) "
           "instead of f-strings, str() or %-formatting",
    "compare": "a traced value cannot be compared at trace time; use sgl.select for decisions, or run eagerly",
    "method": "string methods run on text that does not exist yet at trace time; post-process after "
              "fn.run(...) or run the program eagerly",
    "number": "a traced value cannot be converted to a number at trace time; use a constant, or run eagerly",
}


def _trace_error(what: str, fix_key: str) -> TraceError:
    loc, src = user_source_line(3)
    where = f"{loc}: `{src}`: " if loc else ""
    return TraceError(f"{where}{what}. Fix: {_FIXES[fix_key]}")


class Symbolic:
    """A value known only when the traced graph runs."""

    label = "value"

    def __sgl_nodes__(self) -> tuple[ir.Node, ...]:
        raise NotImplementedError

    def __add__(self, other: Any) -> Expr:
        return as_expr(self) + other

    def __radd__(self, other: Any) -> Expr:
        return as_expr(other) + as_expr(self)

    def __bool__(self) -> bool:
        raise _trace_error(f"{self.label} is used as a condition", "bool")

    def __str__(self) -> str:
        raise _trace_error(f"{self.label} is converted to str", "str")

    def __format__(self, spec: str) -> str:
        raise _trace_error(f"{self.label} is formatted (f-string or format())", "str")

    def _compare(self, other: Any) -> bool:
        raise _trace_error(f"{self.label} is compared", "compare")

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __contains__ = _compare  # type: ignore[assignment]
    __hash__ = object.__hash__

    def __len__(self) -> int:
        raise _trace_error(f"len() of {self.label}", "method")

    def __iter__(self) -> Iterator[Any]:
        raise _trace_error(f"iterating over {self.label}", "method")

    def __int__(self) -> int:
        raise _trace_error(f"int() of {self.label}", "number")

    __float__ = __index__ = __int__  # type: ignore[assignment]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise _trace_error(f"{self.label}.{name} is called", "method")


class SymbolicArg(Symbolic):
    """A program argument left open at trace time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.label = f"argument {name!r}"

    def __sgl_nodes__(self) -> tuple[ir.Node, ...]:
        return (ir.Argument(stream="", name=self.name),)

    def __repr__(self) -> str:
        return f"<traced argument {self.name}>"


class SymbolicVar(Symbolic):
    """A variable set by a gen/select, read at trace time."""

    def __init__(self, name: str, source: int) -> None:
        self.name = name
        self.source = source
        self.label = f"generated variable {name!r}"

    def __sgl_nodes__(self) -> tuple[ir.Node, ...]:
        return (ir.VarRef(stream="", name=self.name, source=self.source),)

    def __repr__(self) -> str:
        return f"<traced variable {self.name} from %{self.source}>"


class _Recorder(ir.NodeVisitor):
    """Adds one bound node to the graph; var_refs also get their data edge."""

    def __init__(self, state: TracingState) -> None:
        self.state = state

    def generic_visit(self, nid: int, node: ir.Node) -> int:
        nid = self.state.graph.add(node)
        if node.defines:
            self.state.defined[node.defines] = nid
        return nid

    def visit_var_ref(self, nid: int, node: ir.VarRef) -> int:
        new = self.generic_visit(nid, node)
        self.state.graph.add_edge(node.source, new, "data")
        return new


class TracingState:
    """The ``s`` of a program being traced; mirrors :class:`~sglc.state.ProgramState`."""

    def __init__(self, graph: ir.Graph, sid: str, defined: dict[str, int] | None = None) -> None:
        self.graph = graph
        self.sid = sid
        self.defined: dict[str, int] = dict(defined or {})
        self._anon = [0]

    def __iadd__(self, value: Any) -> TracingState:  # noqa: PYI034
        loc = user_location(2)
        for node in as_expr(value).nodes:
            self._check_params(node)
            changes: dict[str, Any] = {"stream": self.sid, "loc": loc}
            if node.defines == "":
                self._anon[0] += 1
                changes["name"] = f"_gen_{self._anon[0]}"
            _Recorder(self).visit(-1, dataclasses.replace(node, **changes))
        return self

    def _check_params(self, node: ir.Node) -> None:
        for key, value in getattr(node, "params", {}).items():
            if isinstance(value, Symbolic):
                raise _trace_error(f"sampling parameter {key} is a traced value", "number")

    def __getitem__(self, name: str) -> SymbolicVar:
        if name not in self.defined:
            raise TraceError(f"{user_location(2)}: variable {name!r} is not set on this stream before it is read; "
                             f"set it with sgl.gen({name!r}) first (after a gather join, read forks[i][{name!r}])")
        return SymbolicVar(name, self.defined[name])

    get_var = __getitem__

    def fork(self, size: int = 1) -> TracingStateGroup:
        loc = user_location(2)
        fork_id = self.graph.add(ir.Fork(stream=self.sid, loc=loc, n=size))
        children = []
        for i in range(size):
            sid = self.graph.new_stream()
            head = self.graph.add(ir.GetForkItem(stream=sid, loc=loc, fork=fork_id, index=i))
            self.graph.add_edge(fork_id, head, "fork")
            child = TracingState(self.graph, sid, self.defined)
            child._anon = self._anon
            children.append(child)
        return TracingStateGroup(children, self, fork_id)

    @contextlib.contextmanager
    def _role(self, role: str) -> Iterator[None]:
        self += Expr((ir.RoleBegin(stream="", role=role),))
        yield
        self += Expr((ir.RoleEnd(stream="", role=role),))

    def system(self) -> contextlib.AbstractContextManager:
        return self._role("system")

    def user(self) -> contextlib.AbstractContextManager:
        return self._role("user")

    def assistant(self) -> contextlib.AbstractContextManager:
        return self._role("assistant")

    def _no_read(self, *args: Any, **kwargs: Any) -> Any:
        raise TraceError(f"{user_location(2)}: a traced program cannot read its text or messages while "
                         "tracing (they do not exist yet); read them from the state fn.run(...) returns")

    text = messages = sync = get_meta_info = text_iter = _no_read


class TracingStateGroup(StateGroup["TracingState"]):
    """The forks of a traced state."""

    def join(self, mode: str = "gather_variable") -> None:
        if mode not in ir.JOIN_MODES:
            raise TraceError(f"join mode must be one of {ir.JOIN_MODES}, got {mode!r}")
        graph = self.parent.graph
        nid = graph.add(ir.Join(stream=self.parent.sid, loc=user_location(2), fork=self.fork_id, mode=mode))
        for child in self.states:
            graph.add_edge(graph.tail(child.sid), nid, "join")


def trace_function(func: Callable[..., Any], name: str, bound: dict[str, Any], kwargs: dict[str, Any]) -> ir.Graph:
    """Trace ``func(s, ...)``: parameters without a value (and without a default) become symbolic."""
    params = list(inspect.signature(func).parameters.values())[1:]
    values = {**bound, **kwargs}
    unknown = sorted(set(values) - {p.name for p in params})
    if unknown:
        raise TraceError(f"{name}() got unexpected argument(s) {unknown}")
    symbolic = [p.name for p in params if p.name not in values and p.default is inspect.Parameter.empty]
    graph = ir.Graph(name, tuple(symbolic))
    args = {**{n: SymbolicArg(n) for n in symbolic}, **values}
    func(TracingState(graph, ir.ROOT_STREAM), **args)
    return ir.verify(graph)
