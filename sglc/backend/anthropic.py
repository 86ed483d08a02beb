"""Backend for Anthropic's Messages API through the official ``anthropic`` client.

A ``gen`` must sit inside an assistant role (text already written in that role is sent as the
assistant's prefill, which the API continues). System messages go to the ``system`` field.
``select`` falls back to generation and matching, as for OpenAI chat models; regex/JSON
constraints and ``dtype`` are not enforced.
"""
from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from typing import Any

from ..chat_template import get_chat_template
from ..sampling import split_params
from .base import Backend, GenResult, Prompt
from .openai import chat_messages

logger = logging.getLogger(__name__)

_FIELDS = {"max_new_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p",
           "top_k": "top_k", "stop": "stop_sequences"}


class Anthropic(Backend):
    """``sgl.Anthropic("claude-3-5-haiku-latest")``; ``base_url``/``api_key`` go to the client."""

    is_chat_model = True

    def __init__(self, model_name: str, base_url: str | None = None, api_key: str | None = None,
                 **client_kwargs: Any) -> None:
        import anthropic

        self.model_name = model_name
        self.client = anthropic.Anthropic(base_url=base_url, api_key=api_key, **client_kwargs)
        self.chat_template = get_chat_template("chatml")
        self._accepted = set(inspect.signature(self.client.messages.create).parameters)

    def _kwargs(self, prompt: Prompt, params: dict[str, Any]) -> dict[str, Any]:
        sampling, _ = split_params(params)
        kw = {_FIELDS[k]: v for k, v in sampling.items() if k in _FIELDS and v not in (None, -1)}
        kw.setdefault("max_tokens", 128)
        # NOTE: recent clients dropped temperature/top_p/top_k from the signature; send those in extra_body.
        extra = {k: kw.pop(k) for k in list(kw) if k not in self._accepted}
        if extra:
            kw["extra_body"] = extra
        messages = chat_messages(prompt, "Anthropic")
        system = "\n".join(m["content"] for m in messages if m["role"] == "system")
        if system:
            kw["system"] = system
        # NOTE: the API rejects trailing whitespace in an assistant prefill.
        kw["messages"] = [{"role": m["role"], "content": m["content"].rstrip() if m is messages[-1] and
                           m["role"] == "assistant" else m["content"]}
                          for m in messages if m["role"] != "system"]
        return {"model": self.model_name, **kw}

    def generate(self, prompt: Prompt, params: dict[str, Any], dtype: str | None = None) -> GenResult:
        resp = self.client.messages.create(**self._kwargs(prompt, params))
        text = "".join(getattr(block, "text", "") for block in resp.content)
        meta = {"id": resp.id, "finish_reason": resp.stop_reason,
                "prompt_tokens": resp.usage.input_tokens, "completion_tokens": resp.usage.output_tokens}
        return GenResult(text, meta)

    def generate_stream(self, prompt: Prompt, params: dict[str, Any],
                        dtype: str | None = None) -> Iterator[tuple[str, dict[str, Any] | None]]:
        with self.client.messages.stream(**self._kwargs(prompt, params)) as stream:
            yield from ((piece, None) for piece in stream.text_stream)
            final = stream.get_final_message()
        yield "", {"id": final.id, "finish_reason": final.stop_reason,
                   "prompt_tokens": final.usage.input_tokens, "completion_tokens": final.usage.output_tokens}

    def get_server_info(self) -> dict[str, Any]:
        return {"backend": "anthropic", "model": self.model_name}
