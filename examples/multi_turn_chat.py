"""Multi-turn question (SGLang README): roles, two generations in one conversation."""
from __future__ import annotations

import sglc as sgl


@sgl.function
def multi_turn_question(s, question_1, question_2):
    s += sgl.system("You are a helpful assistant.")
    s += sgl.user(question_1)
    s += sgl.assistant(sgl.gen("answer_1"))
    s += sgl.user(question_2)
    s += sgl.assistant(sgl.gen("answer_2"))


def main(backend=None, max_new_tokens: int = 64):
    backend = backend or sgl.Engine()
    sgl.set_default_backend(backend)
    state = multi_turn_question.run(
        question_1="What is the capital of the United States?",
        question_2="List two local attractions.",
        temperature=0, max_new_tokens=max_new_tokens,
    )
    for m in state.messages():
        print(m["role"], ":", m["content"])
    print("\n-- answer_1:", state["answer_1"])
    return state


if __name__ == "__main__":
    main()
