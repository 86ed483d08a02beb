"""``batch-selects``: sibling selects are scored in one runtime call that shares each prefix."""
from __future__ import annotations

from dataclasses import dataclass

import ir

from .base import Pass
from .plan import get_plan, with_plan
from .siblings import sibling_groups


@dataclass(frozen=True)
class BatchSelects(Pass):
    """Group the ``j``-th select of each branch of a fork into one scoring batch.

    At run time the group's prefixes are warmed in one call and every (prefix, choice) pair of every
    member is scored in one call — instead of one warm + one score per select. (A lone select already
    scores all its choices in one call sharing the prefix.) Selects whose method needs unconditional
    likelihoods keep their own calls. Semantics: the same logprobs decide each select.
    """

    name = "batch-selects"
    min_fanout: int = 2

    def apply(self, graph: ir.Graph) -> ir.Graph:
        groups = sibling_groups(graph, _batchable, self.min_fanout)
        return with_plan(graph, get_plan(graph).replace(select_batches=tuple(groups)))


def _batchable(node: ir.Node) -> bool:
    return isinstance(node, ir.Select) and node.choices_method != "unconditional_likelihood_normalized" \
        and not node.temperature
