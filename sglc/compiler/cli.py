"""``sglc compile``, ``sglc run`` and ``sglc viz``: registered into ``sglc.cli`` by :func:`register`.

Handlers import the compiler (and torch, through the runtime) lazily so ``sglc --help`` stays fast.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

logger = logging.getLogger(__name__)
EMITS = ("ir", "json", "dot", "html")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", help="path/prog.py:function (or prog.py with one program), or an artifact .json")
    p.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE",
                   help="a program argument (VALUE parsed as JSON, else taken as text); repeatable")
    level = p.add_mutually_exclusive_group()
    level.add_argument("-O", dest="opt", type=int, choices=(0, 1, 2), default=2,
                       help="optimization level: -O0 none, -O1 fold text + compile constraints, -O2 all (default)")
    level.add_argument("--pipeline", help='explicit pass pipeline, e.g. "fold-text,hoist-prefix{min_fanout=3}"')
    p.add_argument("--print-after-all", action="store_true", help="print the IR (and plan) after each pass")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``compile``, ``run`` and ``viz`` subcommands."""
    p = sub.add_parser("compile", help="trace and optimize a program; write the IR, a JSON artifact, DOT or HTML",
                       description="Trace prog.py:function (--arg values are bound at trace time; other "
                                   "parameters stay symbolic), run the pass pipeline and emit the result.")
    _common(p)
    p.add_argument("--emit", choices=EMITS, default="json", help="output form (default json: the artifact)")
    p.add_argument("-o", "--output", default="-", help="output file (default stdout)")
    p.set_defaults(func=_compile, parser=p)

    p = sub.add_parser("run", help="run a program or a compiled artifact and print its text and variables as JSON",
                       description="Run prog.py:function (eagerly, with --arg values) or a compiled artifact "
                                   "(sglc compile's JSON) on the embedded model or a running sglc serve, and print "
                                   "its text, variables and messages as JSON.")
    _common(p)
    p.add_argument("--backend", default="engine",
                   help="engine (the embedded model, default), grpc://host:port or http://host:port (sglc serve)")
    p.add_argument("--temperature", type=float, help="run-wide sampling default")
    p.add_argument("--max-tokens", type=int, help="run-wide max new tokens")
    p.set_defaults(func=_run, parser=p)

    p = sub.add_parser("viz", help="write the IR graph as one self-contained HTML file (or DOT)",
                       description="Trace prog.py:function (or read a compiled artifact) and draw its IR graph: "
                                   "gen, select, fork and join nodes with their streams, as one self-contained "
                                   "HTML page (no network needed to view it) or Graphviz DOT.")
    _common(p)
    p.add_argument("--emit", choices=("html", "dot"), default="html")
    p.add_argument("-o", "--output", default="-", help="output file (default stdout)")
    p.set_defaults(func=_viz, parser=p)


def parse_args_kv(items: list[str]) -> dict[str, Any]:
    """``["k=v", ...]`` → dict; values are JSON when they parse, else text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--arg {item!r} must look like NAME=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _build(ns: argparse.Namespace, bind: bool, views: list | None = None) -> Any:
    """The artifact for ``ns.target``: loaded (.json) or compiled (``--arg`` bound when ``bind``)."""
    from passes import format_graph

    from .artifact import Artifact
    from .build import compile_function, load_function
    from .viz import View

    def after(p: Any, graph: Any) -> None:
        if ns.print_after_all:
            print(f"// -----// IR after {p.name} //----- //\n{format_graph(graph)}", file=sys.stderr)
        if views is not None:
            views.append(View(f"after {p.name}", graph))

    if ns.target.endswith(".json") and ":" not in ns.target:
        art = Artifact.load(ns.target)
        if views is not None:
            views.append(View("artifact", art.graph))
        return art
    fn = load_function(ns.target)
    args = parse_args_kv(ns.arg) if bind else {}
    if views is not None:
        views.append(View("trace", fn.trace(**args)))
    pipeline = ns.pipeline if ns.pipeline is not None else ns.opt
    return compile_function(fn, args, pipeline, after_pass=after, target=ns.target)


def _write(ns: argparse.Namespace, text: str) -> None:
    if ns.output == "-":
        sys.stdout.write(text)
    else:
        with open(ns.output, "w", encoding="utf-8") as f:
            f.write(text)
        logger.info("wrote %s", ns.output)


def _fail(ns: argparse.Namespace, err: Exception) -> int:
    print(f"sglc {ns.command}: error: {err}", file=sys.stderr)
    return 1


def _errors() -> tuple[type[BaseException], ...]:
    import ir
    from passes import PassError

    from ..errors import InterpreterError, TraceError
    from .artifact import ArtifactError

    return (PassError, ir.VerifyError, TraceError, InterpreterError, ArtifactError, ValueError, OSError, ImportError)


def _compile(ns: argparse.Namespace) -> int:
    try:
        views: list = [] if ns.emit == "html" else None  # type: ignore[assignment]
        art = _build(ns, bind=True, views=views)
        if ns.emit == "json":
            text = art.dumps() + "\n"
        elif ns.emit == "ir":
            from passes import format_graph

            text = format_graph(art.graph)
        elif ns.emit == "dot":
            from .page import render_dot

            text = render_dot(art.graph)
        else:
            from .page import render_html

            text = render_html(views)
        _write(ns, text)
        return 0
    except _errors() as e:
        return _fail(ns, e)


def _viz(ns: argparse.Namespace) -> int:
    ns.emit = "html" if ns.emit == "html" else "dot"
    return _compile(ns)


def _backend(spec: str) -> Any:
    import sglc

    if spec == "engine":
        return sglc.EngineBackend(sglc.Engine())
    if spec.startswith(("grpc://", "http://", "https://")):
        return sglc.RuntimeEndpoint(spec)
    raise ValueError(f"unknown --backend {spec!r}; use engine, grpc://host:port or http://host:port")


def _run(ns: argparse.Namespace) -> int:
    from ..errors import TraceError
    from ..sampling import to_params
    from .build import ensure_constraints, run_artifact

    backend = None
    try:
        is_artifact = ns.target.endswith(".json") and ":" not in ns.target
        defaults = to_params(temperature=ns.temperature, max_tokens=ns.max_tokens)
        try:
            art = _build(ns, bind=not is_artifact)
        except TraceError as e:
            if is_artifact:
                raise
            # NOTE: programs with data-dependent control flow cannot be compiled; they still run eagerly.
            print(f"sglc run: not traceable, running eagerly: {e}", file=sys.stderr)
            art = None
        backend = _backend(ns.backend)
        if art is None:
            from .build import load_function

            state = load_function(ns.target).run(backend=backend, **parse_args_kv(ns.arg), **defaults)
        else:
            engine = getattr(backend, "engine", None)
            if engine is not None and engine.tokenizer is not None:
                ensure_constraints(art, engine.tokenizer)
            state = run_artifact(art, backend, parse_args_kv(ns.arg) if is_artifact else {}, defaults)
        out = {"text": state.text(), "variables": state.variables()}
        print(json.dumps(out, ensure_ascii=False, indent=1, default=str))
        return 0
    except _errors() as e:
        return _fail(ns, e)
    finally:
        if backend is not None:
            backend.shutdown()
