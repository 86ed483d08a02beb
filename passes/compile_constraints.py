"""``compile-constraints``: compile gen constraints (regex, JSON schema, EBNF) to token FSMs ahead of
time and reference them from the plan by content hash, so run time pays no compile."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ir

from .base import Pass, PassError
from .plan import ConstraintRef, get_plan, with_plan

CONSTRAINT_KINDS = ("regex", "json_schema", "ebnf")
# compile_fn(kind, source) -> (cache key, number of FSM states); raises on a bad constraint.
CompileFn = Callable[[str, str], "tuple[str, int]"]


@dataclass(frozen=True)
class CompileConstraints(Pass):
    """For each gen with ``regex``/``json_schema``/``ebnf`` (or a ``dtype`` listed in ``dtype_regex``),
    call ``compile_fn`` (which compiles into the grammar package's on-disk cache, keyed by
    sha256(kind, source, tokenizer)) and record a :class:`~passes.plan.ConstraintRef`.

    Without ``compile_fn`` (passes import no tokenizer) the references are recorded without keys;
    ``sglc compile`` supplies one bound to the target model's tokenizer. A constraint that does not
    compile raises :class:`PassError` naming the gen — at compile time, not mid-run.
    Semantics: the runtime compiles the same (kind, source) to the same FSM; it now finds it cached.
    """

    name = "compile-constraints"
    compile_fn: CompileFn | None = field(default=None, compare=False, repr=False)
    dtype_regex: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def apply(self, graph: ir.Graph) -> ir.Graph:
        refs = []
        for nid, node in graph.items():
            if not isinstance(node, ir.Gen):
                continue
            found = self._constraint(node)
            if found is None:
                continue
            kind, source = found
            key, states = "", 0
            if self.compile_fn is not None:
                try:
                    key, states = self.compile_fn(kind, source)
                except Exception as e:
                    where = f" at {node.loc}" if node.loc else ""
                    raise PassError(f"compile-constraints: gen {node.name!r} (%{nid}){where} has a {kind} "
                                    f"constraint that does not compile: {e}") from e
            refs.append(ConstraintRef(nid, kind, source, key, states))
        return with_plan(graph, get_plan(graph).replace(constraints=tuple(refs)))

    def _constraint(self, node: ir.Gen) -> tuple[str, str] | None:
        for kind in CONSTRAINT_KINDS:
            source: Any = node.params.get(kind)
            if source:
                return kind, str(source)
        regex = dict(self.dtype_regex).get(node.dtype or "")
        return ("regex", regex) if regex else None
