"""Tracing: run a program on symbolic values and record an ``ir.Graph``.

Arguments without a value become :class:`SymbolicArg`; ``s["name"]`` becomes :class:`SymbolicVar`.
Both can be appended (``s += arg``, ``"Q: " + arg``). Inspecting one (``if``, ``==``, ``in``, an
f-string, ``str()``, string methods, ``hash``) works only for a *select's* variable, whose values
are its finite choices: the program is then traced once per choice, and the runs are joined in a ``switch``
node whose cases are streams continuing the compared stream (``docs/compiler.md``, "Switch").
Inspecting anything else (an argument, a free-text gen) raises :class:`TraceError` naming the line
and the rewrite.

How the runs share one graph: every graph-building operation (an append, a fork, a join) of a run
is recorded under the run's *path* (the cases taken so far) and its position on that path. A later
run replays the operations its path shares with earlier runs (checking it does the same things) and
records only what is new. The first comparison on a select no path has decided yet stops the run;
the driver then runs the program once per choice, each taking that case there. Cleanup code run
while the stop signal unwinds (``finally``, a context manager's exit) records nothing; each run gets
its own deep copy of the bound arguments; a run must end where the earlier runs on its path did.
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import ir

from .errors import TraceError
from .expr import Expr, as_expr
from .location import user_location, user_source_line
from .state_group import RoleMethods, StateGroup

_FIXES = {
    "bool": "control flow cannot depend on a value known only at run time, except a select's: branch on "
            "sgl.select(name, choices=[...]) (`if s[name] == ...` traces one case per choice), or run the program "
            "eagerly with fn.run(...)",
    "str": "a traced value has no text yet; build text by concatenation (s += \"Q: \" + question) "
           "instead of f-strings, str() or %-formatting",
    "compare": "a traced value cannot be compared at trace time; decide with sgl.select (comparing a select's "
               "value traces one case per choice), or run eagerly",
    "method": "string methods run on text that does not exist yet at trace time; post-process after "
              "fn.run(...) or run the program eagerly",
    "number": "a traced value cannot be converted to a number at trace time; use a constant, or run eagerly",
    "free": "give it a finite set of values with sgl.gen(name, choices=[...]) (a select: the program is then "
            "traced once per choice into a switch), or run the program eagerly with fn.run(...)",
}
# At most this many runs of the program per trace (each undecided select comparison multiplies the paths).
MAX_TRACE_RUNS = 256


def _trace_error(what: str, fix_key: str) -> TraceError:
    loc, src = user_source_line(3)
    where = f"{loc}: `{src}`: " if loc else ""
    return TraceError(f"{where}{what}. Fix: {_FIXES[fix_key]}")


class Symbolic:
    """A value known only when the traced graph runs."""

    label = "value"

    def __sgl_nodes__(self) -> tuple[ir.Node, ...]:
        raise NotImplementedError

    def _concrete(self, what: str, fix_key: str) -> Any:
        """The value to inspect; only a select's variable has one (per traced case)."""
        raise _trace_error(f"{self.label} {what}", fix_key)

    def __add__(self, other: Any) -> Expr:
        return as_expr(self) + other

    def __radd__(self, other: Any) -> Expr:
        return as_expr(other) + as_expr(self)

    def __bool__(self) -> bool:
        return bool(self._concrete("is used as a condition", "bool"))

    def __str__(self) -> str:
        return str(self._concrete("is converted to str", "str"))

    def __format__(self, spec: str) -> str:
        return format(self._concrete("is formatted (f-string or format())", "str"), spec)

    def __eq__(self, other: object) -> bool:  # type: ignore[override]
        return self._concrete("is compared", "compare") == other

    def __ne__(self, other: object) -> bool:  # type: ignore[override]
        return self._concrete("is compared", "compare") != other

    def __lt__(self, other: Any) -> bool:
        return self._concrete("is compared", "compare") < other

    def __le__(self, other: Any) -> bool:
        return self._concrete("is compared", "compare") <= other

    def __gt__(self, other: Any) -> bool:
        return self._concrete("is compared", "compare") > other

    def __ge__(self, other: Any) -> bool:
        return self._concrete("is compared", "compare") >= other

    def __contains__(self, other: Any) -> bool:
        return other in self._concrete("is compared", "compare")

    def __hash__(self) -> int:
        # NOTE: consistent with __eq__ (which compares the case's value), so `s[v] in {"a", "b"}` and dict
        # lookups see the case value; hashing anything else (an argument, a gen) is a TraceError.
        return hash(self._concrete("is hashed (a set member or dict key)", "compare"))

    def __len__(self) -> int:
        return len(self._concrete("is measured with len()", "method"))

    def __iter__(self) -> Iterator[Any]:
        return iter(self._concrete("is iterated over", "method"))

    def __int__(self) -> int:
        return int(self._concrete("is converted to int()", "number"))

    def __float__(self) -> float:
        return float(self._concrete("is converted to float()", "number"))

    def __index__(self) -> int:
        raise _trace_error(f"{self.label} is used as an index", "number")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("name", "source", "tracer", "label"):
            raise AttributeError(name)  # NOTE: also keeps a half-built object (copy, pickle) from recursing
        return getattr(self._concrete(f"is used as a string (.{name})", "method"), name)


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
    """A variable set by a gen/select, read at trace time. A select's variable can be inspected: the
    program is traced once per choice (see the module docstring); a free-text gen's cannot."""

    def __init__(self, name: str, source: int, tracer: _Tracer | None = None) -> None:
        self.name = name
        self.source = source
        self.tracer = tracer
        self.label = f"generated variable {name!r}"

    def __sgl_nodes__(self) -> tuple[ir.Node, ...]:
        return (ir.VarRef(stream="", name=self.name, source=self.source),)

    def _concrete(self, what: str, fix_key: str) -> Any:
        node = self.tracer.graph.node(self.source) if self.tracer is not None else None
        if isinstance(node, ir.Select):
            return self.tracer.decide(self)  # type: ignore[union-attr]
        if isinstance(node, ir.Gen):
            raise _trace_error(f"{self.label} {what}, but it is the free text of gen %{self.source}: its values are "
                               "unbounded, so there is no finite set of cases to trace", "free")
        return super()._concrete(what, fix_key)

    def __repr__(self) -> str:
        return f"<traced variable {self.name} from %{self.source}>"


