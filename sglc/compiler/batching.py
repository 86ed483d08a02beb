"""Batched runtime calls for plan groups: one ``generate`` for sibling gens, one warm + one scoring
call for sibling selects, and a rendezvous that gathers a group's members from their threads."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from runtime.seq import common_prefix_len
from runtime.tokenizer import encode_many

from ..backend.base import Backend, GenResult, Prompt, SelectResult
from ..choices import BY_NAME
from ..executor import settle
from ..sampling import split_params

logger = logging.getLogger(__name__)


def engine_of(backend: Backend) -> Any:
    """The in-process runtime ``Engine`` behind ``backend`` (None for other backends: no batching)."""
    from ..backend.engine import EngineBackend

    return backend.engine if isinstance(backend, EngineBackend) else None


def prefix_cache_enabled(backend: Backend) -> bool:
    """False when the backend's engine runs without a radix cache (warming would be wasted prefill)."""
    engine = engine_of(backend)
    if engine is None:
        return True
    try:
        return not engine.model_info().get("disable_radix_cache", False)
    except Exception:  # noqa: BLE001 -- an engine without model_info: assume a cache
        return True


class Rendezvous:
    """Collects one item per group member; the last to arrive runs ``run(items)`` for everyone."""

    def __init__(self, members: Sequence[int], run: Callable[[list[Any]], list[Any]]) -> None:
        self.members = tuple(members)
        self.run = run
        self.items: dict[int, Any] = {}
        self.futures = {m: Future() for m in self.members}
        self.lock = threading.Lock()

    def arrive(self, nid: int, item: Any) -> Any:
        """Hand in ``item`` for member ``nid``; blocks until the group's call returned."""
        with self.lock:
            self.items[nid] = item
            last = len(self.items) == len(self.members)
        if last and not self.futures[nid].done():   # NOTE: a failed meeting (the run failed) calls nobody
            try:
                results = self.run([self.items[m] for m in self.members])
                for m, r in zip(self.members, results):
                    settle(self.futures[m], r)
            except BaseException as e:  # noqa: BLE001 -- every member re-raises it on its own stream
                self.fail(e)
        return self.futures[nid].result()

    def fail(self, error: BaseException) -> None:
        for fut in self.futures.values():
            settle(fut, error=error)


