"""Stream executors: one worker thread per stream applies IR nodes to that stream's prompt.

Both interpreters feed the same executors: the eager interpreter submits nodes as the Python
program appends them; the graph interpreter submits an ``ir.Graph``'s nodes in dependency
order. Each node kind has one ``visit_<kind>`` method here (the only dispatch on kind).
Submitting never blocks (gens are non-blocking); reading a variable or the text waits.

Switches: the graph interpreter submits every case of a switch to the executor of the switch's
stream (a case continues that stream). The switch records the value its select chose; each case head
then either lets its stream run or marks it skipped, so only the taken case's nodes run. A fork in
a skipped case hands its children a "skipped" slot, so their streams skip too.
"""
from __future__ import annotations

import itertools
import logging
import queue
import threading
from concurrent.futures import Future, InvalidStateError
from typing import Any

import ir

from .backend.base import Backend, Prompt
from .errors import InterpreterError
from .sampling import merge

logger = logging.getLogger(__name__)


def settle(fut: Future, value: Any = None, error: BaseException | None = None) -> None:
    """Complete ``fut`` unless another thread did first (a stream's value racing a run's failure)."""
    try:
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(value)
    except InvalidStateError:
        pass


_END = object()
_SKIPPED = object()  # the fork slot of a fork inside a switch case that was not taken


class RunContext:
    """What the executors of one program run share: backend, defaults, arguments, fork hand-offs."""

    def __init__(self, backend: Backend, defaults: dict[str, Any], arguments: dict[str, Any] | None = None,
                 stream: bool = False) -> None:
        self.backend = backend
        self.template = backend.chat_template
        self.defaults = defaults
        self.arguments = arguments or {}
        self.stream = stream
        self.executors: list[StreamExecutor] = []
        self.results: dict[int, Future] = {}  # node id -> value of a gen/select (graph mode var_refs)
        self.fork_slots: dict[int, Future] = {}  # fork node id -> parent snapshot at the fork
        self.fork_children: dict[int, list[StreamExecutor]] = {}
        self._ids = itertools.count(1 << 20)  # eager node ids, far from graph ids
        self._lock = threading.Lock()
        self.failed: BaseException | None = None  # the first stream error: what every later wait raises

    def next_id(self) -> int:
        return next(self._ids)

    def _future(self, table: dict[int, Future], nid: int) -> Future:
        with self._lock:
            fut = table.get(nid)
            if fut is None:
                fut = table[nid] = Future()
                # NOTE: a wait that starts after the run failed must not outlive it (fail_pending only
                # reaches the futures that existed when it ran).
                if self.failed is not None:
                    fut.set_exception(self.failed)
            return fut

    def result(self, nid: int) -> Future:
        return self._future(self.results, nid)

    def fork_slot(self, nid: int) -> Future:
        return self._future(self.fork_slots, nid)

    def new_executor(self, sid: str) -> StreamExecutor:
        ex = StreamExecutor(sid, self)
        with self._lock:
            self.executors.append(ex)
        return ex

    def end_all(self) -> None:
        """Let every executor finish its queue and stop."""
        with self._lock:
            executors = list(self.executors)
        for ex in executors:
            ex.end()

    def fail_pending(self, error: BaseException) -> None:
        """Wake everything waiting on a fork or a value that will now never come (and all later waits)."""
        with self._lock:
            if self.failed is None:
                self.failed = error
            futures = list(self.fork_slots.values()) + list(self.results.values())
        for fut in futures:
            settle(fut, error=error)


