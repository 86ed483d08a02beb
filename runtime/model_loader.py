"""Model loading: a local HF directory, a GGUF file (dequantized, cached), or dummy random weights.

``load_model_source(path, load_format)`` → ``(hf_config, weights)`` where ``weights`` yields
``(hf_name, tensor)`` pairs; each model's ``load_weights`` consumes them.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from .errors import EngineError
from .model_files import cache_dir, file_digest

logger = logging.getLogger(__name__)

_GGUF_NAMES = {  # GGUF tensor name (after blk.N.) -> HF name (after model.layers.N.)
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}


_GGUF_BIG_FIELDS = {"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.merges",
                    "tokenizer.ggml.token_type"}


def load_hf_config(path: str):
    from transformers import AutoConfig

    if not (Path(path) / "config.json").exists():
        raise EngineError(f"{path!r} has no config.json: pass a Hugging Face model directory or a .gguf file")
    return AutoConfig.from_pretrained(path)


def load_model_source(path: str, load_format: str = "auto"):
    """Resolve ``path`` to an HF config and an iterator of HF-named weights."""
    if load_format == "dummy":
        return load_hf_config(path), None
    if str(path).endswith(".gguf"):
        path = gguf_to_hf_dir(path)
    if not Path(path).is_dir():
        raise EngineError(f"model path {path!r} is neither a directory nor a .gguf file "
                          "(sglc loads local files only; nothing is downloaded)")
    cfg = load_hf_config(path)
    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise EngineError(f"no *.safetensors files in {path!r}")
    return cfg, _iter_safetensors(files)


def _iter_safetensors(files) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    for f in files:
        with safe_open(str(f), framework="pt") as sf:
            for name in sf.keys():  # noqa: SIM118  (safe_open is not a mapping)
                yield name, sf.get_tensor(name)


def gguf_to_hf_dir(gguf_path: str) -> str:
    """Convert a Llama-architecture GGUF to an HF directory (float32 safetensors) once; cached by hash."""
    out = cache_dir() / "models" / file_digest(gguf_path)
    if (out / "model.safetensors").exists() and (out / "config.json").exists():
        return str(out)
    import gguf
    from safetensors.torch import save_file

    logger.info("converting %s to a cached HF checkpoint at %s (once)", gguf_path, out)
    reader = gguf.GGUFReader(gguf_path)
    meta = {k: _field(f) for k, f in reader.fields.items() if k not in _GGUF_BIG_FIELDS}
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise EngineError(f"GGUF architecture {arch!r} is not supported (only llama)")
    cfg = _gguf_config(meta)
    tensors: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        w = torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).copy()).float()
        name = _gguf_name(t.name)
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = cfg["num_attention_heads"] if "q_proj" in name else cfg["num_key_value_heads"]
            w = _unpermute(w, heads)
        tensors[name] = w.contiguous()
    cfg["tie_word_embeddings"] = "lm_head.weight" not in tensors
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(tmp / "model.safetensors"))
    (tmp / "config.json").write_text(json.dumps(cfg, indent=1))
    if out.exists():  # another process won the race
        import shutil

        shutil.rmtree(tmp)
    else:
        os.replace(tmp, out)
    return str(out)


def _field(f):
    try:
        return f.contents()
    except Exception:  # noqa: BLE001  (NOTE: some array fields can't be decoded; we don't need them)
        return None


def _gguf_name(name: str) -> str:
    if name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if name == "output_norm.weight":
        return "model.norm.weight"
    if name == "output.weight":
        return "lm_head.weight"
    _, layer, kind, suffix = name.split(".")
    return f"model.layers.{layer}.{_GGUF_NAMES[kind]}.{suffix}"


def _unpermute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's interleaving of q/k rows (back to HF's rotate_half layout)."""
    rows, cols = w.shape
    return w.reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def _gguf_config(m: dict) -> dict:
    heads = int(m["llama.attention.head_count"])
    hidden = int(m["llama.embedding_length"])
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": hidden, "intermediate_size": int(m["llama.feed_forward_length"]),
        "num_hidden_layers": int(m["llama.block_count"]), "num_attention_heads": heads,
        "num_key_value_heads": int(m.get("llama.attention.head_count_kv") or heads),
        "head_dim": int(m.get("llama.rope.dimension_count") or hidden // heads),
        "rms_norm_eps": float(m["llama.attention.layer_norm_rms_epsilon"]),
        "rope_theta": float(m.get("llama.rope.freq_base") or 10000.0),
        "max_position_embeddings": int(m["llama.context_length"]),
        "vocab_size": int(m.get("llama.vocab_size") or 0) or None,
        "bos_token_id": m.get("tokenizer.ggml.bos_token_id"), "eos_token_id": m.get("tokenizer.ggml.eos_token_id"),
        "torch_dtype": "float32",
    }