def _sampling(params: dict[str, Any], dtype: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    from ..backend.engine import DTYPE_REGEX

    sampling, extra = split_params(params)
    if dtype in DTYPE_REGEX and not any(sampling.get(k) for k in ("regex", "json_schema", "ebnf")):
        sampling["regex"] = DTYPE_REGEX[dtype]  # NOTE: the same rule as EngineBackend.generate
    return sampling, extra


def batch_generate(backend: Backend, items: list[tuple[Prompt, dict[str, Any], str | None]],
                   known: dict[str, list[int]] | None = None) -> list[GenResult]:
    """One ``engine.generate([...])`` for all ``(prompt, params, dtype)``; per-item calls if the
    items cannot share one call (different per-call logprob options, ``n > 1``, no engine).

    The prompts go to the engine as token ids, tokenized here in one batched call (``encode_many``) or
    taken from ``known`` (text -> ids the executor already computed, e.g. for the fork's warm-up): the
    engine would tokenize each prompt one by one on this thread, the same ids (``Engine.generate`` encodes
    a text prompt with ``tokenizer.encode``)."""
    engine = engine_of(backend)
    reqs = [_sampling(p, d) for _, p, d in items]
    extras = {tuple(sorted(e.items())) for _, e in reqs}
    if engine is None or len(extras) != 1 or any(int(s.get("n", 1) or 1) != 1 for s, _ in reqs):
        return [backend.generate(prompt, params, dtype) for prompt, params, dtype in items]
    texts = [prompt.text for prompt, _, _ in items]
    ids = prompt_ids(engine, texts, known)
    if ids is None:
        outs = engine.generate(prompt=texts, sampling_params=[s for s, _ in reqs], **reqs[0][1])
    else:
        outs = engine.generate(input_ids=ids, sampling_params=[s for s, _ in reqs], **reqs[0][1])
    return [GenResult(o["text"], o["meta_info"]) for o in outs]


def prompt_ids(engine: Any, texts: list[str], known: dict[str, list[int]] | None = None) -> list[list[int]] | None:
    """The token ids ``engine`` would compute for each text prompt (``known`` ones looked up, the rest
    tokenized in one call); None when the engine has no tokenizer of its own to match."""
    tok = getattr(engine, "tokenizer", None)
    if tok is None:
        return None
    known = known or {}
    missing = list(dict.fromkeys(t for t in texts if t not in known))
    found = dict(zip(missing, encode_many(tok, missing))) if missing else {}
    return [list(known[t]) if t in known else found[t] for t in texts]


def batch_select(backend: Backend, items: list[tuple[Prompt, tuple[str, ...], str]]) -> list[SelectResult]:
    """Score every (prefix, choice) of all items: one call warms the prefixes, one scores them all."""
    engine = engine_of(backend)
    if engine is None or engine.tokenizer is None:
        return [backend.select(prompt, choices, method) for prompt, choices, method in items]
    tok = engine.tokenizer
    pres = [tok.encode(prompt.text) for prompt, _, _ in items]
    warms = [(pre[:-1], len(choices)) for pre, (_, choices, _) in zip(pres, items) if len(pre) > 1]
    seqs, spans = [], []
    for pre, (_, choices, _) in zip(pres, items):
        start = len(seqs)
        for c in choices:
            seqs.append(pre + tok.encode(c, add_special_tokens=False))
        spans.append((start, len(seqs), len(pre)))
    # NOTE: warm first so each prefix is prefilled once, not once per choice; pinned until its choices arrive.
    # Not its last token: every choice recomputes it (its logits score the choice's first token).
    for w, k in warms:   # NOTE: not waited for: the choices wait for their prefix inside the scheduler
        engine.warm(w, expect=k, wait=False)
    # NOTE: each sequence's logprobs start at its own prefix: one shared start would make longer prefixes
    # recompute their tail per choice.
    outs = engine.generate(input_ids=seqs, sampling_params={"max_new_tokens": 0}, return_logprob=True,
                           logprob_start_len=[n_pre for lo, hi, n_pre in spans for _ in range(lo, hi)])
    results = []
    for (lo, hi, n_pre), (_, choices, method) in zip(spans, items):
        scores = [_score(outs[i], len(seqs[i]) - n_pre) for i in range(lo, hi)]
        best = BY_NAME[method].pick([s["token_logprobs"] for s in scores], None)
        meta = {"method": method, "scores": scores,
                "normalized_prompt_logprobs": [s["normalized_logprob"] for s in scores]}
        results.append(SelectResult(choices[best], meta))
    return results


def _score(out: dict[str, Any], n: int) -> dict[str, Any]:
    # NOTE: the same numbers Engine.score returns for one continuation.
    lps = [float(lp) for lp, _ in out["meta_info"]["input_token_logprobs"][-n:]]
    total = float(sum(lps))
    return {"logprob_sum": total, "normalized_logprob": total / max(n, 1), "num_tokens": n, "token_logprobs": lps}


def warm_common_ids(backend: Backend, texts: list[str], expect: int,
                    known: dict[str, list[int]] | None = None) -> bool:
    """Warm the longest common *token* prefix of ``texts`` as the engine tokenizes them, pinned for ``expect``
    requests; False (nothing done) when the backend has no in-process engine with a tokenizer. The ids of
    each text are stored in ``known`` (text -> ids) for the requests that follow (``batch_generate``).

    NOTE: text-level cuts cannot know the tokenizer (``" 1"`` is two tokens for some, one for others);
    comparing token ids warms exactly what the branches' requests will share.
    """
    engine = engine_of(backend)
    if engine is None or engine.tokenizer is None or not texts:
        return False
    ids = prompt_ids(engine, texts, known)
    assert ids is not None
    if known is not None:
        known.update(zip(texts, ids))
    n = min(len(x) for x in ids) - 1   # NOTE: a request recomputes its last prompt token (for its logits)
    first = ids[0]
    for other in ids[1:]:
        n = min(n, common_prefix_len(first, other))
    if n > 0:
        # NOTE: not waited for: the requests that follow wait for it inside the scheduler (no round trip)
        engine.warm(first[:n], expect=expect, wait=not expect)
    return True
