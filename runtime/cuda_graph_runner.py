"""CUDA-graph capture and replay of decode steps, one graph per batch size.

A decode step of a small batch is launch-bound: ~15 kernels per layer × 32 layers take longer to launch
than to run. The runner captures the model's decode forward (embedding → final norm) once per batch size
over static input buffers; a step copies its inputs into those buffers and replays the graph. A batch
of ``n`` rows runs in the smallest captured size ``bs >= n``; the ``bs - n`` padding rows read and
write only ``kv_pool.scratch_slot``. The LM head runs eagerly on the ``n`` real rows (one GEMM).
Graphs of ``MIN_BATCH`` rows or more include the shared-prefix (cascade) attention stage over static plan
buffers of ``chunk_capacity(bs)`` chunks; a replay copies the batch's plan in (or an empty one: no chunk).

Hook (``ModelRunner``)::

    self.cuda_graph = CudaGraphRunner(self) if on CUDA and not cfg.disable_cuda_graph else None
    ...
    if self.cuda_graph is not None and self.cuda_graph.can_run(batch):
        return self.cuda_graph.replay(batch)          # float32 logits, as forward() returns

Needs an attention backend with ``supports_cuda_graph = True``: Triton, whose decode metadata depends on the
batch size alone (every other size lives in device tensors), and FlashInfer, which plans on the host: its
``prepare_graph`` makes each size's wrapper before the capture and its ``prepare_replay`` plans the real
lengths before each replay (``runtime/attention/base.py``).
"""
from __future__ import annotations

import logging
import time

import torch

from .attention.cascade import MIN_BATCH, chunk_capacity
from .forward_batch import CascadeMeta, ForwardBatch, ForwardMode

logger = logging.getLogger(__name__)


def default_batch_sizes(max_bs: int) -> list[int]:
    """1, 2, 4, 8, then every 8 up to 64, every 16 up to 256, every 32 beyond."""
    sizes = [1, 2, 4] + list(range(8, 65, 8)) + list(range(80, 257, 16)) + list(range(288, 1025, 32))
    out = [s for s in sizes if s < max_bs] + [max_bs]
    return sorted(set(out))