class _NewBranch(BaseException):
    """Stops a run at the first comparison on an undecided select (BaseException: user code's
    ``except Exception`` must not swallow it). ``n``: how many cases to run next."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.n = n


@dataclass
class _BranchPoint:
    """Where, on one path, the program first inspected select ``select``; its switch is made when a
    case first appends (on the stream it appends to), with one case stream per value."""

    select: int
    name: str
    cases: tuple[str, ...]
    pos: int
    loc: str
    source_line: str
    switch: int | None = None
    stream: str | None = None
    case_streams: dict[str, str] = field(default_factory=dict)


class _Tracer:
    """Builds one graph from the runs of a program, one run per path through its select comparisons."""

    def __init__(self, graph: ir.Graph) -> None:
        self.graph = graph
        self.segments: dict[tuple[int, ...], list[tuple[Any, Any]]] = {}  # path -> [(key, result)] per operation
        self.branches: dict[tuple[int, ...], _BranchPoint] = {}           # path -> the branch point ending it
        self.start(())

    def start(self, plan: tuple[int, ...]) -> None:
        """Begin a run that takes case ``plan[k]`` at its ``k``-th branch point."""
        self.plan = plan
        self.path: tuple[int, ...] = ()
        self.pos = 0
        self.bound: dict[int, str] = {}             # select id -> the value this run's case gives it
        self.alias: dict[str, str] = {}             # a switched stream -> the case stream continuing it
        self.pending: list[tuple[_BranchPoint, str]] = []  # cases entered, switch not placed yet
        self.inside: list[_BranchPoint] = []        # the branch points whose cases this run is in
        self.writable: set[str] | None = None       # inside a case: the streams it may append to
        self.stopping: _NewBranch | None = None      # the stop signal raised, while it unwinds the user's code

    # -- comparisons --------------------------------------------------------------------------------
    def decide(self, var: SymbolicVar) -> str:
        """The value of select ``var.source`` on this run's path; stops the run at a new branch point."""
        if self.stopping is not None:
            raise self.stopping  # NOTE: cleanup code (finally, __exit__) runs while the stop signal unwinds
        if var.source in self.bound:
            return self.bound[var.source]
        select = self.graph.node(var.source)
        assert isinstance(select, ir.Select)
        bp = self.branches.get(self.path)
        if bp is None:
            if self.pos < len(self.segments.get(self.path, [])):
                raise self._nondeterministic("compares a select where an earlier run did not")
            loc, src = user_source_line(3)
            bp = _BranchPoint(var.source, var.name, tuple(dict.fromkeys(select.choices)), self.pos, loc, src)
            self.branches[self.path] = bp
            self.stopping = _NewBranch(len(bp.cases))
            raise self.stopping
        if bp.select != var.source or bp.pos != self.pos:
            raise self._nondeterministic(f"compares select %{var.source} where an earlier run compared %{bp.select}")
        value = bp.cases[self.plan[len(self.path)]]
        self.bound[var.source] = value
        self.path += (self.plan[len(self.path)],)
        self.pos = 0
        self.pending.append((bp, value))
        return value

    # -- graph-building operations --------------------------------------------------------------------
    def op(self, sid: str, key: Any, make: Callable[[str], Any]) -> Any:
        """Record (first run on this path) or replay (later runs) one operation on stream ``sid``."""
        if self.stopping is not None:
            raise self.stopping  # NOTE: a finally/__exit__ appending while the run stops records nothing
        sid = self._resolve(sid)
        while self.pending:
            self._check_writable(sid)
            sid = self._enter(sid, *self.pending.pop(0))
        self._check_writable(sid)
        seg = self.segments.setdefault(self.path, [])
        if self.pos < len(seg):
            rkey, result = seg[self.pos]
            if rkey != (sid, key):
                raise self._nondeterministic(f"does {key[0]} on {sid} where an earlier run did {rkey[1][0]} on {rkey[0]}")
        else:
            bp = self.branches.get(self.path)
            if bp is not None and bp.pos <= self.pos:
                raise self._nondeterministic("goes on past a select comparison an earlier run stopped at")
            result = make(sid)
            seg.append(((sid, key), result))
        self.pos += 1
        return result

    def add(self, sid: str, node: ir.Node) -> int:
        def make(stream: str) -> int:
            nid = self.graph.add(dataclasses.replace(node, stream=stream))
            if isinstance(node, ir.VarRef):
                self.graph.add_edge(node.source, nid, "data")
            return nid

        return self.op(sid, (node.kind, node), make)

    def fork(self, sid: str, size: int, loc: str) -> tuple[int, list[str]]:
        def make(stream: str) -> tuple[int, list[str]]:
            fork_id = self.graph.add(ir.Fork(stream=stream, loc=loc, n=size))
            sids = []
            for i in range(size):
                child = self.graph.new_stream()
                head = self.graph.add(ir.GetForkItem(stream=child, loc=loc, fork=fork_id, index=i))
                self.graph.add_edge(fork_id, head, "fork")
                sids.append(child)
            return fork_id, sids

        fork_id, sids = self.op(sid, ("fork", size), make)
        if self.writable is not None:
            self.writable.update(sids)  # NOTE: streams forked inside a case belong to it
        return fork_id, sids

    def join(self, sid: str, fork_id: int, mode: str, children: list[str], loc: str) -> int:
        def make(stream: str) -> int:
            nid = self.graph.add(ir.Join(stream=stream, loc=loc, fork=fork_id, mode=mode))
            for child in children:
                self.graph.add_edge(self.graph.tail(self._resolve(child)), nid, "join")  # type: ignore[arg-type]
            return nid

        return self.op(sid, ("join", fork_id, mode), make)

    def _resolve(self, sid: str) -> str:
        while sid in self.alias:
            sid = self.alias[sid]
        return sid

    def _enter(self, sid: str, bp: _BranchPoint, value: str) -> str:
        """The run's first operation inside case ``value`` of ``bp`` is on ``sid``: place the switch there (the
        first time), and continue ``sid`` on the case's stream."""
        if bp.switch is None:
            bp.switch = self.graph.add(ir.Switch(stream=sid, loc=bp.loc, name=bp.name, source=bp.select,
                                                 cases=bp.cases))
            bp.stream = sid
            self.graph.add_edge(bp.select, bp.switch, "data")
            for v in bp.cases:
                case_sid = self.graph.new_stream()
                head = self.graph.add(ir.Case(stream=case_sid, loc=bp.loc, switch=bp.switch, value=v))
                self.graph.add_edge(bp.switch, head, "case")
                bp.case_streams[v] = case_sid
        elif bp.stream != sid:
            raise TraceError(f"{self._where(bp)}after comparing {bp.name!r}, the case {value!r} continues stream "
                             f"{sid}, but another case continued stream {bp.stream}; the cases of a switch continue "
                             "one stream. Fix: make every case append to the same state, or run the program "
                             "eagerly with fn.run(...)")
        self.alias[sid] = bp.case_streams[value]
        self.writable = {bp.case_streams[value]}
        self.inside.append(bp)
        return bp.case_streams[value]

    def _check_writable(self, sid: str) -> None:
        if self.writable is None or sid in self.writable:
            return
        bp = self.inside[-1]
        raise TraceError(f"{user_location(4)}: after {self._where(bp, short=True)}the program branched on select "
                         f"{bp.name!r} (%{bp.select}), it appends to stream {sid}, which existed before that "
                         f"comparison; a switch's cases may only continue the stream they start on ({bp.stream}) and "
                         "streams they fork. Fix: compare after joining the forks (or before forking), or run the "
                         "program eagerly with fn.run(...)")

    def _where(self, bp: _BranchPoint, short: bool = False) -> str:
        if short:
            return f"`{bp.source_line}` ({bp.loc}) " if bp.loc else ""
        return f"{bp.loc}: `{bp.source_line}`: " if bp.loc else ""

    def finish(self) -> str | None:
        """After the program returned normally: why this run does not match what earlier runs on its path
        did (``None`` when it does)."""
        if self.stopping is not None:
            return None
        bp = self.branches.get(self.path)
        if bp is not None or len(self.path) != len(self.plan):
            compared = f" select %{bp.select} ({bp.name!r}{', at ' + bp.loc if bp.loc else ''})" if bp else " a select"
            return f"returned before comparing{compared}, which an earlier run compared there"
        done = len(self.segments.get(self.path, []))
        if self.pos != done:
            return f"returned after {self.pos} of the {done} operations an earlier run did there"
        return None

    def _nondeterministic(self, what: str, where: str | None = None) -> TraceError:
        where = user_location(3) if where is None else where
        return TraceError(f"{where}: tracing ran the program once per select case, and this run {what}; "
                          "a traced program must do the same things whenever its selects chose the same values "
                          "(no randomness, clocks or outside state). Fix: make it deterministic, or run it eagerly")


