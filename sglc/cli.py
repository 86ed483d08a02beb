"""The ``sglc`` command: a registry of subcommands (``serve`` now; ``compile``, ``run``, ``viz`` later).

To add a subcommand, write ``_add_<name>(subparsers)`` that creates its parser and sets
``func=<handler>`` (a function taking the parsed namespace and returning an exit status), and append
it to :data:`SUBCOMMANDS`. Handlers import their heavy modules lazily so ``sglc --help`` stays fast.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from .compiler import cli as compiler_cli  # compile, run, viz (sglc/compiler/cli.py)

logger = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace], int]


def _serve(ns: argparse.Namespace) -> int:
    from runtime.errors import EngineError
    from runtime.server.launch import args_from_namespace, serve

    try:
        return serve(args_from_namespace(ns))
    except EngineError as err:
        ns.parser.error(str(err))  # exits with status 2 and the usage line
        return 2


def _add_serve(sub: argparse._SubParsersAction) -> None:
    from runtime.server.launch import add_arguments

    p = sub.add_parser(
        "serve", help="serve a model over HTTP (native /generate + OpenAI /v1) and gRPC",
        description="Serve one Engine over HTTP (SGLang-native /generate, OpenAI-compatible /v1, /metrics) "
                    "and, with --grpc-port, the gRPC Runtime service (proto/sglc.proto). SIGTERM drains "
                    "in-flight requests and exits 0.",
        epilog="example: sglc serve --port 30000 --grpc-port 30001 --api-key secret",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=_serve, parser=p)


# The subcommand registry: each entry adds one subparser.
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_serve, compiler_cli.register]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sglc", description="sglc: compiler and runtime for structured "
                                     "LLM programs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sglc`` console script and ``python -m sglc``."""
    parser = build_parser()
    ns, extra = parser.parse_known_args(argv)
    if extra:   # NOTE: reported by the subcommand's parser, so the usage shown is that command's
        getattr(ns, "parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    handler: Handler = ns.func
    return handler(ns)


if __name__ == "__main__":
    sys.exit(main())
