"""Helpers shared by the GPU tests (imported as a plain module: tests/ has no packages)."""
from __future__ import annotations

import os

import torch

INTERPRET = os.environ.get("SGLC_TRITON_INTERPRET", "") == "1" and os.environ.get("TRITON_INTERPRET") == "1"


def has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


def kv_dtype(device: str) -> torch.dtype:
    # NOTE: the interpreter runs numpy, which has no bfloat16: use fp32 there.
    return torch.bfloat16 if device == "cuda" else torch.float32


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    assert torch.isfinite(a).all(), "output has NaN/inf (an unwritten or poisoned element)"
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def ref_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, prefix: int, scale: float) -> torch.Tensor:
    """fp32 reference for one request: ``q [n, H, D]`` new tokens at positions ``prefix..prefix+n-1``,
    ``k``/``v`` ``[prefix+n, Hkv, D]``; causal."""
    n, h, _ = q.shape
    g = h // k.shape[1]
    kf = k.float().repeat_interleave(g, dim=1)
    vf = v.float().repeat_interleave(g, dim=1)
    s = torch.einsum("nhd,mhd->hnm", q.float(), kf) * scale
    m = k.shape[0]
    mask = torch.arange(m, device=q.device)[None, :] > (torch.arange(n, device=q.device)[:, None] + prefix)
    s = s.masked_fill(mask[None], float("-inf"))
    return torch.einsum("hnm,mhd->nhd", s.softmax(-1), vf)


TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 512,
    "intermediate_size": 768, "num_hidden_layers": 3, "num_attention_heads": 8, "num_key_value_heads": 2,
    "vocab_size": 512, "max_position_embeddings": 1024, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "tie_word_embeddings": False, "torch_dtype": "float32",
}


def write_tiny_config(path, **overrides) -> str:
    import json

    cfg = dict(TINY_LLAMA, **overrides)
    (path / "config.json").write_text(json.dumps(cfg))
    return str(path)


def make_runner(model_dir: str, device: str, backend: str, dtype: str = "float32", tokens: int = 8192, **kw):
    from runtime.config import RuntimeConfig
    from runtime.model_runner import ModelRunner

    cfg = RuntimeConfig(model_path=model_dir, load_format="dummy", device=device, dtype=dtype,
                        attention_backend=backend, max_total_tokens=tokens, disable_cuda_graph=True,
                        skip_tokenizer_init=True, **kw)
    return ModelRunner(cfg)


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """Peaky random weights (so greedy argmax margins are large), identical on any device."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if "norm" in name:
            w = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
        else:
            w = torch.randn(p.shape, generator=g) * (1.5 / p.shape[-1] ** 0.5)
        p.copy_(w.to(p.dtype))


def write_tiny_model(path, seed: int = 0, **overrides) -> str:
    """The tiny Llama of :data:`TINY_LLAMA` with :func:`randomize_`'s peaky weights, saved as safetensors (load it
    with the default ``load_format``). Dummy weights (uniform +-0.02) give nearly flat logits, against which a
    greedy check within a tolerance can hardly fail."""
    import transformers

    cfg = {k: v for k, v in dict(TINY_LLAMA, **overrides).items() if k not in ("architectures", "model_type")}
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg))
    randomize_(model, seed)
    model.save_pretrained(path, safe_serialization=True)
    return str(path)


class MiniDriver:
    """Builds ForwardBatches for a handful of requests straight on a ModelRunner (no scheduler)."""

    def __init__(self, runner) -> None:
        self.r = runner
        self.dev = runner.device
        self.slots: list[list[int]] = []

    def new_request(self, share_from: int | None = None, shared: int = 0) -> int:
        """A new request; it starts with ``shared`` cached slots of request ``share_from`` (a radix hit)."""
        self.slots.append(list(self.slots[share_from][:shared]) if share_from is not None else [])
        return len(self.slots) - 1

    def batch(self, items: list[tuple[int, list[int]]], decode: bool = False):
        """One forward batch: for each ``(request, new tokens)`` allocate slots; all rows' logits."""
        from runtime.forward_batch import ForwardBatch, ForwardMode

        ids, pos, loc, kvi, qo, kvp, pre, ext = [], [], [], [], [0], [0], [], []
        for r, toks in items:
            have = self.slots[r]
            new = self.r.kv_pool.allocator.alloc(len(toks))
            ids += toks
            pos += list(range(len(have), len(have) + len(toks)))
            loc += new
            pre.append(len(have))
            have += new
            kvi += have
            qo.append(qo[-1] + len(toks))
            kvp.append(len(kvi))
            ext.append(len(toks))
        t = lambda x, dt=torch.long: torch.tensor(x, dtype=dt, device=self.dev)
        return ForwardBatch(mode=ForwardMode.DECODE if decode else ForwardMode.EXTEND, input_ids=t(ids),
                            positions=t(pos), out_cache_loc=t(loc), qo_indptr=t(qo, torch.int32),
                            kv_indptr=t(kvp, torch.int32), kv_indices=t(kvi),
                            prefix_lens=t(pre, torch.int32),
                            seq_lens=t([p + e for p, e in zip(pre, ext)], torch.int32),
                            extend_lens_cpu=ext, prefix_lens_cpu=pre, logits_rows=t([q - 1 for q in qo[1:]]))


def assert_greedy(ref, prompts, outs, params=None, tol: float = 1e-3) -> None:
    """Every token of ``outs`` (one per prompt) is the greedy choice of ``ref`` (an Engine) given the tokens
    before it, up to ``tol`` in log-probability (ties; bf16 engines need more); requests with penalties
    (their logits are not the model's argmax) are skipped."""
    for i, (prompt, out) in enumerate(zip(prompts, outs)):
        if params is not None and "frequency_penalty" in params[i]:
            continue
        full = prompt + out["output_ids"]
        r = ref.generate(input_ids=full, sampling_params={"max_new_tokens": 1, "temperature": 0},
                         return_logprob=True, logprob_start_len=len(prompt), top_logprobs_num=1)
        m = r["meta_info"]
        for (lp, tok), top in zip(m["input_token_logprobs"], m["input_top_logprobs"]):
            assert lp >= top[0][0] - tol, (i, tok, lp, top)
