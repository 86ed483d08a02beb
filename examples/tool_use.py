"""Tool use with control flow (SGLang README): select a tool, then branch on the choice in Python."""
from __future__ import annotations

import sglc as sgl


@sgl.function
def tool_use(s, question):
    s += "To answer this question: " + question + ". "
    s += "I need to use a " + sgl.gen("tool", choices=["calculator", "search engine"]) + ". "
    if s["tool"] == "calculator":
        s += "The math expression is" + sgl.gen("expression")
    elif s["tool"] == "search engine":
        s += "The key word to search is" + sgl.gen("word")


def main(backend=None, max_new_tokens: int = 32):
    backend = backend or sgl.Engine()
    sgl.set_default_backend(backend)
    state = tool_use.run(question="What is the population of London?", temperature=0, stop="\n",
                         max_new_tokens=max_new_tokens)
    print(state.text())
    print("\n-- tool:", state["tool"])
    return state


if __name__ == "__main__":
    main()
