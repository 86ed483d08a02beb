"""Fork tip suggestion (SGLang README): two branches expand tips in parallel, the parent reads them."""
from __future__ import annotations

import sglc as sgl


@sgl.function
def tip_suggestion(s):
    s += (
        "Here are two tips for staying healthy: "
        "1. Balanced Diet. 2. Regular Exercise.\n\n"
    )
    forks = s.fork(2)
    for i, f in enumerate(forks):
        f += f"Now, expand tip {i+1} into a paragraph:\n"
        f += sgl.gen("detailed_tip", stop="\n\n")
    s += "Tip 1:" + forks[0]["detailed_tip"] + "\n"
    s += "Tip 2:" + forks[1]["detailed_tip"] + "\n"
    s += "In summary" + sgl.gen("summary")


def main(backend=None, max_new_tokens: int = 48):
    backend = backend or sgl.Engine()
    sgl.set_default_backend(backend)
    state = tip_suggestion.run(temperature=0, max_new_tokens=max_new_tokens)
    print(state.text())
    return state


if __name__ == "__main__":
    main()
