"""``hoist-prefix``: send the prefix shared by a fork's branches (or a select's choices, or the items
of a ``run_batch``) to the runtime's ``warm`` once, before the branches start."""
from __future__ import annotations

from dataclasses import dataclass

import ir

from .base import Pass
from .plan import Hoist, get_plan, with_plan
from .rewrite import leading_text

# Node kinds whose effect on the text does not depend on arguments or generated values.
_CONSTANT_KINDS = ("text", "role_begin", "role_end", "image")


def common_prefix(texts: list[str]) -> str:
    """Longest common prefix of ``texts``."""
    if not texts:
        return ""
    lo, hi = min(texts), max(texts)
    n = 0
    while n < min(len(lo), len(hi)) and lo[n] == hi[n]:
        n += 1
    return lo[:n]


def token_safe(prefix: str, texts: list[str]) -> str:
    """Cut ``prefix`` back to a point where a tokenizer splits every text the same way.

    NOTE: BPE merges across the cut (``" cats"`` is one token, ``" "`` + ``"cats"`` two), so a warmed
    prefix ending mid-word would miss the cache on its last token, and whitespace runs merge too
    (``"\n\n"`` alone is one token, before ``"What"`` two). Cut after a non-space where every text
    continues with whitespace (or ends).
    """
    for i in range(len(prefix), 0, -1):
        if not prefix[i - 1].isspace() and all(t[i:i + 1] in ("", " ", "\n") for t in texts):
            return prefix[:i]
    return ""


def branch_heads(graph: ir.Graph, fork: int) -> list[str]:
    """The constant text each branch of ``fork`` starts with."""
    heads = []
    for child in graph.fork_children(fork):
        nxt = graph.succs(child, "stream")
        heads.append(leading_text(graph, nxt[0] if nxt else None))
    return heads


@dataclass(frozen=True)
class HoistPrefix(Pass):
    """Record, per fork with ``n >= min_fanout`` branches, the constant text all branches start with;
    per select, the common prefix of its choices; and for ``run_batch``, the program's constant head.

    The executor warms ``stream text + shared text`` into the radix cache at that point, so the
    branches' prefill reuses it instead of each computing it (and racing each other to cache it).
    Semantics: warming only fills a cache; outputs do not change.

    Switch cases are not hoisted like fork branches: exactly one case runs, so the cases' shared text
    would serve one request (the case continues its stream's prompt, nothing to share). A fork inside a
    case is hoisted as usual; its warm-up happens only if that case runs. The entry hoist stops at the
    first node that is not constant, so it never reaches into a case.
    """

    name = "hoist-prefix"
    min_fanout: int = 2
    selects: bool = True
    entry: bool = True

    def apply(self, graph: ir.Graph) -> ir.Graph:
        hoists: list[Hoist] = []
        for nid, node in graph.items():
            if isinstance(node, ir.Fork) and node.n >= self.min_fanout:
                hoists.append(self._fork(graph, nid, node))
            elif isinstance(node, ir.Select) and self.selects and len(node.choices) >= 2:
                text = token_safe(common_prefix(list(node.choices)), list(node.choices))
                if text:  # NOTE: the prompt alone is already warmed by the runtime's score()
                    hoists.append(Hoist(nid, "select", text, len(node.choices)))
        entry = self._entry(graph) if self.entry else None
        if entry is not None:
            hoists.append(entry)
        hoists.sort(key=lambda h: (h.at, h.kind))
        return with_plan(graph, get_plan(graph).replace(hoists=tuple(hoists)))

    def _fork(self, graph: ir.Graph, nid: int, node: ir.Fork) -> Hoist:
        heads = branch_heads(graph, nid)
        return Hoist(nid, "fork", token_safe(common_prefix(heads), heads), node.n)

    def _entry(self, graph: ir.Graph) -> Hoist | None:
        """The first root node whose text is not constant, if a constant head precedes it."""
        ids = graph.streams().get(ir.ROOT_STREAM, [])
        for i, nid in enumerate(ids):
            if graph.node(nid).kind not in _CONSTANT_KINDS:
                return Hoist(nid, "entry", "", 0) if i > 0 else None
        return None
