"""The pass contract: a frozen dataclass with a ``name`` and ``apply(graph) -> graph``.

Options are the dataclass fields (``hoist-prefix{min_chars=4}`` in a pipeline sets ``min_chars``).
A pass never mutates its input: it returns a new graph (``graph.copy()`` first, or a rebuild).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import ir


class PassError(RuntimeError):
    """A pass could not run, or a pipeline is malformed; the message names the pass and what to fix."""


@dataclass(frozen=True)
class Pass:
    """Base of all passes. Subclasses set ``name`` and implement :meth:`apply`.

    Contract: ``apply`` preserves program semantics (same outputs at temperature 0) and returns a
    graph that passes ``ir.verify`` and :func:`passes.plan.verify_plan`.
    """

    name: ClassVar[str] = ""

    def apply(self, graph: ir.Graph) -> ir.Graph:
        raise NotImplementedError

    def spec(self) -> str:
        """This pass as pipeline text, options included (``name{k=v,...}`` when not defaults)."""
        from dataclasses import fields

        opts = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                if getattr(self, f.name) != f.default and f.repr]
        return self.name + ("{" + ",".join(opts) + "}" if opts else "")
