"""Frontend switches from the environment (read through ``runtime.envs``, the one place env vars are read)."""
from __future__ import annotations

import logging

import ir

logger = logging.getLogger("sglc.ir_dump")


def dump_ir(graph: ir.Graph, when: str) -> None:
    """Log the printed IR (with source lines) when ``SGLC_DUMP_IR=1``."""
    from runtime.envs import ENV

    if ENV.dump_ir:
        logger.warning("IR after %s:\n%s", when, ir.print_graph(graph, show_loc=True))
