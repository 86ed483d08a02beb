"""Frontend expressions and primitives: what ``s += ...`` accepts.

An :class:`Expr` is a tuple of *unbound* IR nodes (``stream=""``); a state binds them to its
stream when they are appended. So the eager interpreter, the tracer and the graph interpreter
all speak one vocabulary: the node kinds of ``ir``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ir

from . import choices as _choices
from .sampling import to_params

_DTYPES = {int: "int", float: "float", str: "str", bool: "bool", "int": "int", "float": "float",
           "str": "str", "bool": "bool"}


class Expr:
    """A sequence of IR nodes to append; supports ``+`` with strings and other expressions."""

    __slots__ = ("nodes",)

    def __init__(self, nodes: Sequence[ir.Node]) -> None:
        self.nodes: tuple[ir.Node, ...] = tuple(nodes)

    def __add__(self, other: Any) -> Expr:
        return Expr(self.nodes + as_expr(other).nodes)

    def __radd__(self, other: Any) -> Expr:
        return Expr(as_expr(other).nodes + self.nodes)

    def __repr__(self) -> str:
        return f"Expr({[n.kind for n in self.nodes]})"


def as_expr(value: Any) -> Expr:
    """Coerce what a program appends (str, Expr, symbolic value) into an :class:`Expr`."""
    if isinstance(value, Expr):
        return value
    if isinstance(value, str):
        return Expr((ir.Text(stream="", text=value),))
    to_nodes = getattr(value, "__sgl_nodes__", None)
    if to_nodes is not None:
        return Expr(to_nodes())
    raise TypeError(f"cannot append a {type(value).__name__} to a program state; append a str "
                    f"(e.g. str(value)) or an sglc expression such as sgl.gen(...)")


def gen(name: str | None = None, max_tokens: int | None = None, min_tokens: int | None = None,
        n: int | None = None, stop: str | list[str] | None = None, stop_token_ids: list[int] | None = None,
        temperature: float | None = None, top_p: float | None = None, top_k: int | None = None,
        min_p: float | None = None, frequency_penalty: float | None = None,
        presence_penalty: float | None = None, ignore_eos: bool | None = None,
        return_logprob: bool | None = None, logprob_start_len: int | None = None,
        top_logprobs_num: int | None = None, return_text_in_logprobs: bool | None = None,
        dtype: type | str | None = None, choices: Sequence[str] | None = None,
        choices_method: Any = None, regex: str | None = None, json_schema: Any = None) -> Expr:
    """Generate text into variable ``name`` (SGLang's ``gen``; ``choices=`` makes it a ``select``).

    Unset arguments fall back to the ``run()`` defaults; ``max_tokens``/``min_tokens`` map to
    ``SamplingParams.max_new_tokens``/``min_new_tokens``. ``dtype`` (int/float/str/bool) constrains
    the output's form on backends that support regex constraints.
    """
    if choices is not None:
        return select(name, choices, temperature=temperature or 0.0, choices_method=choices_method)
    if dtype is not None and dtype not in _DTYPES:
        raise TypeError(f"gen dtype must be one of int, float, str, bool; got {dtype!r}")
    if json_schema is not None and not isinstance(json_schema, str):
        json_schema = _schema_text(json_schema)
    params = to_params(max_tokens=max_tokens, min_tokens=min_tokens, n=n, stop=stop,
                       stop_token_ids=stop_token_ids, temperature=temperature, top_p=top_p, top_k=top_k,
                       min_p=min_p, frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
                       ignore_eos=ignore_eos, return_logprob=return_logprob,
                       logprob_start_len=logprob_start_len, top_logprobs_num=top_logprobs_num,
                       return_text_in_logprobs=return_text_in_logprobs, regex=regex, json_schema=json_schema)
    return Expr((ir.Gen(stream="", name=name or "", params=params,
                        dtype=_DTYPES[dtype] if dtype is not None else None),))


def gen_int(name: str | None = None, **kwargs: Any) -> Expr:
    """``gen(..., dtype=int)``."""
    return gen(name, dtype=int, **kwargs)


def gen_string(name: str | None = None, **kwargs: Any) -> Expr:
    """``gen(..., dtype=str)``."""
    return gen(name, dtype=str, **kwargs)


def select(name: str | None = None, choices: Sequence[str] | None = None, temperature: float = 0.0,
           choices_method: Any = None) -> Expr:
    """Choose one of ``choices`` into variable ``name`` by scoring each continuation."""
    if not choices or isinstance(choices, str):
        raise TypeError("select needs a non-empty list of strings: choices=['yes', 'no']")
    if any(hasattr(c, "__sgl_nodes__") for c in choices):
        from .errors import TraceError

        raise TraceError("select choices must be constant strings, not traced values; build the list "
                         "in Python from constants")
    return Expr((ir.Select(stream="", name=name or "", choices=tuple(str(c) for c in choices),
                           choices_method=_choices.method_name(choices_method),
                           temperature=float(temperature)),))


def image(path: str) -> Expr:
    """Attach an image (path or URL) to the prompt."""
    return Expr((ir.Image(stream="", path=str(path)),))


def _role(role: str, expr: Any = None) -> Expr:
    body = as_expr(expr).nodes if expr is not None else ()
    return Expr((ir.RoleBegin(stream="", role=role), *body, ir.RoleEnd(stream="", role=role)))


def system(expr: Any = None) -> Expr:
    """A system message: ``s += sgl.system("You are ...")``."""
    return _role("system", expr)


def user(expr: Any = None) -> Expr:
    """A user message: ``s += sgl.user("Hi")``."""
    return _role("user", expr)


def assistant(expr: Any = None) -> Expr:
    """An assistant message, usually around a gen: ``s += sgl.assistant(sgl.gen("answer"))``."""
    return _role("assistant", expr)


def system_begin() -> Expr:
    return Expr((ir.RoleBegin(stream="", role="system"),))


def system_end() -> Expr:
    return Expr((ir.RoleEnd(stream="", role="system"),))


def user_begin() -> Expr:
    return Expr((ir.RoleBegin(stream="", role="user"),))


def user_end() -> Expr:
    return Expr((ir.RoleEnd(stream="", role="user"),))


def assistant_begin() -> Expr:
    return Expr((ir.RoleBegin(stream="", role="assistant"),))


def assistant_end() -> Expr:
    return Expr((ir.RoleEnd(stream="", role="assistant"),))


def _schema_text(schema: Any) -> str:
    import json

    if hasattr(schema, "model_json_schema"):  # a Pydantic model class
        return json.dumps(schema.model_json_schema())
    return json.dumps(schema)
