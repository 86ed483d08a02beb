"""sglc: SGLang-style structured LLM programs, traced into an IR and run on the sglc runtime.

``import sglc as sgl`` runs SGLang programs unchanged. Importing is cheap: the runtime ``Engine``
(torch) loads only when ``sgl.Engine`` is first touched.
"""
from __future__ import annotations

from typing import Any

from .chat_template import ChatTemplate, get_chat_template
from .choices import greedy_token_selection, token_length_normalized, unconditional_likelihood_normalized
from .errors import InterpreterError, TraceError
from .expr import (
    assistant,
    assistant_begin,
    assistant_end,
    gen,
    gen_int,
    gen_string,
    image,
    select,
    system,
    system_begin,
    system_end,
    user,
    user_begin,
    user_end,
)
from .program import SglFunction, flush_cache, function, get_server_info, set_default_backend
from .state import ProgramState, ProgramStateGroup

_LAZY = {
    "Engine": ("runtime.engine", "Engine"),
    "OpenAI": ("sglc.backend.openai", "OpenAI"),
    "Anthropic": ("sglc.backend.anthropic", "Anthropic"),
    "RuntimeEndpoint": ("sglc.backend.runtime_endpoint", "RuntimeEndpoint"),
    "Runtime": ("sglc.backend.runtime_endpoint", "Runtime"),
    "EngineBackend": ("sglc.backend.engine", "EngineBackend"),
    "run_graph": ("sglc.graph_interpreter", "run_graph"),
}


def __getattr__(name: str) -> Any:
    # NOTE: lazy so `import sglc` never imports torch or the API clients.
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sglc' has no attribute {name!r}")


__all__ = [
    "Anthropic",
    "ChatTemplate",
    "Engine",
    "EngineBackend",
    "InterpreterError",
    "OpenAI",
    "ProgramState",
    "ProgramStateGroup",
    "Runtime",
    "RuntimeEndpoint",
    "SglFunction",
    "TraceError",
    "assistant",
    "assistant_begin",
    "assistant_end",
    "flush_cache",
    "function",
    "gen",
    "gen_int",
    "gen_string",
    "get_chat_template",
    "get_server_info",
    "greedy_token_selection",
    "image",
    "run_graph",
    "select",
    "set_default_backend",
    "system",
    "system_begin",
    "system_end",
    "token_length_normalized",
    "unconditional_likelihood_normalized",
    "user",
    "user_begin",
    "user_end",
]
