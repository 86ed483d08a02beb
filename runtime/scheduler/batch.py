"""What the scheduler hands the model executor, and what comes back (pure Python)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .request import Req

FUTURE_TOKEN = -1   # a decode input the previous, still running, batch samples (overlap scheduling)


@dataclass
class BatchEntry:
    req: Req
    new_ids: list[int]            # tokens computed in this pass
    prefix_len: int               # tokens already in the KV before this pass
    new_slots: list[int]          # KV slots receiving new_ids
    sample: bool                  # sample the next token from the last row
    # its tokens went into the radix tree when it was scheduled (Scheduler._share_now): the tree owns new_slots
    shared: bool = False
    applied: bool = False         # its results reached the request (Scheduler._apply): the request owns new_slots
    # prompt logprobs wanted from this pass: local rows and the token each row predicts
    lp_rows: list[int] = field(default_factory=list)
    lp_targets: list[int] = field(default_factory=list)


@dataclass
class ScheduleBatch:
    decode: bool
    entries: list[BatchEntry]
    cascade_rows: int = 0         # decode rows that read a shared prefix once per chunk (set by the executor)
    mixed: int = 0                # prefill batch: its last ``mixed`` entries are running requests' decode rows
    # prefill batch: the keys of the uncached prefixes it computes (Scheduler._uncached_key); a batch built while
    # this one is in flight lets those prefixes come from the cache instead of computing them again
    computing: frozenset = frozenset()
    # prefill batch: (prompt, arrival) of the warm requests it computes (``Engine.warm``: no output, pinned);
    # a later request extending one waits for the cache hit, however short the uncached part (see Scheduler)
    warming: tuple = ()

    @property
    def joining(self) -> int:
        """Prefill entries whose requests join the running ones when this batch is applied (they sample a first
        token and do not finish with it)."""
        if self.decode:
            return 0
        return sum(1 for e in self.entries[:len(self.entries) - self.mixed]
                   if e.sample and e.req.sampling_params.max_new_tokens > len(e.req.output_ids) + 1)

    @property
    def decode_tokens(self) -> int:
        return len(self.entries) if self.decode else self.mixed

    @property
    def num_tokens(self) -> int:
        return sum(len(e.new_ids) for e in self.entries)


@dataclass
class EntryResult:
    next_token: int | None = None
    next_logprob: float | None = None
    next_top: list | None = None
    input_logprobs: list[float] = field(default_factory=list)
    input_tops: list[list] = field(default_factory=list)
