"""Runs a ``ScheduleBatch`` on the model: builds the ``ForwardBatch``, samples, computes logprobs."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

from .attention.cascade import MIN_BATCH, CascadePlanner
from .config import use_mixed_chunk
from .forward_batch import CascadeMeta, ForwardBatch, ForwardMode
from .host_copy import h2d, h2d_parts
from .mem.req_to_token import ReqToTokenTable, Writes
from .model_runner import ModelRunner
from .sampler import Sampler
from .scheduler.batch import FUTURE_TOKEN, EntryResult, ScheduleBatch


@dataclass
class Launched:
    """A batch queued on the device: its logits, and the sampled tokens once ``event`` has fired."""

    batch: ScheduleBatch
    logits: torch.Tensor
    sample_rows: list[tuple[int, int]]
    lp_rows: list[tuple[int, int, int]]
    tokens: torch.Tensor | None = None        # [S] on the device
    tokens_host: torch.Tensor | None = None   # pinned copy (CUDA) or tokens itself (CPU)
    raw: torch.Tensor | None = None           # log-softmax of the sampled rows (logprobs wanted)
    event: torch.cuda.Event | None = None
    token_index: dict[int, int] = field(default_factory=dict)   # id(req) -> row of tokens


class ModelExecutor:
    def __init__(self, runner: ModelRunner, sampler: Sampler, grammar_masks=None) -> None:
        self.runner = runner
        self.sampler = sampler
        self.grammar_masks = grammar_masks  # callable(reqs, vocab, device) -> bool mask [R, V] or None
        # Mixed batches (the scheduler asks): the config says so and the attention backend handles them.
        cfg = getattr(runner, "cfg", None)
        self.mixed_chunk = (cfg is not None and use_mixed_chunk(cfg, str(runner.device))
                            and getattr(runner.attn_backend, "supports_mixed", False))
        # NOTE: grows on demand (rows: requests in flight; width: the longest sequence seen).
        self.table = ReqToTokenTable(rows=256, width=min(runner.context_length, 4096) + 1,
                                     device=runner.device)
        chunk = getattr(runner, "cascade_chunk", 0)
        self.cascade = CascadePlanner(chunk) if chunk else None

    def run(self, sb: ScheduleBatch) -> list[EntryResult]:
        return self.collect(self.launch(sb))

    @torch.inference_mode()
    def launch(self, sb: ScheduleBatch, prev: Launched | None = None) -> Launched:
        """Queue ``sb``'s forward pass and sampling on the device without waiting for them.

        Decode entries whose input is ``FUTURE_TOKEN`` take the token ``prev`` (the batch launched just
        before, not collected yet) samples for the same request: step N+1 is queued while N still runs.
        """
        fb, sample_rows, lp_rows = self._build(sb, prev)
        logits = self.runner.forward(fb)
        h = Launched(sb, logits, sample_rows, lp_rows)
        if sample_rows:
            reqs = [sb.entries[i].req for i, _ in sample_rows]
            lg = logits if not lp_rows else logits[h2d([r for _, r in sample_rows], torch.long, logits.device)]
            if any(r.return_logprob for r in reqs):
                h.raw = torch.log_softmax(lg, dim=-1)
            masks = self.grammar_masks(reqs, lg.shape[1], lg.device) if self.grammar_masks else None
            h.tokens = self.sampler.sample(lg, reqs, masks)
            h.token_index = {id(r): k for k, r in enumerate(reqs)}
            if h.tokens.is_cuda:
                # NOTE: no sync here: the copy lands in pinned memory; collect() waits on the event.
                h.tokens_host = torch.empty(h.tokens.shape, dtype=h.tokens.dtype, pin_memory=True)
                h.tokens_host.copy_(h.tokens, non_blocking=True)
                h.event = torch.cuda.Event()
                h.event.record()
            else:
                h.tokens_host = h.tokens
        return h

    def collect(self, h: Launched) -> list[EntryResult]:
        """Wait for ``h`` and read its sampled tokens and logprobs back to the host."""
        if h.event is not None:
            h.event.synchronize()
        sb = h.batch
        results = [EntryResult() for _ in sb.entries]
        if h.lp_rows:
            self._input_logprobs(sb, h.logits, h.lp_rows, results)
        if h.sample_rows:
            toks = h.tokens_host.tolist()
            for k, ((i, _), tok) in enumerate(zip(h.sample_rows, toks)):
                res = results[i]
                res.next_token = tok
                req = sb.entries[i].req
                if h.raw is not None and req.return_logprob:
                    res.next_logprob = float(h.raw[k, tok])
                    if req.top_logprobs_num:
                        res.next_top = _top(h.raw[k], req.top_logprobs_num)
        return results

    def _build(self, sb: ScheduleBatch, prev: Launched | None = None):
        """The ForwardBatch of ``sb``: one host->device copy of every small index array, the request-to-token
        table updated on the device, ``kv_indices`` gathered there (see runtime/mem/req_to_token.py)."""
        entries = sb.entries
        writes = Writes()
        prefix_lens = [e.prefix_len for e in entries]
        table_rows = self.table.plan([e.req for e in entries], prefix_lens, [len(e.new_ids) for e in entries],
                                     writes)
        lay = _layout_decode(entries, table_rows, prefix_lens) if sb.decode else _layout(entries)
        ids, pos, loc, tok_rows, qo, kvp, prefix, seq, ext, sample_rows, lp_rows, rows = lay
        ahead = [i for i, e in enumerate(entries) if e.new_ids[0] == FUTURE_TOKEN]   # inputs prev samples
        future_pos = [qo[i] for i in ahead]
        future_src = [prev.token_index[id(entries[i].req)] for i in ahead]
        if not rows:
            rows = [0]
        plan = None
        if sb.decode and self.cascade is not None and len(entries) >= MIN_BATCH:
            plan = self.cascade.plan([e.req.last_node for e in entries], kvp[:-1])
        casc = [[], [], [], []]
        if plan is not None:
            casc = [plan.skip, plan.rows, plan.start, plan.length]
            sb.cascade_rows = len(entries) - plan.skip.count(0)
        # NOTE: one upload for everything (each separate small copy costs ~15 us of host time on a GPU).
        parts = [ids, pos, loc, rows, qo, kvp, prefix, seq, table_rows, tok_rows,
                 writes.rows, writes.lens, writes.shifts, writes.vals, writes.dst, writes.src, writes.n,
                 future_pos, future_src, *casc]
        flat, starts = h2d_parts(parts, self.runner.device)
        spans = [(s, s + len(p)) for s, p in zip(starts, parts)]
        # ids, positions, slots, logits rows are int64 (indexing and embedding inputs); the rest stays int32
        wide = flat[:spans[3][1]].long()
        ids_t, pos_t, loc_t, rows_t = (wide[a:b] for a, b in spans[:4])
        (qo_t, kvp_t, prefix_t, seq_t, trows_t, tok_rows_t, w_rows, w_lens, w_shifts, w_vals, w_dst, w_src, w_n,
         f_pos, f_src, c_skip, c_rows, c_start, c_len) = (flat[a:b] for a, b in spans[4:])
        if not sb.decode:
            # NOTE: an extend batch's per-token table rows and positions are expanded here on the device
            # from per-entry values: two fewer token-length lists to build and convert on the host (the
            # host work before a prefill's first kernel; ~1 ms of an 8 x 1,024 prefill).
            tok_rows_t, pos32 = self.table.cells(trows_t, qo_t[1:] - qo_t[:-1], prefix_t - qo_t[:-1], qo[-1])
            pos_t = pos32.long()
        if future_pos:
            ids_t[f_pos] = prev.tokens[f_src]
        if writes:
            self.table.write(w_rows, w_lens, w_shifts, w_vals, (w_dst, w_src, w_n, sum(writes.n)))
        self.table.put(tok_rows_t, pos_t, loc_t)
        kv_indices = self.table.gather(trows_t, seq_t, kvp_t, kvp[-1])
        fb = ForwardBatch(
            mode=ForwardMode.DECODE if sb.decode else ForwardMode.EXTEND,
            input_ids=ids_t, positions=pos_t, out_cache_loc=loc_t,
            qo_indptr=qo_t, kv_indptr=kvp_t, kv_indices=kv_indices,
            prefix_lens=prefix_t, seq_lens=seq_t,
            extend_lens_cpu=ext, prefix_lens_cpu=prefix, logits_rows=rows_t,
            cascade=None if plan is None else CascadeMeta(c_skip, c_rows.view(-1, plan.chunk), c_start, c_len))
        return fb, sample_rows, lp_rows

    @staticmethod
    def _input_logprobs(sb, logits, lp_rows, results) -> None:
        rows = torch.tensor([r for _, _, r in lp_rows], device=logits.device)
        lps = torch.log_softmax(logits[rows], dim=-1)
        targets = torch.tensor([sb.entries[i].lp_targets[rank] for i, rank, _ in _with_rank(lp_rows)],
                               device=logits.device)
        chosen = lps.gather(1, targets.unsqueeze(1)).squeeze(1).tolist()
        for k, (i, _, _) in enumerate(lp_rows):
            req = sb.entries[i].req
            results[i].input_logprobs.append(chosen[k])
            results[i].input_tops.append(_top(lps[k], req.top_logprobs_num) if req.top_logprobs_num else None)


def _layout(entries):
    """Host index lists of an extend batch: ids, positions and table rows per token (left empty: ``_build``
    expands them on the device), slots, qo/kv indptr, prefix/seq/extend lengths, sampled rows
    ``(entry, logits row)``, prompt-logprob rows ``(entry, local row, logits row)`` and the hidden-state rows
    whose logits are computed."""
    ids, loc = [], []
    qo, kvp, prefix, seq, ext = [0], [0], [], [], []
    sample_rows: list[tuple[int, int]] = []
    lp_rows: list[tuple[int, int, int]] = []
    rows: list[int] = []
    for i, e in enumerate(entries):
        n = len(e.new_ids)
        base = qo[-1]
        for r in e.lp_rows:
            lp_rows.append((i, r, len(rows)))
            rows.append(base + r)
        if e.sample:
            sample_rows.append((i, len(rows)))
            rows.append(base + n - 1)
        ids.extend(e.new_ids)
        loc.extend(e.new_slots)
        qo.append(base + n)
        kvp.append(kvp[-1] + e.prefix_len + n)
        prefix.append(e.prefix_len)
        seq.append(e.prefix_len + n)
        ext.append(n)
    return ids, [], loc, [], qo, kvp, prefix, seq, ext, sample_rows, lp_rows, rows


def _layout_decode(entries, table_rows, prefix):
    """``_layout`` of a decode batch (one new token per entry, every entry sampled, no prompt logprobs), built
    column by column from the entries' ``prefix`` lengths: the per-step host work of a large decode batch."""
    n = len(entries)
    seq = [p + 1 for p in prefix]
    rng = list(range(n))
    return ([e.new_ids[0] for e in entries], prefix, [e.new_slots[0] for e in entries], table_rows,
            list(range(n + 1)), [0, *itertools.accumulate(seq)], prefix, seq, [1] * n, list(zip(rng, rng)), [],
            rng)


def _with_rank(lp_rows):
    """Yield (entry, rank-within-entry, row) so targets line up with each entry's lp_targets."""
    seen: dict[int, int] = {}
    for i, _, r in lp_rows:
        k = seen.get(i, 0)
        seen[i] = k + 1
        yield i, k, r


def _top(logprobs: torch.Tensor, k: int) -> list[tuple[float, int]]:
    vals, idx = logprobs.topk(k)
    return list(zip(vals.tolist(), idx.tolist()))


