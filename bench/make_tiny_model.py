"""Write a tiny random Llama with the embedded model's vocabulary (49,152 tokens) to a directory.

    .venv/bin/python bench/make_tiny_model.py /tmp/tiny-smol
    .venv/bin/python bench/bench_programs.py --model-path /tmp/tiny-smol --no-radix-off

Its forward passes take about a millisecond on a CPU, so a program's time goes to the client and the scheduler,
as it does for the 135M model on an H100: a CPU stand-in for the GPU's regime (docs/PERFORMANCE.md, "Programs").
``bench_programs.py`` gives it the embedded GGUF's tokenizer. Random weights never pick ``\\n``, so every gen
runs to its ``max_tokens``.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path, help="directory to write (config.json + model.safetensors)")
    ap.add_argument("--hidden-size", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ns = ap.parse_args()
    import torch
    import transformers

    torch.manual_seed(ns.seed)
    cfg = transformers.LlamaConfig(hidden_size=ns.hidden_size, intermediate_size=2 * ns.hidden_size,
                                   num_hidden_layers=ns.layers, num_attention_heads=4, num_key_value_heads=2,
                                   vocab_size=49152, max_position_embeddings=8192, tie_word_embeddings=True,
                                   bos_token_id=1, eos_token_id=2)
    model = transformers.LlamaForCausalLM(cfg)
    model.save_pretrained(ns.out, safe_serialization=True)
    print(f"wrote {ns.out}: {sum(p.numel() for p in model.parameters()):,} parameters")


if __name__ == "__main__":
    main()
