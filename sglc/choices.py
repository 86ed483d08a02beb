"""Choice-scoring methods for ``select``, after SGLang's ``sglang.lang.choices``.

Each method gets, per choice, the token logprobs of the choice given the prompt (and, for
``unconditional_likelihood_normalized``, given no prompt) and returns the index of the winner.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ChoicesMethod:
    """A named choice-scoring method; pass one as ``choices_method=`` or use its name."""

    name: str
    needs_unconditional: bool = False

    def pick(self, token_logprobs: Sequence[Sequence[float]],
             unconditional: Sequence[Sequence[float]] | None = None) -> int:
        """Index of the chosen choice (ties go to the earliest choice)."""
        return _METHODS[self.name](token_logprobs, unconditional)


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))


def _token_length_normalized(lps: Sequence[Sequence[float]], _unc: object) -> int:
    """Highest mean token logprob."""
    return _argmax([_mean(lp) for lp in lps])


def _greedy_token_selection(lps: Sequence[Sequence[float]], _unc: object) -> int:
    """Position by position keep the choices with the best token logprob; shorter choices are
    padded with their mean logprob (SGLang's rule)."""
    width = max(len(lp) for lp in lps)
    matrix = [list(lp) + [_mean(lp)] * (width - len(lp)) for lp in lps]
    remaining = list(range(len(lps)))
    for j in range(width):
        best = max(matrix[i][j] for i in remaining)
        remaining = [i for i in remaining if matrix[i][j] == best]
        if len(remaining) == 1:
            break
    return remaining[0]


def _unconditional_likelihood_normalized(lps: Sequence[Sequence[float]],
                                         unc: Sequence[Sequence[float]] | None) -> int:
    """Highest mean of (conditional - unconditional) token logprobs."""
    if unc is None:
        raise ValueError("unconditional_likelihood_normalized needs the unconditional logprobs")
    return _argmax([_mean([a - b for a, b in zip(c, u)]) for c, u in zip(lps, unc)])


_METHODS = {
    "token_length_normalized": _token_length_normalized,
    "greedy_token_selection": _greedy_token_selection,
    "unconditional_likelihood_normalized": _unconditional_likelihood_normalized,
}

token_length_normalized = ChoicesMethod("token_length_normalized")
greedy_token_selection = ChoicesMethod("greedy_token_selection")
unconditional_likelihood_normalized = ChoicesMethod("unconditional_likelihood_normalized", needs_unconditional=True)
BY_NAME = {m.name: m for m in (token_length_normalized, greedy_token_selection,
                               unconditional_likelihood_normalized)}


def method_name(method: ChoicesMethod | str | None) -> str:
    """Normalize a ``choices_method`` argument to its name (default ``token_length_normalized``)."""
    if method is None:
        return token_length_normalized.name
    name = method.name if isinstance(method, ChoicesMethod) else str(method)
    if name not in BY_NAME:
        raise ValueError(f"unknown choices_method {name!r}; use one of {sorted(BY_NAME)}")
    return name


ScoreFn = Callable[[str, list[str]], list[dict[str, Any]]]


def select_by_scores(prefix: str, choices: Sequence[str], method: str, score: ScoreFn,
                     unconditional_prefix: str = "\n") -> tuple[int, dict[str, Any]]:
    """Score ``choices`` after ``prefix`` with ``score`` (the runtime's ``score`` call: one request,
    prefix shared) and pick by ``method``; returns ``(index, meta_info)``."""
    m = BY_NAME[method]
    scores = score(prefix, list(choices))
    lps = [[float(x) for x in s["token_logprobs"]] for s in scores]
    unconditional = None
    if m.needs_unconditional:
        unconditional = [[float(x) for x in s["token_logprobs"]] for s in score(unconditional_prefix, list(choices))]
    meta = {"method": method, "scores": scores,
            "normalized_prompt_logprobs": [float(s["normalized_logprob"]) for s in scores]}
    return m.pick(lps, unconditional), meta