class CudaGraphRunner:
    """Captured decode forwards for ``batch_sizes``; ``can_run(batch)`` / ``replay(batch)``."""

    def __init__(self, model_runner, batch_sizes: list[int] | None = None, max_bs: int = 256,
                 max_kv_tokens: int | None = None) -> None:
        self.mr = model_runner
        self.model = model_runner.model
        self.backend = model_runner.attn_backend
        self.pool = model_runner.kv_pool
        self.batch_sizes = sorted(batch_sizes or default_batch_sizes(max_bs))
        self.max_bs = self.batch_sizes[-1]
        dev = torch.device(model_runner.device)
        # NOTE: the KV index buffer bounds the sum of context lengths of one graphed batch (shared radix
        # prefixes can make it exceed the pool size); larger batches run eagerly.
        ctx = getattr(model_runner, "context_length", 8192) or 8192
        self.max_kv_tokens = max_kv_tokens or min(self.max_bs * ctx, 1 << 22)
        scratch = self.pool.scratch_slot
        self.input_ids = torch.zeros(self.max_bs, dtype=torch.long, device=dev)
        self.positions = torch.zeros(self.max_bs, dtype=torch.long, device=dev)
        self.out_cache_loc = torch.full((self.max_bs,), scratch, dtype=torch.long, device=dev)
        self.qo_indptr = torch.arange(self.max_bs + 1, dtype=torch.int32, device=dev)
        self.kv_indptr = torch.arange(self.max_bs + 1, dtype=torch.int32, device=dev)
        self.kv_indices = torch.full((self.max_kv_tokens,), scratch, dtype=torch.long, device=dev)
        self.seq_lens = torch.ones(self.max_bs, dtype=torch.int32, device=dev)
        self.prefix_lens = torch.zeros(self.max_bs, dtype=torch.int32, device=dev)
        self.pad_steps = torch.arange(1, self.max_bs + 1, dtype=torch.int32, device=dev)
        self.chunk = model_runner.cascade_chunk
        cap = chunk_capacity(self.max_bs)
        self.casc_skip = torch.zeros(self.max_bs, dtype=torch.int32, device=dev)
        self.casc_rows = torch.full((cap, max(1, self.chunk)), -1, dtype=torch.int32, device=dev)
        self.casc_start = torch.zeros(cap, dtype=torch.int32, device=dev)
        self.casc_len = torch.zeros(cap, dtype=torch.int32, device=dev)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.batches: dict[int, ForwardBatch] = {}
        self.mempool = None
        t0 = time.perf_counter()
        self._capture_all()
        self.capture_seconds = time.perf_counter() - t0
        logger.info("captured %d decode CUDA graphs (bs %s) in %.1fs", len(self.graphs), self.batch_sizes,
                    self.capture_seconds)

    # -- capture --------------------------------------------------------------------------------
    def _static_batch(self, bs: int) -> ForwardBatch:
        return ForwardBatch(
            mode=ForwardMode.DECODE, input_ids=self.input_ids[:bs], positions=self.positions[:bs],
            out_cache_loc=self.out_cache_loc[:bs], qo_indptr=self.qo_indptr[:bs + 1],
            kv_indptr=self.kv_indptr[:bs + 1], kv_indices=self.kv_indices,
            prefix_lens=self.prefix_lens[:bs], seq_lens=self.seq_lens[:bs],
            extend_lens_cpu=[1] * bs, prefix_lens_cpu=[0] * bs, logits_rows=None, cascade=self._cascade(bs))

    def _cascade(self, bs: int) -> CascadeMeta | None:
        if not self.chunk or bs < MIN_BATCH:
            return None
        cap = chunk_capacity(bs)
        return CascadeMeta(self.casc_skip[:bs], self.casc_rows[:cap], self.casc_start[:cap], self.casc_len[:cap])

    def _run_model(self, fb: ForwardBatch) -> torch.Tensor:
        self.backend.init_forward_metadata(fb)
        return self.model(fb)

    @torch.inference_mode()
    def _capture_all(self) -> None:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        # NOTE: largest first, so smaller graphs reuse the memory of the shared pool.
        for bs in reversed(self.batch_sizes):
            fb = self._static_batch(bs)
            self.backend.prepare_graph(fb, bs)
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm-up: Triton JIT, cuBLAS handles and workspaces
                    self._run_model(fb)
            stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.mempool, stream=stream):
                out = self._run_model(fb)
            if self.mempool is None:
                self.mempool = graph.pool()
            self.graphs[bs], self.outputs[bs], self.batches[bs] = graph, out, fb
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()

    # -- replay ---------------------------------------------------------------------------------
    def _pick(self, n: int) -> int | None:
        for bs in self.batch_sizes:
            if bs >= n:
                return bs
        return None

    def can_run(self, batch: ForwardBatch) -> bool:
        if batch.mode is not ForwardMode.DECODE:
            return False
        n = batch.num_tokens
        bs = self._pick(n)
        if bs is None or batch.kv_indices.numel() + (bs - n) > self.max_kv_tokens:
            return False
        # Decode rows are one token per request, so n logits rows are rows 0..n-1.
        return batch.logits_rows is None or batch.logits_rows.numel() == n

    @torch.inference_mode()
    def replay(self, batch: ForwardBatch) -> torch.Tensor:
        """Float32 logits ``[n, V]`` of a decode batch of ``n`` rows (``can_run`` must hold)."""
        n = batch.num_tokens
        bs = self._pick(n)
        nkv = batch.kv_indices.numel()
        # NOTE: device-to-device copies only; no host sync anywhere in a replay.
        self.input_ids[:n].copy_(batch.input_ids)
        self.positions[:n].copy_(batch.positions)
        self.out_cache_loc[:n].copy_(batch.out_cache_loc)
        self.kv_indptr[:n + 1].copy_(batch.kv_indptr)
        self.kv_indices[:nkv].copy_(batch.kv_indices)
        if bs > n:
            pad = bs - n
            scratch = self.pool.scratch_slot
            self.input_ids[n:bs].zero_()
            self.positions[n:bs].zero_()
            self.out_cache_loc[n:bs].fill_(scratch)
            # Each padding row attends to one KV entry: the scratch slot.
            torch.add(self.pad_steps[:pad], batch.kv_indptr[-1:], out=self.kv_indptr[n + 1:bs + 1])
            self.kv_indices[nkv:nkv + pad].fill_(scratch)
        if self.batches[bs].cascade is not None:
            self._copy_cascade(batch.cascade, n, bs)
        self.backend.prepare_replay(batch, self.batches[bs], bs)
        self.graphs[bs].replay()
        return self.model.compute_logits(self.outputs[bs][:n])

    def _copy_cascade(self, plan: CascadeMeta | None, n: int, bs: int) -> None:
        """The batch's cascade plan into the static buffers; no plan, padding rows and unused chunks: empty."""
        cap = chunk_capacity(bs)
        c = 0
        if plan is not None:
            c = plan.chunk_len.numel()
            self.casc_skip[:n].copy_(plan.skip)
            self.casc_rows[:c].copy_(plan.chunk_rows)
            self.casc_start[:c].copy_(plan.chunk_start)
            self.casc_len[:c].copy_(plan.chunk_len)
        else:
            self.casc_skip[:n].zero_()
        self.casc_skip[n:bs].zero_()
        self.casc_len[c:cap].zero_()
