"""IR → IR optimization passes: one pass per file, a registry, text pipelines and ``-O`` levels.

    from passes import optimize, format_graph
    g2 = optimize(graph, "fold-text,hoist-prefix,batch-forks,batch-selects,compile-constraints")
    print(format_graph(g2))          # the IR plus the plan the passes recorded

Pure Python over ``ir``: no torch, grammar, runtime or sglc imports (the tokenizer-bound constraint
compiler comes in through ``CompileConstraints.compile_fn``).
"""
from __future__ import annotations

from .base import Pass, PassError
from .batch_forks import BatchForks
from .batch_selects import BatchSelects
from .compile_constraints import CompileConstraints
from .fold_text import FoldText
from .hoist_prefix import HoistPrefix
from .ir_text import parse_graph
from .pipeline import (
    OPT_LEVELS,
    REGISTRY,
    AfterPass,
    PassManager,
    create,
    optimize,
    parse_pipeline,
    pipeline_for,
)
from .plan import ConstraintRef, Hoist, Plan, format_graph, get_plan, print_plan, verify_plan, with_plan

__all__ = [
    "OPT_LEVELS",
    "REGISTRY",
    "AfterPass",
    "BatchForks",
    "BatchSelects",
    "CompileConstraints",
    "ConstraintRef",
    "FoldText",
    "Hoist",
    "HoistPrefix",
    "Pass",
    "PassError",
    "PassManager",
    "Plan",
    "create",
    "format_graph",
    "get_plan",
    "optimize",
    "parse_graph",
    "parse_pipeline",
    "pipeline_for",
    "print_plan",
    "verify_plan",
    "with_plan",
]
