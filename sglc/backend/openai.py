"""Backend for OpenAI-compatible APIs through the official ``openai`` client.

Chat models get the program's role messages: a ``gen`` must sit at the start of an assistant
role (``s += sgl.assistant(sgl.gen("answer"))``); a program without roles is sent as one user
message. Completion models (``gpt-3.5-turbo-instruct``, or ``is_chat_model=False``) get the raw text.

``select`` on chat models has no logprobs to score choices with: it falls back to generating
an answer (temperature 0) and picks the choice that answer matches best (exact, then prefix or
substring, then longest common prefix). Regex/JSON constraints and ``dtype`` are not enforced
(a warning is logged); ``top_k``/``min_p`` are not sent (the API has no such fields).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from ..chat_template import ChatTemplate, get_chat_template, resolve_template
from ..sampling import split_params
from .base import Backend, GenResult, Prompt

logger = logging.getLogger(__name__)

COMPLETION_MODELS = frozenset({"gpt-3.5-turbo-instruct", "davinci-002", "babbage-002"})
# SamplingParams field -> OpenAI request field.
_OPENAI_FIELDS = {"max_new_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p",
                  "stop": "stop", "frequency_penalty": "frequency_penalty",
                  "presence_penalty": "presence_penalty", "seed": "seed"}
_UNSUPPORTED = ("regex", "json_schema", "ebnf", "top_k", "min_p", "min_new_tokens", "stop_token_ids")


def chat_messages(prompt: Prompt, backend_name: str) -> list[dict[str, str]]:
    """The chat messages for a gen at ``prompt`` (shared by the chat API backends)."""
    messages = [dict(m) for m in prompt.messages]
    if prompt.role == "assistant":
        if prompt.role_text.strip():
            messages.append({"role": "assistant", "content": prompt.role_text})
        return messages
    if prompt.role is None and not messages:
        return [{"role": "user", "content": prompt.text}]
    raise ValueError(f"{backend_name} chat models generate only inside an assistant role "
                     f"(open role: {prompt.role!r}); write s += sgl.assistant(sgl.gen(...))")


class OpenAI(Backend):
    """``sgl.OpenAI("gpt-4o-mini")`` or ``sgl.OpenAI(model, base_url="http://host:port/v1", api_key=...)``."""

    def __init__(self, model_name: str, base_url: str | None = None, api_key: str | None = None,
                 is_chat_model: bool | None = None, chat_template: str | ChatTemplate | None = None,
                 **client_kwargs: Any) -> None:
        import openai

        self.model_name = model_name
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, **client_kwargs)
        self.is_chat_model = model_name not in COMPLETION_MODELS if is_chat_model is None else is_chat_model
        self.chat_template = resolve_template(chat_template, lambda: get_chat_template("chatml"))

    def _kwargs(self, params: dict[str, Any], dtype: str | None) -> dict[str, Any]:
        sampling, extra = split_params(params)
        ignored = [k for k in _UNSUPPORTED if sampling.get(k) not in (None, [], 0, -1, 0.0)]
        if ignored or dtype:
            logger.warning("OpenAI backend: %s not supported by the API; ignored", ignored or [f"dtype={dtype}"])
        out = {_OPENAI_FIELDS[k]: v for k, v in sampling.items() if k in _OPENAI_FIELDS}
        if extra.get("return_logprob"):
            out["logprobs"] = True
        return out

    def _request(self, prompt: Prompt, params: dict[str, Any], dtype: str | None, stream: bool) -> Any:
        kw = self._kwargs(params, dtype)
        if self.is_chat_model:
            if kw.pop("logprobs", False):
                kw["logprobs"] = True
            return self.client.chat.completions.create(model=self.model_name, stream=stream,
                                                       messages=chat_messages(prompt, "OpenAI"), **kw)
        if kw.pop("logprobs", False):
            kw["logprobs"] = 1
        return self.client.completions.create(model=self.model_name, prompt=prompt.text, stream=stream, **kw)

    def generate(self, prompt: Prompt, params: dict[str, Any], dtype: str | None = None) -> GenResult:
        resp = self._request(prompt, params, dtype, stream=False)
        choice = resp.choices[0]
        text = (choice.message.content or "") if self.is_chat_model else choice.text
        usage = getattr(resp, "usage", None)
        meta = {"finish_reason": choice.finish_reason, "id": resp.id,
                "prompt_tokens": getattr(usage, "prompt_tokens", None),
                "completion_tokens": getattr(usage, "completion_tokens", None)}
        return GenResult(text, meta)

    def generate_stream(self, prompt: Prompt, params: dict[str, Any],
                        dtype: str | None = None) -> Iterator[tuple[str, dict[str, Any] | None]]:
        meta: dict[str, Any] = {}
        for chunk in self._request(prompt, params, dtype, stream=True):
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            delta = (choice.delta.content or "") if self.is_chat_model else (choice.text or "")
            if delta:
                yield delta, None
            if choice.finish_reason:
                meta = {"finish_reason": choice.finish_reason, "id": chunk.id}
        yield "", meta

    def get_server_info(self) -> dict[str, Any]:
        return {"backend": "openai", "model": self.model_name, "base_url": str(self.client.base_url)}
