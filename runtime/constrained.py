"""Constrained decoding in the worker: compiles constraints off the critical path, builds the batch's
token masks, and jump-forwards over forced text (``grammar/`` does the automata)."""
from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from .scheduler.request import FinishReason, Req

logger = logging.getLogger(__name__)


class GrammarManager:
    def __init__(self, tokenizer, vocab_size: int, cfg) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.jump_forward_enabled = not getattr(cfg, "disable_jump_forward", False)
        self._info = None
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[tuple[Req, Future]] = []

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def submit(self, req: Req, add: Callable[[Req], None]) -> None:
        """Schedule ``req`` now, or once its constraint is compiled (the batch never waits for a compile)."""
        c = req.sampling_params.constraint
        if c is None:
            add(req)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="sglc-grammar")
        self._pending.append((req, self._pool.submit(self._compile, *c)))

    def _compile(self, kind: str, source: str):
        import grammar

        if self.tokenizer is None:
            raise grammar.GrammarError("constrained decoding needs a tokenizer (skip_tokenizer_init=False)")
        if self._info is None:
            self._info = grammar.TokenizerInfo.from_hf(self.tokenizer)
        # NOTE: regular constraints skip precompute: a state's row is packed on first visit (≤ ~60 µs).
        # Context-free ones (recursive ebnf / $ref) precompute their per-position masks here, in the
        # compile thread (+80-85 ms, once per constraint): a first visit then costs ~0.2-4 ms at p99
        # instead of ~2-7 ms (bench/bench_grammar_cfg.py, docs/grammar.md "Context-free constraints")
        fsm = grammar.compile_constraint(kind, source, self._info, precompute=False)
        if not isinstance(fsm, grammar.TokenFSM):
            fsm.precompute()
        return fsm

    def poll(self, add: Callable[[Req], None]) -> list[Req]:
        """Schedule requests whose constraint compiled; return those whose constraint failed (finished)."""
        still, failed = [], []
        for req, fut in self._pending:
            if not fut.done():
                still.append((req, fut))
                continue
            err = fut.exception()
            if err is not None:
                req.finish, req.error = FinishReason.ABORT, f"invalid constraint: {err}"
                failed.append(req)
            else:
                req.matcher = fut.result().matcher()
                if self.jump_forward_enabled:
                    self.force_prefix(req)
                add(req)
        self._pending = still
        return failed

    def abort(self, rid: str | None) -> list[Req]:
        hit = [it for it in self._pending if rid is None or it[0].rid == rid or it[0].rid.startswith(rid + "#")]
        # NOTE: a compile already running finishes in its thread; its result is dropped
        for it in hit:
            it[0].finish, it[0].error = FinishReason.ABORT, "aborted by the client"
            self._pending.remove(it)
        return [it[0] for it in hit]

    def masks(self, reqs: list[Req], vocab: int, device):
        """Bool ``[R, vocab]`` allowed-token mask for the rows of constrained requests (None if none)."""
        if not any(r.matcher is not None for r in reqs):
            return None
        import numpy as np
        import torch

        words = (vocab + 31) // 32
        bits = np.full((len(reqs), words), -1, dtype=np.int32)
        for i, r in enumerate(reqs):
            if r.matcher is not None:
                bits[i] = 0
                r.matcher.fill_bitmask(bits[i])
        t = torch.from_numpy(bits).to(device)
        shifts = torch.arange(32, device=device, dtype=torch.int32)
        allowed = ((t.unsqueeze(-1) >> shifts) & 1).bool().view(len(reqs), words * 32)
        return allowed[:, :vocab]

    def force_prefix(self, req: Req) -> None:
        """Text the constraint forces before any sampled token (e.g. ``{"name": "``) becomes the first
        output tokens, prefilled with the prompt: no forward pass of its own."""
        m = req.matcher
        forced = m.forced_string()
        # NOTE: prompt logprobs are planned only for requests without output tokens: keep those as they are
        if not forced or self.tokenizer is None or req.output_ids or req.needs_input_logprobs:
            return
        ids = self.tokenizer.encode(forced, add_special_tokens=False)[:req.sampling_params.max_new_tokens]
        for i, t in enumerate(ids):
            if not m.accept_token(t):     # cannot happen for the same text; keep the plain path if it does
                m.rollback(i)
                return
        req.output_ids.extend(ids)
        req.forced_tokens += len(ids)

    def jump_forward(self, req: Req) -> None:
        """Append the text the constraint forces, re-tokenized together with the last sampled token so the
        KV holds the tokens the model itself would produce; the scheduler extends them in one pass."""
        m = req.matcher
        forced = m.forced_string()
        if not forced or self.tokenizer is None:
            return
        last = req.output_ids[-1]
        budget = req.sampling_params.max_new_tokens - len(req.output_ids) + 1
        text = self.tokenizer.decode([last]) + forced
        new_ids = self.tokenizer.encode(text, add_special_tokens=False)[:budget]
        m.rollback(1)
        accepted = 0
        for t in new_ids:
            if not m.accept_token(t):
                break
            accepted += 1
        if accepted == 0 or accepted < len(new_ids) and accepted <= 1:
            m.rollback(accepted)          # re-tokenization disagrees: keep the sampled token only
            m.accept_token(last)
            return
        req.output_ids[-1:] = new_ids[:accepted]
        req.forced_tokens += accepted - 1
        if m.is_terminated() or len(req.output_ids) >= req.sampling_params.max_new_tokens:
            req.finish = FinishReason.STOP if m.is_terminated() else FinishReason.LENGTH
