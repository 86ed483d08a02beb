"""Executing an optimized graph: the graph interpreter's stream executors, plus the plan.

- ``hoist`` at a fork: warm ``text + shared branch text`` before the branches start;
- ``hoist`` at a select: warm the prompt plus the choices' common prefix;
- ``batch-gen`` / ``batch-select`` groups: members meet at a :class:`Rendezvous` and one call serves all.

Without a plan (``-O0``) this is exactly graph mode (``sglc.graph_interpreter.run_graph``). Switches
run as in graph mode (``execute`` sends case streams to the executor of the stream they continue;
``StreamExecutor`` skips the cases not taken): a hoist or a batch inside a case not taken never runs.
"""
from __future__ import annotations

import logging
from typing import Any

import ir
from passes import Plan
from passes.hoist_prefix import branch_heads
from passes.plan import Hoist
from passes.rewrite import stream_chain

from ..backend.base import Backend
from ..executor import RunContext, StreamExecutor
from ..graph_interpreter import check_arguments, execute
from ..sampling import merge
from ..state import ProgramState
from .batching import (
    Rendezvous,
    batch_generate,
    batch_select,
    engine_of,
    prefix_cache_enabled,
    warm_common_ids,
)

logger = logging.getLogger(__name__)

# node kinds that send the engine nothing (a branch's first request is the first node of another kind)
_NO_REQUEST = frozenset({"get_fork_item", "text", "role_begin", "role_end", "argument", "image", "var_ref"})


class PlanContext(RunContext):
    """A run context that knows the plan and hands out one rendezvous per batch group."""

    def __init__(self, backend: Backend, defaults: dict[str, Any], arguments: dict[str, Any], stream: bool,
                 graph: ir.Graph, plan: Plan) -> None:
        super().__init__(backend, defaults, arguments, stream)
        self.graph = graph
        self.plan = plan
        # NOTE: without a prefix cache a warm-up is pure extra prefill: skip the hoists.
        self.hoists = plan.hoist_at() if prefix_cache_enabled(backend) else {}
        batching = engine_of(backend) is not None and not stream
        self.gen_group = plan.batch_of(plan.gen_batches) if batching else {}
        self.select_group = plan.batch_of(plan.select_batches) if batching else {}
        # NOTE: a fork whose branches' first requests are the gens of one batch group reaches the engine as one
        # call, whose pass computes the branches' shared prefix once (the scheduler shares a prefix within a
        # pass): a warm-up would add a pass and compute nothing less (bench_programs, docs/compiler.md).
        self.hoists = {at: h for at, h in self.hoists.items() if not (h.kind == "fork" and self._one_call(at))}
        self.meetings: dict[tuple[int, ...], Rendezvous] = {}
        # text -> token ids the engine computes for it: tokenized once for a fork's warm-up, reused by the
        # branches' batched gens (their prompts are usually exactly the heads the warm-up tokenized)
        self.known_ids: dict[str, list[int]] = {}

    def _one_call(self, fork: int) -> bool:
        """Whether the first request of every branch of ``fork`` is a gen of one batch group (and nothing
        else is in that group): the branches' prompts then reach the engine together."""
        firsts = []
        for head in self.graph.fork_children(fork):
            chain = stream_chain(self.graph, head)
            firsts.append(next((m for m in chain if self.graph.node(m).kind not in _NO_REQUEST), None))
        group = self.gen_group.get(firsts[0]) if firsts and firsts[0] is not None else None
        return group is not None and sorted(group) == sorted(firsts)

    def new_executor(self, sid: str) -> StreamExecutor:
        ex = PlanExecutor(sid, self)
        with self._lock:
            self.executors.append(ex)
        return ex

    def meeting(self, group: tuple[int, ...], run: Any) -> Rendezvous:
        with self._lock:
            if group not in self.meetings:
                self.meetings[group] = Rendezvous(group, run)
                if self.failed is not None:  # NOTE: a member may never arrive: nobody waits for it
                    self.meetings[group].fail(self.failed)
            return self.meetings[group]

    def fail_pending(self, error: BaseException) -> None:
        super().fail_pending(error)
        with self._lock:
            meetings = list(self.meetings.values())
        for m in meetings:
            m.fail(error)


