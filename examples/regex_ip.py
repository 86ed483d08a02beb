"""Regex-constrained generation (SGLang README): the answer must be an IPv4 address."""
from __future__ import annotations

import sglc as sgl

IP_REGEX = r"((25[0-5]|2[0-4]\d|[01]?\d\d?).){3}(25[0-5]|2[0-4]\d|[01]?\d\d?)"


@sgl.function
def regular_expression_gen(s):
    s += "Q: What is the IP address of the Google DNS servers?\n"
    s += "A: " + sgl.gen(
        "answer",
        temperature=0,
        regex=IP_REGEX,
    )


def main(backend=None, max_new_tokens: int = 24):
    backend = backend or sgl.Engine()
    sgl.set_default_backend(backend)
    state = regular_expression_gen.run(max_new_tokens=max_new_tokens)
    print(state.text())
    return state


if __name__ == "__main__":
    main()
