"""`make run`: load the embedded SmolLM2-135M-Instruct and answer a few prompts in one batch.

Shows continuous batching (one call, many prompts), the radix cache (a shared system prompt is
computed once) and a regex-constrained answer.
"""
from __future__ import annotations

import time

import sglc

QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colors.",
    "What is 12 times 12?",
    "Give one tip for staying healthy.",
]


def chat(tokenizer, question: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                         add_generation_prompt=True)


def main() -> None:
    t0 = time.perf_counter()
    with sglc.Engine() as engine:
        print(f"loaded {engine.model_info()['model_path'].rsplit('/', 1)[-1]} in {time.perf_counter() - t0:.1f}s")
        prompts = [chat(engine.tokenizer, q) for q in QUESTIONS]
        t1 = time.perf_counter()
        outs = engine.generate(prompts, {"temperature": 0, "max_new_tokens": 48})
        dt = time.perf_counter() - t1
        for q, o in zip(QUESTIONS, outs):
            m = o["meta_info"]
            print(f"\nQ: {q}\nA: {o['text'].strip()}\n   ({m['prompt_tokens']} prompt tokens, "
                  f"{m['cached_tokens']} from the radix cache, {m['completion_tokens']} generated)")
        n_out = sum(o["meta_info"]["completion_tokens"] for o in outs)
        print(f"\nbatch of {len(outs)}: {n_out} tokens in {dt:.1f}s ({n_out / dt:.1f} tok/s)")
        ip = engine.generate(chat(engine.tokenizer, "What is the IP address of Google's DNS server?"),
                             {"temperature": 0, "max_new_tokens": 24,
                              "regex": r"((25[0-5]|2[0-4]\d|[01]?\d\d?)\.){3}(25[0-5]|2[0-4]\d|[01]?\d\d?)"})
        print(f"regex-constrained IP answer: {ip['text']}")
        m = engine.metrics()
        print(f"cache: {m['cached_tokens_total']} of {m['prompt_tokens_total']} prompt tokens reused "
              f"(hit rate {m['cache_hit_rate']:.0%}); KV pool {m['kv_used_tokens']}/{m['kv_total_tokens']} "
              f"tokens in use; {m['forward_passes_total']} forward passes")


if __name__ == "__main__":
    main()
