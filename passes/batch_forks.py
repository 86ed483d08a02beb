"""``batch-forks``: the gens of sibling fork branches go to the runtime as one batched call."""
from __future__ import annotations

from dataclasses import dataclass

import ir

from .base import Pass
from .plan import get_plan, with_plan
from .siblings import sibling_groups

# Per-call (not per-prompt) request options: a batched call needs them equal across its members.
_PER_CALL = ("return_logprob", "logprob_start_len", "top_logprobs_num")


@dataclass(frozen=True)
class BatchForks(Pass):
    """Group the ``j``-th gen of each branch of a fork (``n >= min_fanout``) into one batch.

    At run time each branch waits at its gen until all siblings reached theirs, then one
    ``generate([prompt_0, ..., prompt_n-1], [params_0, ...])`` call serves the whole group, so the
    scheduler sees all branches in one batch. Groups that could deadlock are not formed; gens that
    ask for several samples (``n > 1``) or differ in per-call logprob options are left alone.
    Semantics: each prompt gets the same sampling parameters as before.
    """

    name = "batch-forks"
    min_fanout: int = 2

    def apply(self, graph: ir.Graph) -> ir.Graph:
        groups = [g for g in sibling_groups(graph, _batchable, self.min_fanout) if _same_call(graph, g)]
        return with_plan(graph, get_plan(graph).replace(gen_batches=tuple(groups)))


def _batchable(node: ir.Node) -> bool:
    return isinstance(node, ir.Gen) and int(node.params.get("n", 1) or 1) == 1


def _same_call(graph: ir.Graph, group: tuple[int, ...]) -> bool:
    keys = {tuple((k, repr(graph.node(m).params.get(k))) for k in _PER_CALL) for m in group}  # type: ignore[attr-defined]
    return len(keys) == 1