class TracingState(RoleMethods):
    """The ``s`` of a program being traced; mirrors :class:`~sglc.state.ProgramState`."""

    def __init__(self, tracer: _Tracer, sid: str, defined: dict[str, int] | None = None) -> None:
        self.tracer = tracer
        self.graph = tracer.graph
        self.sid = sid
        self.defined: dict[str, int] = dict(defined or {})
        self._anon = [0]

    def __iadd__(self, value: Any) -> TracingState:  # noqa: PYI034
        loc = user_location(2)
        for node in as_expr(value).nodes:
            self._check_params(node)
            changes: dict[str, Any] = {"loc": loc}
            if node.defines == "":
                self._anon[0] += 1
                changes["name"] = f"_gen_{self._anon[0]}"
            node = dataclasses.replace(node, **changes)
            nid = self.tracer.add(self.sid, node)
            if node.defines:
                self.defined[node.defines] = nid
        return self

    def _check_params(self, node: ir.Node) -> None:
        for key, value in getattr(node, "params", {}).items():
            if isinstance(value, Symbolic):
                raise _trace_error(f"sampling parameter {key} is a traced value", "number")

    def __getitem__(self, name: str) -> SymbolicVar:
        if name not in self.defined:
            raise TraceError(f"{user_location(2)}: variable {name!r} is not set on this stream before it is read; "
                             f"set it with sgl.gen({name!r}) first (after a gather join, read forks[i][{name!r}])")
        return SymbolicVar(name, self.defined[name], self.tracer)

    get_var = __getitem__

    def __setitem__(self, name: str, value: Any) -> None:
        raise TraceError(f"{user_location(2)}: a traced program cannot set variable {name!r} to a Python value "
                         "(the graph has no node for it); set it with sgl.gen, or run the program eagerly with "
                         "fn.run(...)")

    def fork(self, size: int = 1) -> TracingStateGroup:
        fork_id, sids = self.tracer.fork(self.sid, size, user_location(2))
        children = []
        for sid in sids:
            child = TracingState(self.tracer, sid, self.defined)
            child._anon = self._anon
            children.append(child)
        return TracingStateGroup(children, self, fork_id)

    def _no_read(self, *args: Any, **kwargs: Any) -> Any:
        raise TraceError(f"{user_location(2)}: a traced program cannot read its text or messages while "
                         "tracing (they do not exist yet); read them from the state fn.run(...) returns")

    text = messages = sync = get_meta_info = text_iter = _no_read


