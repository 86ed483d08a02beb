"""The compiled artifact: a versioned JSON document with the optimized graph, the plan, the
compiled-constraint table (by grammar cache key) and runtime hints. Never pickled; loading runs no code.

Layout (``version`` 1)::

    {"format": "sglc-artifact", "version": 1, "program": {"name", "target", "bound"},
     "pipeline": "fold-text,...", "graph": <ir JSON>, "plan": {...},
     "constraints": {"<sha256>": {"kind", "source", "tokenizer", "states"}}, "hints": {...}}
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ir
from passes import Plan, get_plan, verify_plan, with_plan

logger = logging.getLogger(__name__)

FORMAT = "sglc-artifact"
VERSION = 1


class ArtifactError(ValueError):
    """An artifact cannot be read (wrong format, newer version, inconsistent content)."""


@dataclass
class Artifact:
    """An optimized program ready to run: ``graph`` carries its plan (``passes.get_plan``)."""

    graph: ir.Graph
    pipeline: str = ""
    program: dict[str, Any] = field(default_factory=dict)
    constraints: dict[str, dict[str, Any]] = field(default_factory=dict)
    hints: dict[str, Any] = field(default_factory=dict)

    @property
    def plan(self) -> Plan:
        return get_plan(self.graph)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "program": self.program, "pipeline": self.pipeline,
                "graph": ir.to_dict(self.graph), "plan": self.plan.to_dict(), "constraints": self.constraints,
                "hints": self.hints}

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.dumps() + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, doc: Any) -> Artifact:
        """Rebuild from :meth:`to_dict` output; refuses other formats and newer versions."""
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ArtifactError(f"not an sglc artifact (expected \"format\": \"{FORMAT}\"); "
                                "produce one with `sglc compile prog.py:func --emit json -o out.json`")
        version = doc.get("version")
        if not isinstance(version, int):
            raise ArtifactError("the sglc artifact has no integer \"version\"")
        if version > VERSION:
            raise ArtifactError(f"this artifact has format version {version}, newer than the newest this sglc "
                                f"reads ({VERSION}); upgrade sglc, or recompile the program with this one")
        try:
            graph = ir.from_dict(doc["graph"])
            graph = with_plan(graph, Plan.from_dict(doc.get("plan", {})))
            ir.verify(graph)
            verify_plan(graph)
        except (KeyError, TypeError, ir.VerifyError) as e:
            raise ArtifactError(f"the artifact's graph is invalid: {e}") from e
        constraints = dict(doc.get("constraints", {}))
        for ref in get_plan(graph).constraints:
            if ref.key and ref.key not in constraints:
                raise ArtifactError(f"gen %{ref.node} references constraint {ref.key[:16]}… missing from the table")
        return cls(graph, str(doc.get("pipeline", "")), dict(doc.get("program", {})), constraints,
                   dict(doc.get("hints", {})))

    @classmethod
    def loads(cls, text: str) -> Artifact:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise ArtifactError(f"the artifact is not valid JSON: {e}") from e
        return cls.from_dict(doc)

    @classmethod
    def load(cls, path: str | Path) -> Artifact:
        return cls.loads(Path(path).read_text(encoding="utf-8"))


def runtime_hints(graph: ir.Graph) -> dict[str, Any]:
    """What the runtime can plan for (item 4 of the compiler issue): per hoisted prefix, how many
    requests will share it and how many tokens each may generate; the program's token budget.

    NOTE: the fan-out reaches the runtime as the pin of the fork's warm-up (``Backend.warm(prefix,
    expect=fanout)``, see ``PlanExecutor``); output lengths are informational (docs/compiler.md says why).
    """
    plan = get_plan(graph)
    forks = []
    for h in plan.hoists:
        if h.kind != "fork":
            continue
        branch_gens = [_chain_gens(graph, head) for head in graph.fork_children(h.at)]
        forks.append({"fork": h.at, "fanout": h.fanout, "shared_text_chars": len(h.text),
                      "branch_max_new_tokens": branch_gens})
    # NOTE: per run, counting per switch its costliest case (code after an `if` is copied into every case)
    return {"forks": forks, "num_gens": _per_run(graph, lambda g: 1),
            "num_selects": sum(isinstance(n, ir.Select) for _, n in graph.items()),
            "num_switches": sum(isinstance(n, ir.Switch) for _, n in graph.items()),
            "max_new_tokens_total": _token_budget(graph),
            "unset_max_new_tokens": _per_run(graph, lambda g: int("max_new_tokens" not in g.params))}


def _token_budget(graph: ir.Graph) -> int:
    """The most ``max_new_tokens`` one run can generate: gens outside switches, plus per switch its costliest
    case (cases are mutually exclusive: only one runs)."""
    return _per_run(graph, _max_new_tokens)


def _max_new_tokens(gen: ir.Gen) -> int:
    return int(gen.params.get("max_new_tokens", 0))


def _per_run(graph: ir.Graph, weight: Callable[[ir.Gen], int]) -> int:
    """The largest sum of ``weight`` over the gens one run can reach: gens outside switches, plus per switch
    its costliest case by that weight."""
    guards = graph.guards()
    own: dict[tuple[tuple[int, str], ...], int] = {}
    switches: dict[tuple[tuple[int, str], ...], list[tuple[int, ir.Switch]]] = {}
    for nid, node in graph.items():
        where = guards.get(node.stream, ())
        if isinstance(node, ir.Gen):
            own[where] = own.get(where, 0) + weight(node)
        elif isinstance(node, ir.Switch):
            switches.setdefault(where, []).append((nid, node))

    def total(where: tuple[tuple[int, str], ...]) -> int:
        return own.get(where, 0) + sum(max((total(where + ((nid, v),)) for v in sw.cases), default=0)
                                       for nid, sw in switches.get(where, []))

    return total(())


def _chain_gens(graph: ir.Graph, head: int) -> list[int]:
    """``max_new_tokens`` of each gen on ``head``'s stream; where the stream ends in a switch, continued by its
    costliest case (the first one on a tie)."""
    chain = _stream_nodes(graph, head)
    out = [_max_new_tokens(node) for node in map(graph.node, chain) if isinstance(node, ir.Gen)]
    if isinstance(graph.node(chain[-1]), ir.Switch):
        out += max((_chain_gens(graph, case) for case in graph.switch_cases(chain[-1])), key=sum, default=[])
    return out


def _stream_nodes(graph: ir.Graph, head: int) -> list[int]:
    from passes.rewrite import stream_chain

    return stream_chain(graph, head)
