"""Chat templates: the text around each role's content.

A :class:`ChatTemplate` maps a role to ``(prefix, suffix)``. Templates come from a tokenizer's
Jinja chat template (:func:`from_tokenizer`, derived by rendering sentinel messages) or from the
named built-ins (:func:`get_chat_template`): ``chatml``, ``llama-3-instruct``, ``vicuna_v1.1``,
``mistral``, ``default`` (plain ``ROLE: content`` lines, for base models).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

_SENTINELS = {"system": "\x00SYS\x00", "user": "\x00USR\x00", "assistant": "\x00AST\x00"}


@dataclass(frozen=True)
class ChatTemplate:
    """Role prefixes/suffixes plus an optional default system prompt and stop strings."""

    name: str
    role_prefix_and_suffix: dict[str, tuple[str, str]]
    default_system_prompt: str | None = None
    stop_str: tuple[str, ...] = field(default=())

    def prefix(self, role: str) -> str:
        return self.role_prefix_and_suffix[role][0]

    def suffix(self, role: str) -> str:
        return self.role_prefix_and_suffix[role][1]


_BUILTINS: dict[str, ChatTemplate] = {
    t.name: t for t in (
        ChatTemplate("default", {"system": ("SYSTEM:", "\n"), "user": ("USER:", "\n"),
                                 "assistant": ("ASSISTANT:", "\n")}),
        ChatTemplate("chatml", {r: (f"<|im_start|>{r}\n", "<|im_end|>\n") for r in ("system", "user", "assistant")},
                     stop_str=("<|im_end|>",)),
        ChatTemplate("llama-3-instruct",
                     {r: (f"<|start_header_id|>{r}<|end_header_id|>\n\n", "<|eot_id|>")
                      for r in ("system", "user", "assistant")}, stop_str=("<|eot_id|>",)),
        ChatTemplate("vicuna_v1.1", {"system": ("", " "), "user": ("USER:", " "), "assistant": ("ASSISTANT:", "</s>")},
                     default_system_prompt=("A chat between a curious user and an artificial intelligence "
                                            "assistant. The assistant gives helpful, detailed, and polite "
                                            "answers to the user's questions.")),
        ChatTemplate("mistral", {"system": ("[SYSTEM_PROMPT] ", " [/SYSTEM_PROMPT]"), "user": ("[INST] ", " [/INST]"),
                                 "assistant": ("", " </s><s>")}, stop_str=("</s>",)),
    )
}


def get_chat_template(name: str) -> ChatTemplate:
    """A built-in template by name."""
    try:
        return _BUILTINS[name]
    except KeyError:
        raise ValueError(f"unknown chat template {name!r}; built-ins: {sorted(_BUILTINS)}") from None


def resolve_template(spec: str | ChatTemplate | None, default: Callable[[], ChatTemplate]) -> ChatTemplate:
    """A backend's template: a ChatTemplate as is, a built-in by name, else ``default()``."""
    if isinstance(spec, ChatTemplate):
        return spec
    return get_chat_template(spec) if spec else default()


def list_chat_templates() -> list[str]:
    return sorted(_BUILTINS)


def from_tokenizer(tokenizer: Any, name: str = "tokenizer") -> ChatTemplate:
    """Derive role prefixes/suffixes from ``tokenizer.apply_chat_template`` (Jinja).

    Renders sentinel conversations: ``[system]``, ``[system, user]``, ``[system, user, assistant]``
    and ``[user]`` (the last reveals a default system prompt the template inserts on its own).
    Falls back to ``chatml`` when the tokenizer has no template.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        logger.info("tokenizer has no chat template; using chatml")
        return get_chat_template("chatml")
    s, u, a = _SENTINELS["system"], _SENTINELS["user"], _SENTINELS["assistant"]

    def render(msgs: list[tuple[str, str]]) -> str:
        return tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in msgs], tokenize=False)

    try:
        sys_text = render([("system", s)])
        sys_prefix, sys_suffix = sys_text.split(s)
        su = render([("system", s), ("user", u)])
        user_prefix, user_suffix = su[len(sys_text):].split(u)
        sua = render([("system", s), ("user", u), ("assistant", a)])
        asst_prefix, asst_suffix = sua[len(su):].split(a)
    except Exception as e:  # noqa: BLE001 -- NOTE: Jinja templates raise arbitrary errors (e.g. "system role not supported").
        logger.warning("could not derive role text from the tokenizer's chat template (%s); using chatml", e)
        return get_chat_template("chatml")
    default_system = _default_system(render([("user", u)]), sys_prefix, sys_suffix, user_prefix, u)
    stop = tuple(x for x in (sys_suffix.strip(), asst_suffix.strip()) if x)
    return ChatTemplate(name, {"system": (sys_prefix, sys_suffix), "user": (user_prefix, user_suffix),
                               "assistant": (asst_prefix, asst_suffix)}, default_system, tuple(dict.fromkeys(stop)))


def _default_system(text: str, sys_prefix: str, sys_suffix: str, user_prefix: str, u: str) -> str | None:
    head = text[:text.index(user_prefix + u)] if user_prefix + u in text else ""
    if head.startswith(sys_prefix) and head.endswith(sys_suffix) and len(head) > len(sys_prefix + sys_suffix):
        return head[len(sys_prefix):len(head) - len(sys_suffix)]
    return None


class _JinjaRenderer:
    """A tokenizer stand-in that renders a Jinja chat template the way ``transformers`` does."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = "") -> None:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = self._raise
        self.chat_template = source
        self._template = env.from_string(source)
        self._tokens = {"bos_token": bos_token, "eos_token": eos_token}

    @staticmethod
    def _raise(message: str) -> None:
        from jinja2 import TemplateError

        raise TemplateError(message)

    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool = False,
                            add_generation_prompt: bool = False) -> str:
        return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                     **self._tokens)


def from_jinja(source: str, name: str = "jinja", bos_token: str = "", eos_token: str = "") -> ChatTemplate:
    """A template from Jinja chat-template source (e.g. a remote runtime's ``GetModelInfo``)."""
    return from_tokenizer(_JinjaRenderer(source, bos_token, eos_token), name)
