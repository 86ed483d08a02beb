"""Front to back: load ``prog.py:func``, trace, optimize, and package an :class:`Artifact`; run one."""
from __future__ import annotations

import importlib.util
import logging
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ir
from passes import AfterPass, optimize, pipeline_for

from ..backend.base import Backend
from ..envs import dump_ir
from ..errors import InterpreterError
from ..program import SglFunction
from ..state import ProgramState
from .artifact import Artifact, ArtifactError, runtime_hints
from .batching import prefix_cache_enabled, warm_common_ids
from .executor import constant_head, rendered_head, run_plan

logger = logging.getLogger(__name__)


def load_function(target: str) -> SglFunction:
    """``path/prog.py:func`` (or ``path/prog.py`` holding exactly one ``@sgl.function``)."""
    path, _, name = target.partition(":")
    file = Path(path)
    if not file.is_file():
        raise InterpreterError(f"no such program file {path!r}; write TARGET as path/prog.py:function")
    spec = importlib.util.spec_from_file_location(f"sglc_prog_{file.stem}", file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # NOTE: dataclasses/pickling in user code look themselves up here
    spec.loader.exec_module(module)
    found = {k: v for k, v in vars(module).items() if isinstance(v, SglFunction)}
    if name:
        if name not in found:
            raise InterpreterError(f"{path} has no @sgl.function named {name!r}; it has {sorted(found)}")
        return found[name]
    if len(found) != 1:
        raise InterpreterError(f"{path} defines {len(found)} @sgl.function programs {sorted(found)}; "
                               f"name one as {path}:NAME")
    return next(iter(found.values()))


def constraint_compiler(tokenizer: Any) -> Any:
    """A ``compile_fn`` for ``compile-constraints``: compiles into the grammar disk cache for ``tokenizer``."""
    import grammar
    from grammar.cache import cache_key

    info = grammar.TokenizerInfo.from_hf(tokenizer)

    def compile_fn(kind: str, source: str) -> tuple[str, int]:
        fsm = grammar.compile_constraint(kind, source, info)
        return cache_key(kind, source, info), int(fsm.num_states)

    compile_fn.fingerprint = info.fingerprint  # type: ignore[attr-defined]
    return compile_fn


def default_tokenizer() -> Any:
    """The embedded model's tokenizer (what the default backend runs)."""
    from runtime.tokenizer import load_tokenizer

    return load_tokenizer()


def compile_graph(graph: ir.Graph, pipeline: str | int = 2, tokenizer: Any = None,
                  after_pass: AfterPass | None = None, program: dict[str, Any] | None = None) -> Artifact:
    """Optimize ``graph`` and package it. Constraints compile for ``tokenizer`` (the embedded model's
    when None and the graph has any)."""
    from ..backend.engine import DTYPE_REGEX

    text = pipeline_for(pipeline) if isinstance(pipeline, int) else pipeline
    overrides: dict[str, dict[str, Any]] = {"compile-constraints": {"dtype_regex": tuple(DTYPE_REGEX.items())}}
    compile_fn = None
    if "compile-constraints" in text and _has_constraints(graph):
        compile_fn = constraint_compiler(tokenizer if tokenizer is not None else default_tokenizer())
        overrides["compile-constraints"]["compile_fn"] = compile_fn
    def after(p: Any, g: ir.Graph) -> None:
        dump_ir(g, f"pass {p.name}")  # NOTE: SGLC_DUMP_IR=1 logs the IR after every pass
        if after_pass is not None:
            after_pass(p, g)

    out = optimize(graph, text, after, overrides)
    table = {}
    for ref in Artifact(out).plan.constraints:
        if ref.key:
            table[ref.key] = {"kind": ref.kind, "source": ref.source, "states": ref.states,
                              "tokenizer": getattr(compile_fn, "fingerprint", "")}
    return Artifact(out, text, dict(program or {"name": graph.name}), table, runtime_hints(out))


def _has_constraints(graph: ir.Graph) -> bool:
    return any(isinstance(n, ir.Gen) and (n.dtype or any(n.params.get(k) for k in ("regex", "json_schema", "ebnf")))
               for _, n in graph.items())


def compile_function(fn: SglFunction, arguments: dict[str, Any] | None = None, pipeline: str | int = 2,
                     tokenizer: Any = None, after_pass: AfterPass | None = None, target: str = "") -> Artifact:
    """Trace ``fn`` (``arguments`` bound as constants, the rest symbolic) and compile it."""
    graph = fn.trace(**(arguments or {}))
    program = {"name": fn.name, "target": target, "bound": {k: _jsonable(v) for k, v in (arguments or {}).items()}}
    return compile_graph(graph, pipeline, tokenizer, after_pass, program)


def _jsonable(v: Any) -> Any:
    return v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else repr(v)


def ensure_constraints(artifact: Artifact, tokenizer: Any) -> int:
    """Make sure every referenced compiled constraint is in the grammar cache for ``tokenizer``
    (recompiles missing ones, e.g. on another machine); returns how many had to be compiled."""
    if not artifact.constraints:
        return 0
    import grammar
    from grammar.cache import default_cache_dir

    info = grammar.TokenizerInfo.from_hf(tokenizer)
    compiled = 0
    for key, entry in artifact.constraints.items():
        if entry.get("tokenizer") and entry["tokenizer"] != info.fingerprint:
            raise ArtifactError(f"constraint {key[:16]}… was compiled for another tokenizer; recompile the program "
                                "for this model")
        if not (default_cache_dir() / f"{key}.npz").exists():
            grammar.compile_constraint(entry["kind"], entry["source"], info)
            compiled += 1
    if compiled:
        logger.info("compiled %d constraint(s) missing from the grammar cache", compiled)
    return compiled


def run_artifact(artifact: Artifact, backend: Backend, arguments: dict[str, Any] | None = None,
                 defaults: dict[str, Any] | None = None, stream: bool = False) -> ProgramState:
    """Run a compiled program on ``backend`` with ``arguments`` and run-wide sampling ``defaults``."""
    return run_plan(artifact.graph, artifact.plan, backend, dict(defaults or {}), dict(arguments or {}), stream)


def entry_head(artifact: Artifact, backend: Backend) -> str:
    """The program's constant head (the ``entry`` hoist's text), or "" when there is none to warm."""
    entry = next((h for h in artifact.plan.hoists if h.kind == "entry"), None)
    if entry is None or not prefix_cache_enabled(backend):
        return ""
    return constant_head(artifact.graph, entry.at, backend).rstrip()  # NOTE: see PlanExecutor.visit_fork


def warm_batch(items: list[tuple[Artifact, dict[str, Any]]], backend: Backend) -> None:
    """Before the items of a batch start: warm what their prompts share (for programs with an ``entry``
    hoist), pinned until every item's first request arrived. On an in-process engine that is the longest
    common token prefix of the items' heads rendered with their arguments; elsewhere each constant head."""
    hoisted = [(a, args) for a, args in items if any(h.kind == "entry" for h in a.plan.hoists)]
    if len(hoisted) < 2 or not prefix_cache_enabled(backend):
        return   # NOTE: nothing to share: the item computes its own prompt
    heads = [rendered_head(a.graph, backend, args) for a, args in hoisted]
    if warm_common_ids(backend, heads, len(hoisted)):
        return
    for head, count in Counter(entry_head(a, backend) for a, _ in hoisted).items():
        if head:
            backend.warm(head, expect=count)


def run_batch(artifact: Artifact, backend: Backend, batch: list[dict[str, Any]], defaults: dict[str, Any] | None = None,
              num_threads: int = 16) -> list[ProgramState]:
    """Run once per arguments dict, concurrently; what the items share is warmed first (``warm_batch``)."""
    warm_batch([(artifact, args) for args in batch], backend)
    with ThreadPoolExecutor(max_workers=max(1, min(num_threads, len(batch) or 1))) as pool:
        futures = [pool.submit(run_artifact, artifact, backend, args, defaults) for args in batch]
        return [f.result() for f in futures]