class TracingStateGroup(StateGroup["TracingState"]):
    """The forks of a traced state."""

    def join(self, mode: str = "gather_variable") -> None:
        if mode not in ir.JOIN_MODES:
            raise TraceError(f"join mode must be one of {ir.JOIN_MODES}, got {mode!r}")
        self.parent.tracer.join(self.parent.sid, self.fork_id, mode, [c.sid for c in self.states], user_location(2))


def trace_function(func: Callable[..., Any], name: str, bound: dict[str, Any], kwargs: dict[str, Any]) -> ir.Graph:
    """Trace ``func(s, ...)``: parameters without a value (and without a default) become symbolic.

    The program runs once, plus once per case of every select it inspects (see the module docstring).
    """
    params = list(inspect.signature(func).parameters.values())[1:]
    values = {**bound, **kwargs}
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    params = [p for p in params if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    unknown = sorted(set(values) - {p.name for p in params})
    if unknown and not takes_kwargs:
        raise TraceError(f"{name}() got unexpected argument(s) {unknown}")
    symbolic = [p.name for p in params if p.name not in values and p.default is inspect.Parameter.empty]
    graph = ir.Graph(name, tuple(symbolic))
    tracer = _Tracer(graph)
    plans: list[tuple[int, ...]] = [()]
    runs = 0
    while plans:
        plan = plans.pop()
        runs += 1
        if runs > MAX_TRACE_RUNS:
            raise TraceError(f"{name}: tracing needs more than {MAX_TRACE_RUNS} runs (one per path through its "
                             "select comparisons); compare fewer selects, or run the program eagerly with fn.run(...)")
        tracer.start(plan)
        args = {**{n: SymbolicArg(n) for n in symbolic}, **_fresh(values)}
        try:
            func(TracingState(tracer, ir.ROOT_STREAM), **args)
        except _NewBranch as branch:
            plans.extend(plan + (i,) for i in reversed(range(branch.n)))  # NOTE: first case first (stable ids)
            continue
        if tracer.stopping is not None:
            raise TraceError(f"{_def_location(func)}: {name}() caught the tracer's signal to stop at a select "
                             "comparison (a bare `except:` or `except BaseException:`) and returned normally; "
                             "tracing runs the program once per select case and needs that signal to pass. "
                             "Fix: catch Exception instead, or run the program eagerly with fn.run(...)")
        mismatch = tracer.finish()
        if mismatch is not None:
            raise tracer._nondeterministic(mismatch, f"{_def_location(func)}: {name}()")
    return ir.verify(graph)


def _fresh(values: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of the bound arguments for one run, so that a case that mutates one (``items.append``)
    does not change what later runs see; the originals when they cannot be copied."""
    try:
        return copy.deepcopy(values)
    except Exception:  # noqa: BLE001 - NOTE: uncopyable values (locks, clients) are shared between runs
        return dict(values)


def _def_location(func: Callable[..., Any]) -> str:
    code = getattr(inspect.unwrap(func), "__code__", None)
    return f"{code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno}" if code is not None else "?"
