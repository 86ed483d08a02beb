"""Model architectures behind one registry: HF ``architectures`` name → model class."""
from __future__ import annotations

from ..errors import EngineError
from .llama import LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM

MODEL_REGISTRY: dict[str, type] = {
    "LlamaForCausalLM": LlamaForCausalLM,
    "MistralForCausalLM": MistralForCausalLM,
    "Qwen2ForCausalLM": Qwen2ForCausalLM,
}


def get_model_class(hf_config) -> type:
    archs = getattr(hf_config, "architectures", None) or ["LlamaForCausalLM"]
    for a in archs:
        if a in MODEL_REGISTRY:
            return MODEL_REGISTRY[a]
    raise EngineError(f"unsupported architecture {archs}; supported: {sorted(MODEL_REGISTRY)}")
