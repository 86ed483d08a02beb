"""Llama-family decoder (Llama 1/2/3, Mistral, Qwen2 differ only in config flags)."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..attention.base import AttentionBackend, AttentionLayer
from ..forward_batch import ForwardBatch
from ..layers.basic import RMSNorm, RotaryEmbedding, silu_and_mul
from ..layers.linear import MergedLinear

# checkpoint projection name -> (fused module, shard name)
_STACKED = {"q_proj": ("qkv_proj", "q"), "k_proj": ("qkv_proj", "k"), "v_proj": ("qkv_proj", "v"),
            "gate_proj": ("gate_up_proj", "gate"), "up_proj": ("gate_up_proj", "up")}


def rope_config(cfg) -> tuple[float, dict | None]:
    """(rope_theta, scaling) from an HF config: transformers 5 ``rope_parameters`` or the older fields."""
    params = getattr(cfg, "rope_parameters", None) or {}
    theta = params.get("rope_theta", getattr(cfg, "rope_theta", None) or 10000.0)
    scaling = params if params.get("rope_type", "default") != "default" else getattr(cfg, "rope_scaling", None)
    return float(theta), scaling


class Attention(nn.Module):
    def __init__(self, cfg, layer_id: int, backend: AttentionBackend, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = getattr(cfg, "num_key_value_heads", None) or self.num_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.num_heads
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.qkv_proj = MergedLinear(cfg.hidden_size, {"q": q, "k": kv, "v": kv}, bias=qkv_bias)
        self.o_proj = nn.Linear(q, cfg.hidden_size, bias=False)
        theta, scaling = rope_config(cfg)
        self.rotary = RotaryEmbedding(self.head_dim, cfg.max_position_embeddings, theta, scaling)
        self.layer = AttentionLayer(layer_id, self.num_heads, self.num_kv_heads, self.head_dim,
                                    self.head_dim ** -0.5)
        self.backend = backend
        self.sizes = (q, kv, kv)

    def forward(self, positions: torch.Tensor, h: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        q, k, v = self.qkv_proj(h).split(self.sizes, dim=-1)
        q = q.view(-1, self.num_heads, self.head_dim)
        k = k.view(-1, self.num_kv_heads, self.head_dim)
        q, k = self.rotary(positions, q, k)
        o = self.backend.forward(q, k, v.view(-1, self.num_kv_heads, self.head_dim), self.layer, batch)
        return self.o_proj(o.reshape(-1, self.num_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, cfg) -> None:
        super().__init__()
        i = cfg.intermediate_size
        self.gate_up_proj = MergedLinear(cfg.hidden_size, {"gate": i, "up": i})
        self.down_proj = nn.Linear(i, cfg.hidden_size, bias=False)
        self.act = silu_and_mul   # the fused Triton kernel on CUDA (layers/triton_fused.enable_fused_ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_up_proj(x)))


class DecoderLayer(nn.Module):
    def __init__(self, cfg, layer_id: int, backend: AttentionBackend, qkv_bias: bool) -> None:
        super().__init__()
        self.self_attn = Attention(cfg, layer_id, backend, qkv_bias)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, positions, h, residual, batch):
        if residual is None:
            residual = h
            h = self.input_layernorm(h)
        else:
            h, residual = self.input_layernorm(h, residual)
        h = self.self_attn(positions, h, batch)
        h, residual = self.post_attention_layernorm(h, residual)
        return self.mlp(h), residual


class LlamaForCausalLM(nn.Module):
    """``forward(batch)`` → hidden states of ``batch.logits_rows``; ``compute_logits`` → float32 logits."""

    qkv_bias = False

    def __init__(self, cfg, backend: AttentionBackend) -> None:
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i, backend, self.qkv_bias)
                                    for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.tie_word_embeddings = bool(getattr(cfg, "tie_word_embeddings", False))
        if not self.tie_word_embeddings:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.lm_linear = nn.functional.linear   # the GEMV-dispatching linear on CUDA (enable_fused_ops)

    @torch.no_grad()
    def forward(self, batch: ForwardBatch) -> torch.Tensor:
        h = self.embed_tokens(batch.input_ids)
        residual = None
        for layer in self.layers:
            h, residual = layer(batch.positions, h, residual, batch)
        h, _ = self.norm(h, residual)
        return h if batch.logits_rows is None else h[batch.logits_rows]

    def compute_logits(self, h: torch.Tensor) -> torch.Tensor:
        w = self.embed_tokens.weight if self.tie_word_embeddings else self.lm_head.weight
        return self.lm_linear(h, w).float()

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load HF-named tensors; fused projections load per shard. Raises on missing/unexpected names."""
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        for name, tensor in weights:
            name = name.removeprefix("model.")
            if "rotary_emb.inv_freq" in name or (name == "lm_head.weight" and self.tie_word_embeddings):
                continue
            for proj, (fused, shard) in _STACKED.items():
                if f".{proj}." in name:
                    target = name.replace(proj, fused)
                    mod = self.get_submodule(target.rsplit(".", 1)[0])
                    mod.load_shard(shard, tensor, is_bias=name.endswith("bias"))
                    loaded.add(f"{target}#{shard}")
                    break
            else:
                if name not in params:
                    raise ValueError(f"unexpected weight {name!r} in checkpoint")
                with torch.no_grad():
                    params[name].copy_(tensor)
                loaded.add(name)
        expected = {n for n in params if "qkv_proj" not in n and "gate_up_proj" not in n}
        missing = expected - loaded
        if missing:
            raise ValueError(f"checkpoint is missing weights: {sorted(missing)[:8]}")


class Qwen2ForCausalLM(LlamaForCausalLM):
    qkv_bias = True


class MistralForCausalLM(LlamaForCausalLM):
    """Mistral = Llama layout. NOTE: sliding-window attention is not applied (exact up to the window)."""
