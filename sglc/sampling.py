"""The one mapping from SGLang's ``gen()``/``run()`` argument names to ``SamplingParams`` fields."""
from __future__ import annotations

import dataclasses
from typing import Any

from runtime.sampling_params import SamplingParams

# SGLang spells a few fields differently; every other field keeps its SamplingParams name.
_RENAMES = {"max_tokens": "max_new_tokens", "min_tokens": "min_new_tokens"}
# Per-request (not per-sampling) options a gen may set; the backends pass them to generate().
LOGPROB_KEYS = ("return_logprob", "logprob_start_len", "top_logprobs_num", "return_text_in_logprobs")
SAMPLING_FIELDS = frozenset(f.name for f in dataclasses.fields(SamplingParams))


def to_params(**kwargs: Any) -> dict[str, Any]:
    """Map SGLang-style keyword arguments to ``{SamplingParams field or logprob key: value}``.

    ``None`` values (not set) are dropped, so the result holds only what the program chose;
    unknown names raise a ``TypeError`` naming them.
    """
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if value is None:
            continue
        name = _RENAMES.get(key, key)
        if name not in SAMPLING_FIELDS and name not in LOGPROB_KEYS:
            raise TypeError(f"unknown sampling argument {key!r}; known: "
                            f"{sorted(SAMPLING_FIELDS | set(LOGPROB_KEYS) | set(_RENAMES))}")
        if name == "stop" and isinstance(value, str):
            value = [value]
        if isinstance(value, tuple):
            value = list(value)
        out[name] = value
    return out


def split_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split merged params into ``(sampling_params dict, generate() logprob kwargs)``."""
    sampling = {k: v for k, v in params.items() if k in SAMPLING_FIELDS}
    extra = {k: v for k, v in params.items() if k in LOGPROB_KEYS}
    return sampling, extra


def merge(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``run()``-level defaults overridden by a gen's explicit params (neither dict is modified)."""
    return {**defaults, **overrides}