class StreamExecutor(ir.NodeVisitor):
    """Owns one stream's text, messages and variables; applies submitted nodes in order on its thread."""

    def __init__(self, sid: str, ctx: RunContext, threaded: bool = True) -> None:
        """``threaded=False``: no worker thread; the caller applies nodes itself with :meth:`apply`."""
        self.sid = sid
        self.ctx = ctx
        self.text = ""
        self.messages: list[dict[str, str]] = []
        self.variables: dict[str, Any] = {}
        self.meta_info: dict[str, dict[str, Any]] = {}
        self.images: list[str] = []
        self.cur_role: str | None = None
        self.role_start = 0
        self.fork_start = 0
        self.error: BaseException | None = None
        self.chunks: list[str] = []  # appended text pieces, for text_iter
        self.var_chunks: dict[str, list[str]] = {}
        self.var_done: set[str] = set()
        self.ended = False
        self._end_sent = False
        self.taken: dict[int, str] = {}     # switch id -> the case value it took
        self.skipped: set[str] = set()      # case streams (and children of their forks) that do not run
        self.cond = threading.Condition()
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name=f"sglc-{sid}", daemon=True)
        if threaded:
            self.thread.start()

    # -- submission and waiting ----------------------------------------------------------------
    def submit(self, nid: int, node: ir.Node) -> None:
        if self._end_sent:
            # NOTE: the worker thread stops at the end marker: a node queued after it never runs, and the next
            # read (sync) would wait for it forever.
            raise InterpreterError(f"stream {self.sid} already ended (its program's run returned); append to a "
                                   "state only while its program runs")
        self.queue.put((nid, node))

    def end(self) -> None:
        # NOTE: sent even to a stream that ended on an error, so its thread exits instead of waiting forever
        if not self._end_sent:
            self._end_sent = True
            self.queue.put((-1, _END))

    def sync(self) -> None:
        """Wait until every submitted node ran; raise the stream's error, if any."""
        self.queue.join()
        if self.error is not None:
            raise self.error

    def _loop(self) -> None:
        while True:
            nid, node = self.queue.get()
            try:
                if node is _END:
                    self._mark_ended()
                    return
                self._run(nid, node)
            finally:
                self.queue.task_done()

    def _run(self, nid: int, node: ir.Node) -> None:
        try:
            if self.error is None:
                if node.stream in self.skipped:
                    self._skip(nid, node)
                else:
                    node.accept(self, nid)
        except BaseException as e:  # noqa: BLE001 -- recorded and re-raised to the caller at sync()
            self._record_error(nid, node, e)

    def apply(self, nid: int, node: ir.Node) -> None:
        """Run ``node`` on the calling thread (an executor made with ``threaded=False``); raise its error."""
        self._run(nid, node)
        if self.error is not None:
            raise self.error

    def _skip(self, nid: int, node: ir.Node) -> None:
        """A node of a switch case not taken: nothing runs; a fork tells its children to skip as well."""
        if isinstance(node, ir.Fork):
            settle(self.ctx.fork_slot(nid), _SKIPPED)

    def _record_error(self, nid: int, node: ir.Node, e: BaseException) -> None:
        if isinstance(e, InterpreterError):
            err = e
        else:
            where = f"{node.loc}: " if node.loc else ""
            name = getattr(node, "name", "")
            what = f"{node.kind}({name!r})" if name else node.kind
            err = InterpreterError(f"{where}{what} failed on stream {self.sid}: {type(e).__name__}: {e}")
            err.__cause__ = e
        logger.debug("stream %s failed at %%%s: %s", self.sid, nid, err)
        self.error = err
        self.ctx.fail_pending(err)
        self._mark_ended()

    def _mark_ended(self) -> None:
        with self.cond:
            self.ended = True
            self.cond.notify_all()

    # -- state helpers ---------------------------------------------------------------------------
    def append(self, piece: str, var: str | None = None) -> None:
        if not piece:
            return
        with self.cond:
            self.text += piece
            self.chunks.append(piece)
            if var is not None:
                self.var_chunks.setdefault(var, []).append(piece)
            self.cond.notify_all()

    def set_var(self, nid: int, name: str, value: Any, meta: dict[str, Any] | None = None) -> None:
        with self.cond:
            self.variables[name] = value
            if meta is not None:
                self.meta_info[name] = meta
            self.var_done.add(name)
            self.cond.notify_all()
        settle(self.ctx.result(nid), value)

    def prompt(self) -> Prompt:
        role_text = self.text[self.role_start:] if self.cur_role else ""
        return Prompt(self.text, tuple(self.messages), self.cur_role, role_text, tuple(self.images))

    def snapshot(self) -> dict[str, Any]:
        return {"text": self.text, "messages": list(self.messages), "variables": dict(self.variables),
                "meta_info": dict(self.meta_info), "images": list(self.images), "cur_role": self.cur_role,
                "role_start": self.role_start}

    # -- one method per node kind -------------------------------------------------------------------
    def visit_text(self, nid: int, n: ir.Text) -> None:
        self.append(n.text)

    def visit_argument(self, nid: int, n: ir.Argument) -> None:
        if n.name not in self.ctx.arguments:
            raise InterpreterError(f"{n.loc}: the program argument {n.name!r} was not given; pass it as "
                                   f"{n.name}=... when running the graph")
        self.append(str(self.ctx.arguments[n.name]))

    def visit_gen(self, nid: int, n: ir.Gen) -> None:
        params = merge(self.ctx.defaults, n.params)
        if self.ctx.stream:
            meta: dict[str, Any] = {}
            pieces = []
            for delta, final in self.ctx.backend.generate_stream(self.prompt(), params, n.dtype):
                pieces.append(delta)
                self.append(delta, n.name)
                meta = final if final is not None else meta
            self.set_var(nid, n.name, "".join(pieces), meta)
            return
        out = self.ctx.backend.generate(self.prompt(), params, n.dtype)
        self.append(out.text, n.name)
        self.set_var(nid, n.name, out.text, out.meta_info)

    def visit_select(self, nid: int, n: ir.Select) -> None:
        out = self.ctx.backend.select(self.prompt(), n.choices, n.choices_method, n.temperature)
        self.append(out.choice, n.name)
        self.set_var(nid, n.name, out.choice, out.meta_info)

    def visit_fork(self, nid: int, n: ir.Fork) -> None:
        settle(self.ctx.fork_slot(nid), self.snapshot())

    def visit_get_fork_item(self, nid: int, n: ir.GetForkItem) -> None:
        snap = self.ctx.fork_slot(n.fork).result()
        if snap is _SKIPPED:
            self.skipped.add(n.stream)
            return
        with self.cond:
            self.text = snap["text"]
            self.messages = list(snap["messages"])
            self.variables = dict(snap["variables"])
            self.meta_info = dict(snap["meta_info"])
            self.images = list(snap["images"])
            self.cur_role = snap["cur_role"]
            self.role_start = snap["role_start"]
            self.fork_start = len(self.text)

    def visit_join(self, nid: int, n: ir.Join) -> None:
        children = self.ctx.fork_children.get(n.fork, [])
        for child in children:
            child.sync()
        if n.mode == "concate_and_append":
            for child in children:
                self.append(child.text[child.fork_start:])
            return
        before = self.ctx.fork_slot(n.fork).result()["variables"]
        names = dict.fromkeys(k for c in children for k in c.variables if k not in before)
        for name in names:
            self.set_var(nid, name, [c.variables.get(name) for c in children])

    def visit_role_begin(self, nid: int, n: ir.RoleBegin) -> None:
        if self.cur_role is not None:
            raise InterpreterError(f"{n.loc}: role {n.role!r} begins inside role {self.cur_role!r}; "
                                   "end the previous role first (roles cannot nest)")
        default_system = self.ctx.template.default_system_prompt
        if not self.messages and n.role != "system" and default_system and self.cur_role is None:
            # NOTE: like SGLang, a conversation without a system message gets the template's default one.
            self.visit_role_begin(nid, ir.RoleBegin(stream=n.stream, role="system"))
            self.append(default_system)
            self.visit_role_end(nid, ir.RoleEnd(stream=n.stream, role="system"))
        self.append(self.ctx.template.prefix(n.role))
        self.cur_role = n.role
        self.role_start = len(self.text)

    def visit_role_end(self, nid: int, n: ir.RoleEnd) -> None:
        if self.cur_role != n.role:
            raise InterpreterError(f"{n.loc}: role_end {n.role!r} but the open role is {self.cur_role!r}")
        self.messages.append({"role": n.role, "content": self.text[self.role_start:]})
        self.cur_role = None
        self.append(self.ctx.template.suffix(n.role))

    def visit_image(self, nid: int, n: ir.Image) -> None:
        # NOTE: text-only backends ignore images; they are kept for multimodal backends.
        self.images.append(n.path)

    def visit_var_ref(self, nid: int, n: ir.VarRef) -> None:
        value = self.ctx.result(n.source).result()
        self.append(value if isinstance(value, str) else str(value))

    def visit_switch(self, nid: int, n: ir.Switch) -> None:
        value = self.ctx.result(n.source).result()
        if value not in n.cases:
            raise InterpreterError(f"{n.loc}: switch on {n.name!r} got {value!r}, which is none of its cases "
                                   f"{list(n.cases)}")
        self.taken[nid] = value

    def visit_case(self, nid: int, n: ir.Case) -> None:
        # NOTE: a switch that did not run itself (inside a skipped case) took no case: all its cases skip.
        if self.taken.get(n.switch) != n.value:
            self.skipped.add(n.stream)
