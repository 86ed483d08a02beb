"""Pass registry, text pipelines (``"fold-text,hoist-prefix{min_fanout=3}"``), ``-O`` levels, and the
driver that verifies the IR before and after every pass."""
from __future__ import annotations

import ast
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import ir

from .base import Pass, PassError
from .batch_forks import BatchForks
from .batch_selects import BatchSelects
from .compile_constraints import CompileConstraints
from .fold_text import FoldText
from .hoist_prefix import HoistPrefix
from .plan import verify_plan
from .sink_joins import SinkJoins

logger = logging.getLogger(__name__)

# The one registry of passes: name -> class.
REGISTRY: dict[str, type[Pass]] = {cls.name: cls for cls in (FoldText, SinkJoins, HoistPrefix, BatchForks,
                                                             BatchSelects, CompileConstraints)}
# -O levels: O0 runs nothing; O1 folds text and compiles constraints ahead; O2 adds the runtime-aware passes.
OPT_LEVELS: dict[int, str] = {
    0: "",
    1: "fold-text,compile-constraints",
    2: "fold-text,sink-joins,hoist-prefix,batch-forks,batch-selects,compile-constraints",
}
_ITEM = re.compile(r"\s*([\w-]+)\s*(\{[^}]*\})?\s*(,|$)")

# Called after each pass with (pass, graph); e.g. --print-after-all.
AfterPass = Callable[[Pass, ir.Graph], None]


def create(name: str, **options: Any) -> Pass:
    """Instantiate the pass ``name`` with ``options`` (its dataclass fields)."""
    cls = REGISTRY.get(name)
    if cls is None:
        raise PassError(f"unknown pass {name!r}; known passes: {', '.join(sorted(REGISTRY))}")
    known = {f.name: f for f in fields(cls)}
    bad = sorted(set(options) - set(known))
    if bad:
        raise PassError(f"pass {name!r} has no option(s) {bad}; its options: {sorted(known) or 'none'}")
    for key, value in options.items():
        # NOTE: a text option of the wrong type must fail here: `{entry=flase}` as the string "flase" would be true
        want = type(known[key].default)
        if want in (bool, int, float) and not _fits(value, want):
            raise PassError(f"option {key}={value!r} of pass {name!r} must be {want.__name__} "
                            f"(e.g. {key}={known[key].default!r})")
    return cls(**options)


def _fits(value: Any, want: type) -> bool:
    """Whether ``value`` is a ``want`` (bool, int or float): a bool is no number here, an int is a float."""
    if want is bool or isinstance(value, bool):
        return want is bool and isinstance(value, bool)
    return isinstance(value, want) or (want is float and isinstance(value, int))


def parse_pipeline(text: str, overrides: dict[str, dict[str, Any]] | None = None) -> list[Pass]:
    """Parse ``"a,b{opt=1},c"`` into pass objects. ``overrides`` adds options per pass name
    (for values that are not text, e.g. the tokenizer-bound ``compile_fn``)."""
    passes: list[Pass] = []
    pos, text = 0, text.strip()
    while pos < len(text):
        m = _ITEM.match(text, pos)
        if m is None or m.end() == pos:
            raise PassError(f"cannot parse pipeline {text!r} at column {pos}; write `pass-a,pass-b{{k=v}}`")
        options = _options(m.group(1), m.group(2))
        options.update((overrides or {}).get(m.group(1), {}))
        passes.append(create(m.group(1), **options))
        pos = m.end()
    return passes


def _options(name: str, block: str | None) -> dict[str, Any]:
    if not block:
        return {}
    out: dict[str, Any] = {}
    for item in filter(None, (x.strip() for x in block[1:-1].split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise PassError(f"option {item!r} of pass {name!r} needs a value (`{item}=...`)")
        value = value.strip()
        if value.lower() in ("true", "false"):   # the CLI's spelling as well as Python's
            out[key.strip()] = value.lower() == "true"
            continue
        try:
            out[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key.strip()] = value
    return out


def pipeline_for(level: int) -> str:
    """The pipeline text of ``-O<level>``."""
    if level not in OPT_LEVELS:
        raise PassError(f"unknown optimization level -O{level}; use one of {sorted(OPT_LEVELS)}")
    return OPT_LEVELS[level]


@dataclass
class PassManager:
    """Runs passes in order; the verifier runs before the first and after every pass."""

    passes: list[Pass]
    after_pass: AfterPass | None = None

    @classmethod
    def from_text(cls, text: str, overrides: dict[str, dict[str, Any]] | None = None,
                  after_pass: AfterPass | None = None) -> PassManager:
        return cls(parse_pipeline(text, overrides), after_pass)

    def run(self, graph: ir.Graph) -> ir.Graph:
        _verify(graph, "before the pipeline")
        for p in self.passes:
            try:
                out = p.apply(graph)
            except PassError:
                raise
            except ir.VerifyError as e:
                raise PassError(f"pass {p.name!r} failed: {e}") from e
            _verify(out, f"after pass {p.name!r}")
            logger.debug("after %s: %d nodes", p.name, len(out))
            if self.after_pass is not None:
                self.after_pass(p, out)
            graph = out
        return graph

    def spec(self) -> str:
        return ",".join(p.spec() for p in self.passes)


def _verify(graph: ir.Graph, when: str) -> None:
    try:
        ir.verify(graph)
        verify_plan(graph)
    except ir.VerifyError as e:
        raise PassError(f"IR verification failed {when}: {e}") from e


def optimize(graph: ir.Graph, pipeline: str | int = 2, after_pass: AfterPass | None = None,
             overrides: dict[str, dict[str, Any]] | None = None) -> ir.Graph:
    """Run a pipeline (text, or an ``-O`` level) over ``graph``."""
    text = pipeline_for(pipeline) if isinstance(pipeline, int) else pipeline
    return PassManager.from_text(text, overrides, after_pass).run(graph)
