"""Backend over the in-process runtime ``Engine``: ``generate`` for gen, ``score`` for select."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from .. import choices as _choices
from ..chat_template import ChatTemplate, from_tokenizer, get_chat_template, resolve_template
from ..sampling import split_params
from .base import Backend, GenResult, Prompt, SelectResult

logger = logging.getLogger(__name__)

# Output forms for gen(dtype=...), as in SGLang (applied as regex constraints).
DTYPE_REGEX = {
    "int": r"[-+]?[0-9]+[ \n]*",
    "float": r"[-+]?[0-9]*\.?[0-9]+[ \n]*",
    "bool": r"(True|False)",
    "str": r"\"[\w\d\s]*\"",
}


class EngineBackend(Backend):
    """Runs programs on a ``runtime.engine.Engine`` in this process.

    ``select`` scores all choices in one ``Engine.score`` call (the prefix is computed once and
    shared through the radix cache) and picks with the program's ``choices_method``.
    """

    def __init__(self, engine: Any, chat_template: str | ChatTemplate | None = None) -> None:
        self.engine = engine
        tok = getattr(engine, "tokenizer", None)
        self.chat_template = resolve_template(
            chat_template, lambda: from_tokenizer(tok) if tok is not None else get_chat_template("chatml"))

    def _request(self, params: dict[str, Any], dtype: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
        sampling, extra = split_params(params)
        if dtype in DTYPE_REGEX and not any(sampling.get(k) for k in ("regex", "json_schema", "ebnf")):
            sampling["regex"] = DTYPE_REGEX[dtype]
        return sampling, extra

    def generate(self, prompt: Prompt, params: dict[str, Any], dtype: str | None = None) -> GenResult:
        sampling, extra = self._request(params, dtype)
        out = self.engine.generate(prompt=prompt.text, sampling_params=sampling, **extra)
        if isinstance(out, list):  # n > 1: the variable holds the first sample; all are in meta_info
            return GenResult(out[0]["text"], {**out[0]["meta_info"], "samples": [o["text"] for o in out]})
        return GenResult(out["text"], out["meta_info"])

    def generate_stream(self, prompt: Prompt, params: dict[str, Any],
                        dtype: str | None = None) -> Iterator[tuple[str, dict[str, Any] | None]]:
        sampling, extra = self._request(params, dtype)
        meta: dict[str, Any] = {}
        for chunk in self.engine.generate(prompt=prompt.text, sampling_params=sampling, stream=True, **extra):
            if chunk.get("index", 0) != 0:
                continue
            yield chunk["text"], None
            if chunk.get("finished"):
                meta = chunk.get("meta_info", {})
        yield "", meta

    def select(self, prompt: Prompt, choices: tuple[str, ...], choices_method: str,
               temperature: float = 0.0) -> SelectResult:
        best, meta = _choices.select_by_scores(prompt.text, choices, choices_method, self.engine.score,
                                               self._unconditional_prefix())
        return SelectResult(choices[best], meta)

    def _unconditional_prefix(self) -> str:
        tok = getattr(self.engine, "tokenizer", None)
        return (getattr(tok, "bos_token", None) or "\n") if tok is not None else "\n"

    def warm(self, prefix: str, expect: int = 0) -> None:
        self.engine.warm(prefix, expect=expect)

    def flush_cache(self) -> bool:
        return bool(self.engine.flush_cache())

    def get_server_info(self) -> dict[str, Any]:
        return {"backend": "engine", **self.engine.model_info()}

    def shutdown(self) -> None:
        self.engine.shutdown()
