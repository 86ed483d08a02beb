"""Loads the model, sizes and owns the KV pool and the attention backend, runs forward passes."""
from __future__ import annotations

import itertools
import logging
import time

import torch

from .attention import create_attention_backend, resolve_backend_name
from .config import RuntimeConfig, cuda_graph_max_bs, resolve_device, resolve_dtype, scheduler_defaults
from .errors import EngineError
from .forward_batch import ForwardBatch, ForwardMode
from .mem.kv_pool import FP8_DTYPES, KVPool
from .model_files import default_model_path
from .model_loader import load_model_source
from .models import get_model_class

logger = logging.getLogger(__name__)

CPU_DEFAULT_MAX_TOTAL_TOKENS = 65536


class ModelRunner:
    def __init__(self, cfg: RuntimeConfig) -> None:
        t0 = time.perf_counter()
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        self.model_path = cfg.model_path or default_model_path()
        torch.manual_seed(cfg.random_seed)
        hf_config, weights = load_model_source(self.model_path, cfg.load_format)
        self.hf_config = hf_config
        self.context_length = cfg.context_length or hf_config.max_position_embeddings
        self.num_kv_heads = getattr(hf_config, "num_key_value_heads", None) or hf_config.num_attention_heads
        self.head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
        self.vocab_size = hf_config.vocab_size
        self.kv_dtype = self._kv_dtype(cfg)
        pool_size = self._pool_size(weights_bytes=self._weights_bytes(hf_config))
        self.kv_pool = KVPool(pool_size, hf_config.num_hidden_layers, self.num_kv_heads, self.head_dim,
                              self.kv_dtype, self.device)
        self.backend_name = resolve_backend_name(cfg.attention_backend, self.device)
        if self.kv_dtype != self.dtype and self.backend_name == "flashinfer":
            raise EngineError("kv_cache_dtype='fp8_e4m3' needs the Triton or torch attention backend, not FlashInfer")
        self.attn_backend = create_attention_backend(self.backend_name, self.kv_pool,
                                                     num_heads=hf_config.num_attention_heads)
        # Members per shared-prefix chunk of a decode batch (runtime/attention/cascade.py); 0: no cascade.
        self.cascade_chunk = 0
        if getattr(self.attn_backend, "supports_cascade", False) and not cfg.disable_cascade_attention:
            from .attention.cascade import chunk_members

            self.cascade_chunk = chunk_members(hf_config.num_attention_heads // self.num_kv_heads)
        model_cls = get_model_class(hf_config)
        # NOTE: build the parameters in the target dtype: an fp32 Llama-3-8B would need 32 GB on the GPU
        # next to a KV pool already sized for a 16 GB bf16 model.
        prev_dtype = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype if self.dtype.is_floating_point else prev_dtype)
        try:
            with torch.device(self.device):
                model = model_cls(hf_config, self.attn_backend)
        finally:
            torch.set_default_dtype(prev_dtype)
        model = model.to(self.dtype)
        if weights is None:
            _dummy_init(model)
        else:
            model.load_weights(weights)
        self.model = model.eval()
        self.cuda_graph = None
        if self.device.startswith("cuda"):
            self._setup_gpu(cfg)
        self.load_seconds = time.perf_counter() - t0
        logger.info("loaded %s (%s, %s on %s) in %.1fs; KV pool %d tokens", self.model_path,
                    model_cls.__name__, self.dtype, self.device, self.load_seconds, pool_size)

    def _kv_dtype(self, cfg: RuntimeConfig) -> torch.dtype:
        """The KV pool's element type: the model's, or fp8 (e4m3, scale 1: values saturate at +-448)."""
        if cfg.kv_cache_dtype == "auto":
            return self.dtype
        cap = torch.cuda.get_device_capability(torch.device(self.device)) if self.device.startswith("cuda") else None
        if cap is not None and cap < (8, 9):
            raise EngineError("kv_cache_dtype='fp8_e4m3' needs a GPU with fp8 conversions (compute capability "
                              f"8.9+: Ada, Hopper); this one has {cap[0]}.{cap[1]}")
        return FP8_DTYPES[cfg.kv_cache_dtype]

    def _weights_bytes(self, c) -> int:
        h, i, L, v = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size
        q = c.num_attention_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        per_layer = h * (q + 2 * kv) + q * h + 3 * h * i
        n = L * per_layer + v * h * (1 if getattr(c, "tie_word_embeddings", False) else 2)
        return n * torch.empty((), dtype=self.dtype).element_size()

    def _pool_size(self, weights_bytes: int) -> int:
        per_token = KVPool.bytes_per_token(self.hf_config.num_hidden_layers, self.num_kv_heads,
                                           self.head_dim, self.kv_dtype)
        if self.cfg.max_total_tokens:
            return self.cfg.max_total_tokens
        if not self.device.startswith("cuda"):
            return CPU_DEFAULT_MAX_TOTAL_TOKENS
        free, total = torch.cuda.mem_get_info(torch.device(self.device))
        budget = total * self.cfg.mem_fraction_static - (total - free) - weights_bytes
        size = int(budget // per_token)
        if size < 1024:
            raise EngineError(f"not enough GPU memory for the KV cache ({budget / 2**30:.1f} GiB left after "
                              "weights); raise mem_fraction_static or use a smaller model")
        return size

    def _setup_gpu(self, cfg: RuntimeConfig) -> None:
        """Fused Triton norm/rotary kernels, and CUDA graphs for decode (see runtime/cuda_graph_runner.py)."""
        from .layers.triton_fused import enable_fused_ops

        enable_fused_ops(self.model)
        sd = scheduler_defaults(cfg, self.device, self.kv_pool.size)
        if not cfg.disable_warmup:
            t0 = time.perf_counter()
            self.warmup(sd["max_prefill_tokens"], sd["chunked_prefill_size"])
            logger.info("warm-up passes (%d prefill tokens) in %.1fs", sd["max_prefill_tokens"],
                        time.perf_counter() - t0)
        if self._decode_graphs():
            from .cuda_graph_runner import CudaGraphRunner

            self.cuda_graph = CudaGraphRunner(self, max_bs=cuda_graph_max_bs(cfg, sd["max_running_requests"]))

    @torch.inference_mode()
    def warmup(self, num_tokens: int, chunk: int) -> None:
        """Forward passes of the largest prefill (``num_tokens`` in requests of ``chunk``) and of a mixed,
        prefix-heavy one, writing only the pool's scratch slot: a server's first real pass then finds its
        kernels compiled (Triton JIT, one config per batch shape), cuBLAS's heuristics cached and the
        allocator's activation blocks reserved, instead of paying for them inside a request."""
        chunk = max(1, min(chunk, self.context_length, num_tokens))
        plain = [(0, chunk)] * (num_tokens // chunk) + ([(0, num_tokens % chunk)] if num_tokens % chunk else [])
        # prefix-heavy extends (cached prefix >> new tokens) followed by two decode rows: a mixed pass; and a
        # batch of many of them (few-shot-like: the Triton backend picks its larger tile for it)
        ctx = min(1024, self.context_length - 64)
        mixed = [(ctx, 64)] * 4 + [(ctx, 1)] * 2 if ctx > 0 else []
        many = [(min(256, ctx), 64)] * 32 if ctx > 0 else []
        for reqs in (plain, mixed, many):
            if reqs:
                self.forward(self._scratch_batch(reqs))
        if ctx > 0 and not self._decode_graphs():
            # NOTE: eager decode (graphs off, or a backend without them): its kernels load or JIT-compile here,
            # not in the first request (graph capture runs the decode kernels otherwise)
            self.forward(self._scratch_batch([(ctx, 1)] * 8, ForwardMode.DECODE))
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)

    def _decode_graphs(self) -> bool:
        """Whether decode is captured in CUDA graphs (on CUDA, when the backend supports it and they are on)."""
        return not self.cfg.disable_cuda_graph and getattr(self.attn_backend, "supports_cuda_graph", False)

    def _scratch_batch(self, reqs: list[tuple[int, int]], mode: ForwardMode = ForwardMode.EXTEND) -> ForwardBatch:
        """A batch of ``(prefix_len, extend_len)`` requests whose every KV slot is the scratch slot (a decode
        batch: every ``extend_len`` is 1)."""
        dev = self.device
        ext = [e for _, e in reqs]
        pre = [p for p, _ in reqs]
        t = sum(ext)
        cum = lambda xs: torch.tensor([0] + list(itertools.accumulate(xs)), dtype=torch.int32, device=dev)
        qo = cum(ext)
        scratch = self.kv_pool.scratch_slot
        return ForwardBatch(
            mode=mode, input_ids=torch.zeros(t, dtype=torch.long, device=dev),
            positions=torch.cat([torch.arange(p, p + e, device=dev) for p, e in reqs]),
            out_cache_loc=torch.full((t,), scratch, dtype=torch.long, device=dev), qo_indptr=qo,
            kv_indptr=cum([p + e for p, e in reqs]),
            kv_indices=torch.full((sum(pre) + t,), scratch, dtype=torch.long, device=dev),
            prefix_lens=torch.tensor(pre, dtype=torch.int32, device=dev),
            seq_lens=torch.tensor([p + e for p, e in reqs], dtype=torch.int32, device=dev),
            extend_lens_cpu=ext, prefix_lens_cpu=pre, logits_rows=(qo[1:] - 1).long())

    def forward(self, batch: ForwardBatch) -> torch.Tensor:
        """Float32 logits of ``batch.logits_rows`` (all rows when it is None)."""
        if self.cuda_graph is not None and self.cuda_graph.can_run(batch):
            return self.cuda_graph.replay(batch)
        self.attn_backend.init_forward_metadata(batch)
        with torch.inference_mode():
            return self.model.compute_logits(self.model(batch))


@torch.no_grad()
def _dummy_init(model: torch.nn.Module) -> None:
    """Random weights of the right shapes (benchmarks: decoding speed doesn't depend on values)."""
    for name, p in model.named_parameters():
        if "norm" in name:
            p.fill_(1.0)
        else:
            p.uniform_(-0.02, 0.02)
