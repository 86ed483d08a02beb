"""Program workloads for ``bench_programs.py``, after the SGLang paper's benchmarks (small, CPU-sized)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sglc as sgl

SHOTS = [
    ("Which planet is known as the Red Planet?", ["Venus", "Mars", "Jupiter", "Saturn"], "B"),
    ("What is the boiling point of water at sea level in Celsius?", ["90", "100", "110", "120"], "B"),
    ("Which gas do plants absorb from the air?", ["Oxygen", "Nitrogen", "Carbon dioxide", "Helium"], "C"),
    ("How many legs does a spider have?", ["Six", "Eight", "Ten", "Twelve"], "B"),
    ("Which organ pumps blood through the body?", ["Heart", "Liver", "Lung", "Kidney"], "A"),
]
QUESTIONS = [
    ("What is the largest ocean on Earth?", ["Atlantic", "Indian", "Arctic", "Pacific"]),
    ("Which metal is liquid at room temperature?", ["Iron", "Mercury", "Copper", "Silver"]),
    ("What is the capital of Japan?", ["Kyoto", "Osaka", "Tokyo", "Nagoya"]),
    ("How many continents are there?", ["Five", "Six", "Seven", "Eight"]),
    ("Which animal is the largest mammal?", ["Elephant", "Blue whale", "Giraffe", "Hippo"]),
    ("What do bees make?", ["Milk", "Silk", "Honey", "Wax paper"]),
    ("Which planet is closest to the Sun?", ["Mercury", "Venus", "Earth", "Mars"]),
    ("What is frozen water called?", ["Steam", "Ice", "Fog", "Dew"]),
]
CONTEXTS = [
    ("A man is standing on a ladder next to a house. He", ["climbs up and paints the wall.", "eats a sandwich.",
                                                          "swims across the lake.", "flies away."]),
    ("A woman pours batter into a hot pan. She", ["flips the pancake after a minute.", "reads a novel.",
                                                  "plants a tree.", "drives to work."]),
    ("A child kicks a ball across the park. The dog", ["runs after the ball.", "writes a letter.",
                                                       "cooks dinner.", "opens a bank account."]),
    ("Two people shake hands at the start of a meeting. They", ["sit down at the table.", "jump into a pool.",
                                                               "climb a mountain.", "paint the ceiling."]),
]
PEOPLE = ["Alice Smith is a 34 year old engineer from Boston.", "Bob Jones, 51, works as a chef in Paris.",
          "Carla Diaz is a teacher aged 28 living in Madrid.", "Dan Wu, a 45 year old doctor, lives in Toronto."]
PERSON_SCHEMA = json.dumps({"type": "object", "properties": {"name": {"type": "string", "maxLength": 16},
                                                             "age": {"type": "integer"}},
                            "required": ["name", "age"]})
PERSON_REGEX = r"\{\"name\": \"[A-Za-z ]{1,16}\", \"age\": [0-9]{1,3}\}"


def mmlu_header() -> str:
    text = "The following are multiple choice questions about general knowledge.\n\n"
    for q, choices, answer in SHOTS:
        text += _question(q, choices) + "Answer: " + answer + "\n\n"
    return text


def _question(q: str, choices: list[str]) -> str:
    return q + "\n" + "".join(f"{letter}. {c}\n" for letter, c in zip("ABCD", choices))


@sgl.function
def mmlu(s, question):
    s += mmlu_header() + question + "Answer:" + sgl.select("answer", choices=[" A", " B", " C", " D"])


def hellaswag(endings: list[str]) -> sgl.SglFunction:
    @sgl.function
    def hellaswag_item(s, context):
        s += "Pick the most likely continuation.\n" + context + sgl.select("ending", choices=[" " + e for e in endings])

    return hellaswag_item


SKELETON = ["Definition", "Example", "Benefit", "Caveat"]


@sgl.function
def skeleton_of_thought(s, question, max_tokens=12):
    """A fixed skeleton, each point expanded in its own branch, then a summary over two of them.

    NOTE: each branch's prompt ends in the point's name ("Expanded point 1 (Definition):"). Until session 12 it
    ended in "Now expand point 1 in one sentence:", after which the embedded model's first token is a newline,
    the gen's stop: every branch came back empty, and the workload measured two or three passes."""
    s += "You are a helpful assistant. Answer in a few short points.\nQuestion: " + question + "\n"
    s += "Skeleton: " + " ".join(f"{i + 1}. {p}" for i, p in enumerate(SKELETON)) + "\n"
    forks = s.fork(len(SKELETON))
    for i, f in enumerate(forks):
        f += f"Expanded point {i + 1} ({SKELETON[i]}):" + sgl.gen("point", max_tokens=max_tokens, stop="\n")
    forks.join()
    s += "Summary:" + forks[0]["point"] + forks[1]["point"] + sgl.gen("summary", max_tokens=max_tokens, stop="\n")


