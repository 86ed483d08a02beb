"""The sglc frontend in one screen: trace a program to IR, print it, run it (graph and eager mode).

    python examples/frontend_demo.py

1. ``fn.trace()`` records the program as an ``ir.Graph`` (arguments stay symbolic);
2. the printed IR shows one SSA-like line per node (roles, gens, a fork with two branches, a select);
3. the graph runs on the embedded model (graph mode) and so does the Python function (eager mode):
   at temperature 0 both produce the same text;
4. data-dependent control flow is rejected at trace time with a fix-it message.
"""
from __future__ import annotations

import time

import ir
import sglc as sgl


@sgl.function
def travel_plan(s, city):
    s += sgl.system("You are a concise travel guide.")
    s += sgl.user("Name one famous sight in " + city + ".")
    s += sgl.assistant(sgl.gen("sight", stop="\n"))
    forks = s.fork(2)
    for f, aspect in zip(forks, ["history", "best time to visit"]):
        f += sgl.user("In one sentence, tell me about its " + aspect + ".")
        f += sgl.assistant(sgl.gen("detail", stop="\n"))
    forks.join()
    s += sgl.user("Is it worth a visit? Answer yes or no.")
    s += sgl.assistant(sgl.select("verdict", choices=["yes", "no"]))


@sgl.function
def dynamic(s, question):
    s += question + sgl.gen("answer", max_tokens=8)
    if s["answer"] == "yes":  # control flow on a generated value: fine eagerly, not traceable
        s += " Great!"


def main(backend=None, max_new_tokens: int = 24):
    graph = travel_plan.trace()
    print("== IR of travel_plan (traced with a symbolic `city`) ==")
    print(ir.print_graph(graph))
    print(f"JSON artifact: {len(ir.dumps(graph))} bytes, format {ir.FORMAT} v{ir.VERSION}\n")

    try:
        dynamic.trace()
    except sgl.TraceError as e:
        print("== tracing `dynamic` is refused ==\n" + str(e) + "\n")

    backend = backend or sgl.Engine()
    sgl.set_default_backend(backend)
    t0 = time.perf_counter()
    g = travel_plan.run_graph(graph=graph, city="Paris", temperature=0, max_new_tokens=max_new_tokens)
    t1 = time.perf_counter()
    e = travel_plan.run(city="Paris", temperature=0, max_new_tokens=max_new_tokens)
    t2 = time.perf_counter()
    print("== answers (graph mode) ==")
    print("sight:   ", g["sight"].strip())
    for aspect, detail in zip(["history", "best time"], g["detail"]):
        print(f"{aspect + ':':9s}", detail.strip())
    print("verdict: ", g["verdict"])
    print(f"\ngraph mode {t1 - t0:.1f}s, eager mode {t2 - t1:.1f}s; same text: {g.text() == e.text()}")
    return graph, g, e


if __name__ == "__main__":
    main()
