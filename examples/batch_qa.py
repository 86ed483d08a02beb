"""Batch Q&A (SGLang README): one program, many inputs, run concurrently with a progress bar."""
from __future__ import annotations

import sglc as sgl

QUESTIONS = [
    "What is the capital of the United Kingdom?",
    "What is the capital of France?",
    "What is the capital of Japan?",
]


@sgl.function
def text_qa(s, question):
    s += "Q: " + question + "\n"
    s += "A:" + sgl.gen("answer", stop="\n")


def main(backend=None, max_new_tokens: int = 32):
    backend = backend or sgl.Engine()
    sgl.set_default_backend(backend)
    states = text_qa.run_batch([{"question": q} for q in QUESTIONS], progress_bar=True, temperature=0,
                               max_new_tokens=max_new_tokens)
    for q, s in zip(QUESTIONS, states):
        print(q, "->", s["answer"].strip())
    return states


if __name__ == "__main__":
    main()
