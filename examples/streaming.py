"""Streaming (SGLang README): print the text as it is generated."""
from __future__ import annotations

import sglc as sgl


@sgl.function
def text_qa(s, question):
    s += "Q: " + question + "\n"
    s += "A:" + sgl.gen("answer", stop="\n")


def main(backend=None, max_new_tokens: int = 32, temperature: float = 0.1):
    backend = backend or sgl.Engine()
    sgl.set_default_backend(backend)
    state = text_qa.run(question="What is the capital of France?", temperature=temperature, stream=True,
                        max_new_tokens=max_new_tokens)
    pieces = []
    for out in state.text_iter():
        pieces.append(out)
        print(out, end="", flush=True)
    print()
    return state, pieces


if __name__ == "__main__":
    main()
