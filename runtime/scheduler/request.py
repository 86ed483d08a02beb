"""A request's life in the scheduler: tokens, KV slots, radix lock, outputs and logprobs."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ..sampling_params import SamplingParams


class FinishReason(enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"


@dataclass(eq=False)  # NOTE: identity equality: `req in running` must not compare token lists (O(n^2 L))
class Req:
    rid: str
    input_ids: list[int]
    sampling_params: SamplingParams
    return_logprob: bool = False
    logprob_start_len: int = -1     # -1: output logprobs only
    top_logprobs_num: int = 0
    stream: bool = False
    index: int = 0                  # which of n samples
    arrival: int = 0
    matcher: Any = None             # grammar matcher (constrained decoding), or None
    # --- state ---
    output_ids: list[int] = field(default_factory=list)
    kv_slots: list[int] = field(default_factory=list)   # KV slots of fill_ids[:len(kv_slots)]
    cached_len: int = 0             # leading kv_slots owned by the radix tree (locked via last_node)
    last_node: Any = None
    cached_tokens: int = 0          # prompt tokens served from the cache (reported in meta_info)
    pinned: bool = False            # a warm whose pin exists (made when its prompt's last pass was scheduled)
    forward_passes: int = 0
    finish: FinishReason | None = None
    matched_stop: Any = None
    error: str | None = None
    input_token_logprobs: list = field(default_factory=list)
    input_top_logprobs: list = field(default_factory=list)
    output_token_logprobs: list = field(default_factory=list)
    output_top_logprobs: list = field(default_factory=list)
    # streaming / detokenization
    text: str = ""
    sent_ids: int = 0
    sent_text: int = 0
    forced_tokens: int = 0          # tokens appended by jump-forward
    # the executor's device copy of kv_slots (runtime/mem/req_to_token.py): row, mirrored list, valid length
    table_row: int = -1
    table_ref: list[int] | None = field(default=None, repr=False)
    table_len: int = 0

    @property
    def fill_ids(self) -> list[int]:
        return self.input_ids + self.output_ids

    @property
    def last_token(self) -> int:
        """``fill_ids[-1]`` without copying the token lists (the decode batch's input)."""
        return self.output_ids[-1] if self.output_ids else self.input_ids[-1]

    @property
    def seq_len(self) -> int:
        return len(self.input_ids) + len(self.output_ids)

    @property
    def finished(self) -> bool:
        return self.finish is not None

    @property
    def needs_input_logprobs(self) -> bool:
        return self.return_logprob and self.logprob_start_len >= 0

    def prefix_cap(self) -> int:
        """Longest cached prefix this request may reuse: one token must be computed for its logits,
        and prompt logprobs from ``logprob_start_len`` need the logits of the position before it."""
        cap = self.seq_len - 1
        if self.needs_input_logprobs and not self.output_ids:
            cap = min(cap, max(self.logprob_start_len - 1, 0))
        return max(cap, 0)

    def finish_reason_dict(self) -> dict | None:
        if self.finish is FinishReason.LENGTH:
            return {"type": "length", "length": len(self.output_ids)}
        if self.finish is FinishReason.STOP:
            return {"type": "stop", "matched": self.matched_stop}
        if self.finish is FinishReason.ABORT:
            return {"type": "abort", "message": self.error or "aborted"}
        return None
