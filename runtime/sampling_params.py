"""The one definition of sampling parameters.

``gen()``, ``/generate``, ``/v1/*`` and the proto all map onto :class:`SamplingParams`.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from .errors import EngineError

_INT_FIELDS = ("max_new_tokens", "min_new_tokens", "top_k", "n", "pin_uses")
_FLOAT_FIELDS = ("temperature", "top_p", "min_p", "frequency_penalty", "presence_penalty", "repetition_penalty",
                 "pin_ttl_s")
_BOOL_FIELDS = ("ignore_eos", "skip_special_tokens", "spaces_between_special_tokens", "no_stop_trim")
_INT64 = 1 << 63
MAX_N = 1024   # samples per prompt: n = 10^6 held the scheduler for minutes (OpenAI's own limit is 128)


@dataclass
class SamplingParams:
    max_new_tokens: int = 128
    min_new_tokens: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1: off
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    n: int = 1
    seed: int | None = None
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    no_stop_trim: bool = False
    # Constraints (compiled by grammar/): at most one of these.
    regex: str | None = None
    json_schema: str | None = None
    ebnf: str | None = None
    # Radix-cache hint (``Engine.warm(prefix, expect=n)``): once the prompt is prefilled, keep it cached and
    # locked until ``pin_uses`` later requests extending it were admitted, or ``pin_ttl_s`` seconds passed.
    pin_uses: int = 0
    pin_ttl_s: float = 30.0

    @classmethod
    def from_dict(cls, d: dict[str, Any] | SamplingParams | None) -> SamplingParams:
        """Build from a user dict; unknown keys are an error naming the key."""
        if d is None:
            return cls()
        if isinstance(d, SamplingParams):
            return dataclasses.replace(d)
        if not isinstance(d, dict):
            raise EngineError(f"sampling_params must be a dict, got {type(d).__name__}")
        unknown = sorted(set(d).difference(_FIELDS))
        if unknown:
            raise EngineError(f"unknown sampling parameter(s) {unknown}; known: {sorted(_FIELDS)}")
        kw = {k: v for k, v in d.items() if v is not None or k in ("seed", "regex", "json_schema", "ebnf")}
        if isinstance(kw.get("stop"), str):
            kw["stop"] = [kw["stop"]]
        if kw.get("json_schema") is not None and not isinstance(kw["json_schema"], str):
            import json

            kw["json_schema"] = json.dumps(kw["json_schema"])
        for name, v in kw.items():
            kw[name] = _plain(name, v)
        if isinstance(kw.get("stop_token_ids"), (list, tuple)):
            kw["stop_token_ids"] = [_plain("", t) for t in kw["stop_token_ids"]]
        sp = cls(**kw)
        sp.verify()
        return sp

    def to_dict(self) -> dict[str, Any]:
        # NOTE: not dataclasses.asdict: its recursive deep copy cost ~0.1 ms per request of a large batch.
        return {name: list(v) if isinstance(v := getattr(self, name), list) else v for name in _FIELDS}

    @property
    def greedy(self) -> bool:
        return self.temperature < 1e-5 or self.top_k == 1

    def verify(self) -> None:
        """Raise :class:`EngineError` with the offending field's name when a value has the wrong type or is out
        of range (a value that reached the worker unchecked failed a whole step there)."""
        for name in _INT_FIELDS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise EngineError(f"{name} must be an integer, got {v!r}")
            _check(-_INT64 <= v < _INT64, name, "must fit in 64 bits", v)
        for name in _FLOAT_FIELDS:
            v = getattr(self, name)
            _check(not isinstance(v, bool) and isinstance(v, numbers.Real) and math.isfinite(v), name,
                   "must be a finite number", v)
        for name in _BOOL_FIELDS:
            _check(isinstance(getattr(self, name), bool), name, "must be true or false", getattr(self, name))
        _check(self.seed is None or (isinstance(self.seed, int) and not isinstance(self.seed, bool)), "seed",
               "must be an integer (or null)", self.seed)
        for name in ("regex", "json_schema", "ebnf"):
            v = getattr(self, name)
            _check(v is None or isinstance(v, str), name, "must be a string", v)
        _check(self.n <= MAX_N, "n", f"must be <= {MAX_N}", self.n)
        _check(self.max_new_tokens >= 0, "max_new_tokens", "must be >= 0", self.max_new_tokens)
        _check(0 <= self.min_new_tokens, "min_new_tokens", "must be >= 0", self.min_new_tokens)
        _check(self.min_new_tokens <= self.max_new_tokens, "min_new_tokens",
               "must be <= max_new_tokens", self.min_new_tokens)
        _check(self.temperature >= 0, "temperature", "must be >= 0", self.temperature)
        _check(0 < self.top_p <= 1, "top_p", "must be in (0, 1]", self.top_p)
        _check(self.top_k == -1 or self.top_k >= 1, "top_k", "must be -1 (off) or >= 1", self.top_k)
        _check(0 <= self.min_p <= 1, "min_p", "must be in [0, 1]", self.min_p)
        _check(-2 <= self.frequency_penalty <= 2, "frequency_penalty", "must be in [-2, 2]",
               self.frequency_penalty)
        _check(-2 <= self.presence_penalty <= 2, "presence_penalty", "must be in [-2, 2]",
               self.presence_penalty)
        _check(0 < self.repetition_penalty <= 2, "repetition_penalty", "must be in (0, 2]",
               self.repetition_penalty)
        _check(self.n >= 1, "n", "must be >= 1", self.n)
        _check(self.pin_uses >= 0, "pin_uses", "must be >= 0", self.pin_uses)
        _check(isinstance(self.pin_ttl_s, (int, float)) and self.pin_ttl_s > 0, "pin_ttl_s", "must be > 0 seconds",
               self.pin_ttl_s)
        _check(isinstance(self.stop, list) and all(isinstance(s, str) and s for s in self.stop),
               "stop", "must be a string or a list of non-empty strings", self.stop)
        _check(isinstance(self.stop_token_ids, list) and all(
            isinstance(t, int) and not isinstance(t, bool) and 0 <= t < _INT64 for t in self.stop_token_ids),
            "stop_token_ids", "must be a list of non-negative integers", self.stop_token_ids)
        set_constraints = [k for k in ("regex", "json_schema", "ebnf") if getattr(self, k) is not None]
        _check(len(set_constraints) <= 1, "regex/json_schema/ebnf", "at most one constraint may be set",
               set_constraints)

    @property
    def constraint(self) -> tuple[str, str] | None:
        """``(kind, source)`` of the constraint, if any."""
        for k in ("regex", "json_schema", "ebnf"):
            v = getattr(self, k)
            if v is not None:
                return k, v
        return None


def _plain(name: str, v: Any) -> Any:
    """``v`` as the Python type ``verify`` checks: numpy integers and floats as int and float, and 0 / 1 (numpy
    bools too) as booleans for a flag; anything else (``"no"``, ``1.5`` for an integer) as given, for verify."""
    if name in _BOOL_FIELDS:
        return bool(v) if not isinstance(v, (bool, str, float)) and v in (0, 1) else v
    if isinstance(v, bool) or type(v) in (int, float):
        return v
    if isinstance(v, numbers.Integral):
        return int(v)
    return float(v) if isinstance(v, numbers.Real) else v


def _check(ok: bool, name: str, what: str, value: Any) -> None:
    if not ok:
        raise EngineError(f"invalid sampling parameter {name}={value!r}: {what}")


_FIELDS = tuple(f.name for f in dataclasses.fields(SamplingParams))