class PlanExecutor(StreamExecutor):
    """A stream executor that follows the plan at forks, gens and selects."""

    ctx: PlanContext

    def visit_fork(self, nid: int, n: ir.Fork) -> None:
        hoist = self.ctx.hoists.get(nid)
        if hoist is not None:
            # NOTE: warm before releasing the branches, so they all find the prefix cached; pinned until
            # the branches' first requests arrive (a runtime hint: LRU eviction cannot drop it meanwhile).
            self._warm_fork(nid, hoist)
        super().visit_fork(nid, n)

    def _warm_fork(self, nid: int, hoist: Hoist) -> None:
        heads = [self.text + h for h in branch_heads(self.ctx.graph, nid)]
        if warm_common_ids(self.ctx.backend, heads, hoist.fanout, self.ctx.known_ids):
            return   # the engine's tokenizer decided exactly which tokens the branches share
        # NOTE: with no shared branch text, what follows is unknown: drop trailing whitespace, which
        # BPE may merge with the branch's first word (then the warmed last token would not match).
        text = self.text + hoist.text if hoist.text else self.text.rstrip()
        if text:
            self.ctx.backend.warm(text, expect=hoist.fanout)

    def visit_gen(self, nid: int, n: ir.Gen) -> None:
        group = self.ctx.gen_group.get(nid)
        if group is None:
            return super().visit_gen(nid, n)
        meeting = self.ctx.meeting(group, lambda items: batch_generate(self.ctx.backend, items, self.ctx.known_ids))
        out = meeting.arrive(nid, (self.prompt(), merge(self.ctx.defaults, n.params), n.dtype))
        self.append(out.text, n.name)
        self.set_var(nid, n.name, out.text, out.meta_info)

    def visit_select(self, nid: int, n: ir.Select) -> None:
        group = self.ctx.select_group.get(nid)
        if group is None:
            # NOTE: a select hoist is not warmed: scoring needs the logits of every choice token, so the
            # choices' shared text is computed per choice anyway, and the prompt is warmed by score().
            return super().visit_select(nid, n)
        meeting = self.ctx.meeting(group, lambda items: batch_select(self.ctx.backend, items))
        out = meeting.arrive(nid, (self.prompt(), n.choices, n.choices_method))
        self.append(out.choice, n.name)
        self.set_var(nid, n.name, out.choice, out.meta_info)


def run_plan(graph: ir.Graph, plan: Plan, backend: Backend, defaults: dict[str, Any],
             arguments: dict[str, Any], stream: bool = False) -> ProgramState:
    """Run ``graph`` following ``plan``; returns the root stream's state (synced unless ``stream``)."""
    check_arguments(graph, arguments, " (pass them as --arg name=value)")
    return execute(graph, PlanContext(backend, defaults, arguments, stream, graph, plan), stream)


_HEAD_KINDS = ("text", "role_begin", "role_end", "image", "argument")


def rendered_head(graph: ir.Graph, backend: Backend, arguments: dict[str, Any]) -> str:
    """The root stream's text, for ``arguments``, before its first node that is not text, a role or an argument."""
    # NOTE: text, roles and arguments only: applied on this thread (no executor thread per item of a batch)
    ex = StreamExecutor(ir.ROOT_STREAM, RunContext(backend, {}, arguments), threaded=False)
    for nid in graph.streams()[ir.ROOT_STREAM]:
        node = graph.node(nid)
        if node.kind not in _HEAD_KINDS:
            break
        ex.apply(nid, node)
    return ex.text


def constant_head(graph: ir.Graph, upto: int, backend: Backend) -> str:
    """The root stream's text just before node ``upto`` (its head must be constant: text, roles)."""
    ex = StreamExecutor(ir.ROOT_STREAM, RunContext(backend, {}, {}), threaded=False)
    for nid in graph.streams()[ir.ROOT_STREAM]:
        if nid == upto:
            break
        ex.apply(nid, graph.node(nid))
    return ex.text
