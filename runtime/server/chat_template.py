"""Chat templates for ``/v1/chat/completions``: the tokenizer's own, a named built-in, or a Jinja file.

``--chat-template`` takes a name from :data:`BUILTIN` or a path to a Jinja file; unset means the
tokenizer's template (``tokenizer.chat_template``), falling back to ChatML when it has none.
Rendering goes through ``tokenizer.apply_chat_template`` so templates see the usual variables
(``messages``, ``add_generation_prompt``, ``bos_token``, ``eos_token``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from runtime.errors import EngineError

logger = logging.getLogger(__name__)

_CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim"
    " + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
_PLAIN = (
    "{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
)

BUILTIN: dict[str, str] = {"chatml": _CHATML, "llama-3": _LLAMA3, "plain": _PLAIN}


def resolve(spec: str | None, tokenizer: Any) -> str:
    """The Jinja source for ``--chat-template`` ``spec`` (None: the tokenizer's own, else ChatML)."""
    if spec is None or spec in ("", "auto", "default"):
        own = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
        if isinstance(own, str) and own:
            return own
        logger.warning("the tokenizer has no chat template; using ChatML (pass --chat-template)")
        return _CHATML
    if spec in BUILTIN:
        return BUILTIN[spec]
    path = Path(spec).expanduser()
    if path.is_file():
        return path.read_text()
    raise EngineError(f"--chat-template {spec!r} is neither a built-in name ({', '.join(sorted(BUILTIN))}) "
                      f"nor an existing Jinja file")


def message_text(content: Any, index: int) -> str:
    """The text of one message's ``content``: a string or a list of ``{"type": "text"}`` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text":
            raise EngineError(f"messages[{index}].content: part type {kind!r} is not supported "
                              f"(only 'text' parts are)")
        parts.append(str(part.get("text", "")))
    return "".join(parts)


def render_ids(tokenizer: Any, template: str, messages: list[dict[str, Any]]) -> list[int]:
    """Apply ``template`` to ``messages`` (with the assistant generation prompt) and tokenize."""
    if tokenizer is None:
        raise EngineError("chat completions need a tokenizer; the engine runs with skip_tokenizer_init")
    if not messages:
        raise EngineError("messages must not be empty")
    plain = [{"role": m["role"], "content": message_text(m.get("content"), i)} for i, m in enumerate(messages)]
    try:
        text = tokenizer.apply_chat_template(plain, chat_template=template, tokenize=False,
                                             add_generation_prompt=True)
    except Exception as err:
        raise EngineError(f"messages: the chat template could not render them: {err}") from err
    # NOTE: the template already holds BOS and role markers; don't let the tokenizer add them again.
    return list(tokenizer.encode(text, add_special_tokens=False))
