"""sglc: SGLang-style structured LLM programs, traced into an IR and run on the sglc runtime.

``import sglc as sgl`` runs SGLang programs unchanged. Importing is cheap: the runtime ``Engine``
(torch) loads only when ``sgl.Engine`` is first touched.
"""
from __future__ import annotations

from typing import Any

from .chat_template import ChatTemplate, get_chat_template
from .choices import greedy_token_selection, token_length_normalized, unconditional_likelihood_normalized
from .errors import InterpreterError, TraceError
from .expr import (assistant, assistant_begin, assistant_end, gen, gen_int, gen_string, image, select, system,
                   system_begin, system_end, user, user_begin, user_end)
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
    "function", "gen", "gen_int", "gen_string", "select", "image", "system", "user", "assistant",
    "system_begin", "system_end", "user_begin", "user_end", "assistant_begin", "assistant_end",
    "set_default_backend", "flush_cache", "get_server_info", "Engine", "RuntimeEndpoint", "Runtime", "OpenAI",
    "Anthropic", "EngineBackend", "ProgramState", "ProgramStateGroup", "SglFunction", "TraceError",
    "InterpreterError", "ChatTemplate", "get_chat_template", "token_length_normalized",
    "greedy_token_selection", "unconditional_likelihood_normalized", "run_graph",
]
