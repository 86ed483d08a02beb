"""IR node kinds: one frozen dataclass per kind, and the one place that dispatches on kind.

Every node belongs to a *stream* (a sequence of appends to one prompt, like SGLang's stream
executor). ``loc`` is the user's source line that produced the node (``"prog.py:12"``), kept
for error messages; the printer hides it by default so golden tests stay stable.

Dispatch on kind goes through :meth:`Node.accept` (``visitor.visit_<kind>(nid, node)``) — the
printer, verifier and interpreters are visitors; nobody writes ``isinstance`` chains.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

# Modes of Join (SGLang's ProgramStateGroup.join).
JOIN_MODES = ("gather_variable", "concate_and_append")
# Choice-scoring methods of Select (SGLang's sglang.lang.choices).
CHOICES_METHODS = ("token_length_normalized", "greedy_token_selection", "unconditional_likelihood_normalized")
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Node:
    """Base of all node kinds. Subclasses set ``kind`` (the printed and serialized name)."""

    stream: str
    loc: str = field(default="", compare=False)

    kind: ClassVar[str] = ""

    def accept(self, visitor: Any, nid: int) -> Any:
        """Call ``visitor.visit_<kind>(nid, self)``: the single dispatch point on node kind."""
        return getattr(visitor, "visit_" + self.kind)(nid, self)

    def attrs(self) -> dict[str, Any]:
        """Kind-specific attributes (everything but ``stream`` and ``loc``), in field order."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("stream", "loc")}

    @property
    def defines(self) -> str | None:
        """Name of the variable this node defines, if any."""
        return None


@dataclass(frozen=True)
class Text(Node):
    """Append constant text."""

    text: str = ""
    kind: ClassVar[str] = "text"


@dataclass(frozen=True)
class Argument(Node):
    """Append the value of the program argument ``name`` (``str()`` of it)."""

    name: str = ""
    kind: ClassVar[str] = "argument"


@dataclass(frozen=True)
class Gen(Node):
    """Generate text into variable ``name``.

    ``params`` holds only the sampling parameters the program set explicitly, under
    ``runtime.sampling_params.SamplingParams`` field names, plus the logprob request keys
    ``return_logprob``/``logprob_start_len``/``top_logprobs_num``. ``dtype`` is ``None`` or one of
    ``"int"``, ``"float"``, ``"str"``, ``"bool"``.
    """

    name: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    dtype: str | None = None
    kind: ClassVar[str] = "gen"

    @property
    def defines(self) -> str | None:
        return self.name


@dataclass(frozen=True)
class Select(Node):
    """Pick one of ``choices`` into variable ``name`` by scoring them (see ``choices_method``)."""

    name: str = ""
    choices: tuple[str, ...] = ()
    choices_method: str = "token_length_normalized"
    temperature: float = 0.0
    kind: ClassVar[str] = "select"

    @property
    def defines(self) -> str | None:
        return self.name


@dataclass(frozen=True)
class Fork(Node):
    """Split the stream into ``n`` child streams, each starting from a copy of this point."""

    n: int = 1
    kind: ClassVar[str] = "fork"


@dataclass(frozen=True)
class GetForkItem(Node):
    """Head of child stream ``index`` of the Fork node ``fork``: copies the parent's state."""

    fork: int = -1
    index: int = 0
    kind: ClassVar[str] = "get_fork_item"


@dataclass(frozen=True)
class Join(Node):
    """Wait for the child streams of Fork ``fork``; gather their variables or append their text."""

    fork: int = -1
    mode: str = "gather_variable"
    kind: ClassVar[str] = "join"


@dataclass(frozen=True)
class RoleBegin(Node):
    """Open a chat role (the chat template's prefix is appended)."""

    role: str = "user"
    kind: ClassVar[str] = "role_begin"


@dataclass(frozen=True)
class RoleEnd(Node):
    """Close the chat role (the chat template's suffix is appended)."""

    role: str = "user"
    kind: ClassVar[str] = "role_end"


@dataclass(frozen=True)
class Image(Node):
    """Attach an image (a path or URL) at this point of the prompt."""

    path: str = ""
    kind: ClassVar[str] = "image"


@dataclass(frozen=True)
class VarRef(Node):
    """Append the value of variable ``name`` produced by node ``source`` (maybe another stream)."""

    name: str = ""
    source: int = -1
    kind: ClassVar[str] = "var_ref"


@dataclass(frozen=True)
class Switch(Node):
    """Continue the stream with the case whose value the select ``source`` chose into ``name``.

    ``cases`` are the select's distinct choices, in order. Each case is a stream headed by a
    :class:`Case` node (a ``case`` edge from the switch to it) that *continues* this stream: the
    cases are mutually exclusive, exactly one runs, on this stream's prompt and variables. A switch
    is the last node of its stream (what follows the comparison in the program is in the cases).
    """

    name: str = ""
    source: int = -1
    cases: tuple[str, ...] = ()
    kind: ClassVar[str] = "switch"


@dataclass(frozen=True)
class Case(Node):
    """Head of the case stream of Switch ``switch`` that runs when the select chose ``value``."""

    switch: int = -1
    value: str = ""
    kind: ClassVar[str] = "case"


NODE_KINDS: dict[str, type[Node]] = {
    cls.kind: cls for cls in (Text, Argument, Gen, Select, Fork, GetForkItem, Join, RoleBegin, RoleEnd,
                              Image, VarRef, Switch, Case)
}


def _node_hash(node: Node) -> int:
    return hash((node.kind, node.stream, json.dumps(node.attrs(), sort_keys=True, default=str)))


for _cls in NODE_KINDS.values():
    # NOTE: the generated field hash fails on Gen.params (a dict); hash the JSON form instead.
    _cls.__hash__ = _node_hash  # type: ignore[method-assign,assignment]


class NodeVisitor:
    """Base visitor: override ``visit_<kind>``; unhandled kinds go to :meth:`generic_visit`."""

    def visit(self, nid: int, node: Node) -> Any:
        return node.accept(self, nid)

    def generic_visit(self, nid: int, node: Node) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not handle node kind {node.kind!r}")

    def __getattr__(self, name: str) -> Any:
        # NOTE: only reached for missing visit_* methods; route them to generic_visit.
        if name.startswith("visit_"):
            return self.generic_visit
        raise AttributeError(name)
