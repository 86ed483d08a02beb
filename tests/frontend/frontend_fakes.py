"""A deterministic, model-free backend for frontend tests: output depends only on the prompt."""
from __future__ import annotations

import hashlib
import threading
from typing import Any

from sglc.backend.base import Backend, GenResult, Prompt, SelectResult
from sglc.chat_template import get_chat_template

WORDS = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "lambda"]


class FakeBackend(Backend):
    """gen -> words picked by a hash of the prompt; select -> the choice with the smallest hash."""

    def __init__(self, template: str = "chatml") -> None:
        self.chat_template = get_chat_template(template)
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def _h(self, text: str) -> int:
        return int(hashlib.sha256(text.encode()).hexdigest(), 16)

    def generate(self, prompt: Prompt, params: dict[str, Any], dtype: str | None = None) -> GenResult:
        with self.lock:
            self.calls.append(("gen", prompt.text, dict(params)))
        n = min(int(params.get("max_new_tokens", 4)), 4)
        h = self._h(prompt.text)
        if dtype == "int":
            return GenResult(str(h % 1000), {"completion_tokens": 1})
        words = [WORDS[(h >> (3 * i)) % len(WORDS)] for i in range(n)]
        return GenResult(" " + " ".join(words), {"completion_tokens": n, "prompt_tokens": len(prompt.text)})

    def generate_stream(self, prompt: Prompt, params: dict[str, Any], dtype: str | None = None):
        out = self.generate(prompt, params, dtype)
        for i in range(0, len(out.text), 3):
            yield out.text[i:i + 3], None
        yield "", out.meta_info

    def select(self, prompt: Prompt, choices: tuple[str, ...], choices_method: str,
               temperature: float = 0.0) -> SelectResult:
        with self.lock:
            self.calls.append(("select", prompt.text, {"choices": choices}))
        best = min(choices, key=lambda c: self._h(prompt.text + c))
        return SelectResult(best, {"method": choices_method})