@sgl.function
def tree_of_thought(s, question, branches=2, max_tokens=8):
    """After SGLang's tree-of-thought benchmark: plans, a solution per plan and branch, a check per solution and
    branch (three fork levels, 2 + 4 + 8 gens; the branch texts differ, so greedy branches differ too).

    NOTE: every label ends in the first words of its answer ("Plan 1: First,"). Until session 12 the labels ended
    in a colon ("Plan 1:"), after which the embedded model's first token is a newline, the gens' stop: every gen
    of the tree came back empty."""
    s += "Solve the problem. Think in plans, solutions and checks.\nQuestion: " + question + "\n"
    plans = s.fork(branches)
    for i, plan in enumerate(plans):
        plan += "Plan " + str(i + 1) + ": First," + sgl.gen("plan", max_tokens=max_tokens, stop="\n")
        sols = plan.fork(branches)
        for j, sol in enumerate(sols):
            sol += "\nSolution " + str(j + 1) + ": The answer is" + sgl.gen("solution", max_tokens=max_tokens, stop="\n")
            checks = sol.fork(branches)
            for k, check in enumerate(checks):
                check += ("\nCheck " + str(k + 1) + ": the score from 1 to 5 is"
                          + sgl.gen("score", max_tokens=4, stop="\n"))


def document() -> str:
    """A ~600-token report (deterministic) for the long-context fork workload."""
    facts = [f"In year {2000 + i}, the northern farm harvested {120 + 7 * i} tonnes of wheat and the southern farm "
             f"{95 + 11 * i} tonnes, while rainfall was {600 + 13 * i} millimetres." for i in range(16)]
    return "Report on two farms.\n" + "\n".join(facts) + "\n"


@sgl.function
def document_fork(s, question, max_tokens=8):
    s += "Read the report and answer.\n" + document() + "Question: " + question + "\n"
    forks = s.fork(4)
    for i, f in enumerate(forks):
        # NOTE: "...: The", not "...:" (after a colon the embedded model's first token is the stop, a newline)
        f += "Aspect " + str(i + 1) + " of the question: The" + sgl.gen("aspect", max_tokens=max_tokens, stop="\n")
    forks.join()
    s += "Answer:" + sgl.gen("answer", max_tokens=max_tokens, stop="\n")


def json_extract(use_schema: bool) -> sgl.SglFunction:
    constraint = {"json_schema": PERSON_SCHEMA} if use_schema else {"regex": PERSON_REGEX}

    @sgl.function
    def json_extraction(s, text):
        s += "Extract the person's name and age as JSON.\nText: " + text + "\nJSON: "
        s += sgl.gen("json", max_tokens=24, **constraint)

    return json_extraction


@sgl.function
def multi_turn(s, question_1, question_2):
    s += sgl.system("You are a helpful assistant who answers in one short sentence.")
    s += sgl.user(question_1)
    s += sgl.assistant(sgl.gen("answer_1", max_tokens=10, stop="\n"))
    s += sgl.user(question_2)
    s += sgl.assistant(sgl.gen("answer_2", max_tokens=10, stop="\n"))


@dataclass
class Workload:
    """A name and a list of (program, arguments) items run concurrently as one batch."""

    name: str
    items: list[tuple[sgl.SglFunction, dict[str, Any]]] = field(default_factory=list)


def workloads(n: int, use_schema: bool) -> list[Workload]:
    qs = [(_question(q, c), ) for q, c in QUESTIONS][:n]
    return [
        Workload("mmlu-5shot select", [(mmlu, {"question": q}) for (q,) in qs]),
        Workload("hellaswag 4-way select", [(hellaswag(e), {"context": c}) for c, e in CONTEXTS[:n]]),
        Workload("skeleton-of-thought fork x4", [(skeleton_of_thought, {"question": q})
                                                  for q in ["What is exercise?", "What is sleep?",
                                                            "What is reading?", "What is tea?"][:n]]),
        Workload("tree-of-thought fork 2x2x2", [(tree_of_thought, {"question": q})
                                                 for q in ["What is 17 * 23?", "How many legs do 3 cats have?",
                                                           "What is half of 90?", "Is 91 prime?"][:n]]),
        Workload("long-context fork x4", [(document_fork, {"question": q})
                                          for q in ["Which farm grew more?", "Did rain help?", "What was the trend?",
                                                    "Which year was best?"][:n]]),
        Workload("json extraction", [(json_extract(use_schema), {"text": t}) for t in PEOPLE[:n]]),
        Workload("multi-turn chat", [(multi_turn, {"question_1": f"Name a {w}.", "question_2": "Why that one?"})
                                     for w in ["fruit", "color", "city", "sport"][:n]]),
    ]
