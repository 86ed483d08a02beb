"""The one backend protocol every frontend backend implements.

The interpreter hands a backend a :class:`Prompt` (the stream's text plus its chat messages) and
gets text back. Backends: :class:`~sglc.backend.engine.EngineBackend` (in-process runtime
``Engine``), :class:`~sglc.backend.openai.OpenAI`, :class:`~sglc.backend.anthropic.Anthropic`,
:class:`~sglc.backend.runtime_endpoint.RuntimeEndpoint` (gRPC).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..chat_template import ChatTemplate, get_chat_template


@dataclass(frozen=True)
class Prompt:
    """What a backend sees at a gen/select: the full text and, for chat APIs, the messages.

    ``messages`` are the finished role blocks; ``role`` is the role open at this point (or None)
    and ``role_text`` the content written inside it so far.
    """

    text: str
    messages: tuple[dict[str, str], ...] = ()
    role: str | None = None
    role_text: str = ""
    images: tuple[str, ...] = ()


@dataclass
class GenResult:
    """Generated text and its meta info (prompt_tokens, completion_tokens, finish_reason, ...)."""

    text: str
    meta_info: dict[str, Any] = field(default_factory=dict)


@dataclass
class SelectResult:
    """The chosen choice and meta info (per-choice scores under ``"scores"``)."""

    choice: str
    meta_info: dict[str, Any] = field(default_factory=dict)


class Backend(ABC):
    """Contract: ``generate`` (required), ``generate_stream`` and ``select`` (defaults provided), plus
    optional ``warm``, ``flush_cache``, ``get_server_info``, ``shutdown``.

    ``params`` are merged sampling parameters under ``SamplingParams`` field names plus the logprob
    keys (see :mod:`sglc.sampling`); ``dtype`` is the gen's output type name or None.
    """

    chat_template: ChatTemplate = get_chat_template("default")
    #: True for chat-message APIs (OpenAI, Anthropic): text outside roles cannot be continued.
    is_chat_model: bool = False

    @abstractmethod
    def generate(self, prompt: Prompt, params: dict[str, Any], dtype: str | None = None) -> GenResult:
        """Generate a continuation of ``prompt``."""

    def generate_stream(self, prompt: Prompt, params: dict[str, Any],
                        dtype: str | None = None) -> Iterator[tuple[str, dict[str, Any] | None]]:
        """Yield ``(text_delta, None)`` pieces and finally ``("", meta_info)``. Default: one piece."""
        result = self.generate(prompt, params, dtype)
        yield result.text, None
        yield "", result.meta_info

    def select(self, prompt: Prompt, choices: tuple[str, ...], choices_method: str,
               temperature: float = 0.0) -> SelectResult:
        """Pick one of ``choices``. Default: generate and take the best-matching choice."""
        longest = max(len(c) for c in choices)
        out = self.generate(prompt, {"max_new_tokens": max(16, longest // 2 + 8), "temperature": 0.0})
        return SelectResult(match_choice(out.text, choices), {"generated": out.text, "method": "generation"})

    def warm(self, prefix: str, expect: int = 0) -> None:
        """Prefill ``prefix`` into the backend's prefix cache when it has one (no-op otherwise).

        ``expect``: how many requests extending ``prefix`` will follow (fork fan-out, choices, batch items);
        a runtime that supports it keeps the prefix cached until they were admitted (0: no such hint).
        """

    def flush_cache(self) -> bool:
        return False

    def get_server_info(self) -> dict[str, Any]:
        return {"backend": type(self).__name__}

    def shutdown(self) -> None:
        """Release resources (no-op by default)."""


def match_choice(text: str, choices: tuple[str, ...]) -> str:
    """The choice a free-form answer means: exact match, then the longest choice it starts with
    or contains, then the choice sharing the longest prefix with it."""
    t = text.strip().strip(".\"'").strip()
    low = t.lower()
    for c in choices:
        if c.strip().lower() == low:
            return c
    by_len = sorted(choices, key=len, reverse=True)
    for test in (low.startswith, low.__contains__):
        for c in by_len:
            if c.strip() and test(c.strip().lower()):
                return c
    return max(choices, key=lambda c: (_common_prefix(c.strip().lower(), low), -choices.index(c)))


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
