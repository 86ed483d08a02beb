"""A model-free stand-in for ``runtime.engine.Engine``: deterministic outputs, every call recorded.

Text and logprobs depend only on the token ids (one id per character), so batched and single
calls give identical results — which is what lets tests check the plan executor's call pattern.
"""
from __future__ import annotations

import hashlib
import threading
from typing import Any

WORDS = ["red", "green", "blue", "cyan", "amber", "violet"]


class CharTokenizer:
    bos_token = None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) for c in text]


def _h(ids: list[int]) -> int:
    return int(hashlib.sha256(repr(ids).encode()).hexdigest(), 16)


class FakeEngine:
    """``generate`` (one or a list), ``score``, ``warm``; ``calls`` lists (method, batch size)."""

    def __init__(self) -> None:
        self.tokenizer = CharTokenizer()
        self.calls: list[tuple[str, int]] = []
        self.warmed: list[str] = []
        self.expected: list[int] = []   # warm(..., expect=n) per warm-up, in order
        self.pin_uses: list[int] = []   # pin_uses of every generate() item that asked for a pin
        self.waited: list[bool] = []    # warm(..., wait=...) per warm-up, in order
        self.lock = threading.Lock()

    def _one(self, ids: list[int], sp: dict[str, Any], return_logprob: bool) -> dict[str, Any]:
        n = int(sp.get("max_new_tokens", 3))
        words = [WORDS[(_h(ids) >> (4 * i)) % len(WORDS)] for i in range(min(n, 3))]
        text = (" " + " ".join(words)) if n else ""
        meta: dict[str, Any] = {"prompt_tokens": len(ids), "completion_tokens": len(words) if n else 0}
        if return_logprob:
            meta["input_token_logprobs"] = [[None if i == 0 else -((_h(ids[:i + 1]) % 1000) / 100.0), t]
                                            for i, t in enumerate(ids)]
        return {"text": text, "output_ids": [], "meta_info": meta}

    def generate(self, prompt: Any = None, sampling_params: Any = None, input_ids: Any = None,
                 return_logprob: bool = False, **extra: Any) -> Any:
        single = isinstance(prompt, str) or (input_ids is not None and input_ids and isinstance(input_ids[0], int))
        items = ([prompt] if isinstance(prompt, str) else prompt) if prompt is not None else \
            ([input_ids] if single else input_ids)
        ids = [self.tokenizer.encode(x) if isinstance(x, str) else list(x) for x in items]
        sps = sampling_params if isinstance(sampling_params, list) else [sampling_params or {}] * len(ids)
        with self.lock:
            self.calls.append(("generate", len(ids)))
            self.pin_uses.extend(sp["pin_uses"] for sp in sps if sp.get("pin_uses"))
        outs = [self._one(i, sp, return_logprob) for i, sp in zip(ids, sps)]
        return outs[0] if single else outs

    def score(self, prefix: str, continuations: list[str]) -> list[dict[str, Any]]:
        with self.lock:
            self.calls.append(("score", len(continuations)))
        pre = self.tokenizer.encode(prefix)
        out = []
        for c in continuations:
            ids = pre + self.tokenizer.encode(c, add_special_tokens=False)
            n = len(ids) - len(pre)
            lps = [lp for lp, _ in self._one(ids, {"max_new_tokens": 0}, True)["meta_info"]
                   ["input_token_logprobs"][-n:]]
            out.append({"logprob_sum": sum(lps), "normalized_logprob": sum(lps) / n, "num_tokens": n,
                        "token_logprobs": lps})
        return out

    def warm(self, prefix: Any, expect: int = 0, ttl_s: float = 30.0, wait: bool = True) -> dict[str, int]:
        with self.lock:
            self.calls.append(("warm", 1))
            self.warmed.append(prefix if isinstance(prefix, str) else "".join(map(chr, prefix)))
            self.expected.append(expect)
            self.waited.append(wait)
        return {"prompt_tokens": len(prefix), "cached_tokens": 0}

    def flush_cache(self) -> bool:
        return True

    def shutdown(self) -> None:
        pass
