"""The frontend's exception types. Messages say what went wrong, where (the user's line) and how to fix it."""
from __future__ import annotations


class TraceError(TypeError):
    """A program cannot be traced into IR (e.g. control flow that depends on a generated value)."""


class InterpreterError(RuntimeError):
    """A program failed while running; the message names the IR node and the program's source line."""
