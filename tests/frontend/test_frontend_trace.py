"""Tracing: program -> printed IR (golden), and TraceError for dynamic control flow. No model."""
from __future__ import annotations

import pytest

import ir
import sglc as sgl


@sgl.function
def multi_turn(s, question_1, question_2):
    s += sgl.system("You are a helpful assistant.")
    s += sgl.user(question_1)
    s += sgl.assistant(sgl.gen("answer_1", max_tokens=16))
    s += sgl.user(question_2)
    s += sgl.assistant(sgl.gen("answer_2", max_tokens=16, temperature=0))


MULTI_TURN = """\
graph multi_turn(question_1, question_2) {
  %0 = role_begin @s0 system
  %1 = text @s0 "You are a helpful assistant."
  %2 = role_end @s0 system
  %3 = role_begin @s0 user
  %4 = argument @s0 $question_1
  %5 = role_end @s0 user
  %6 = role_begin @s0 assistant
  %7 = gen @s0 "answer_1" {max_new_tokens=16}
  %8 = role_end @s0 assistant
  %9 = role_begin @s0 user
  %10 = argument @s0 $question_2
  %11 = role_end @s0 user
  %12 = role_begin @s0 assistant
  %13 = gen @s0 "answer_2" {max_new_tokens=16, temperature=0}
  %14 = role_end @s0 assistant
}
"""


@sgl.function
def tip_suggestion(s, topic):
    s += "Here are two tips for " + topic + ".\n"
    forks = s.fork(2)
    for i, f in enumerate(forks):
        f += f"Now, expand tip {i + 1} into a paragraph:\n"
        f += sgl.gen("detailed_tip", max_tokens=32, stop="\n\n")
    forks.join()
    s += "Tip 1:" + forks[0]["detailed_tip"] + "\n"
    s += "Tip 2:" + forks[1]["detailed_tip"] + "\n"
    s += "In summary" + sgl.gen("summary", max_tokens=16)


TIPS = """\
graph tip_suggestion(topic) {
  %0 = text @s0 "Here are two tips for "
  %1 = argument @s0 $topic
  %2 = text @s0 ".\\n"
  %3 = fork @s0 n=2
  %4 = get_fork_item @s1 %3[0]
  %5 = get_fork_item @s2 %3[1]
  %6 = text @s1 "Now, expand tip 1 into a paragraph:\\n"
  %7 = gen @s1 "detailed_tip" {max_new_tokens=32, stop=["\\n\\n"]}
  %8 = text @s2 "Now, expand tip 2 into a paragraph:\\n"
  %9 = gen @s2 "detailed_tip" {max_new_tokens=32, stop=["\\n\\n"]}
  %10 = join @s0 %3 mode=gather_variable after=[%7, %9]
  %11 = text @s0 "Tip 1:"
  %12 = var_ref @s0 %7."detailed_tip"
  %13 = text @s0 "\\n"
  %14 = text @s0 "Tip 2:"
  %15 = var_ref @s0 %9."detailed_tip"
  %16 = text @s0 "\\n"
  %17 = text @s0 "In summary"
  %18 = gen @s0 "summary" {max_new_tokens=16}
}
"""


@sgl.function
def tool_use(s, question):
    s += "To answer " + question + ", I need to use a " + sgl.gen("tool", choices=["calculator", "search engine"])
    s += ". The tool says: " + s["tool"]
    s += sgl.gen_int("count", max_tokens=4) + sgl.gen(regex=r"[a-z]+", max_tokens=4)
    with s.user():
        s += sgl.image("photo.png")


TOOL_USE = """\
graph tool_use(question) {
  %0 = text @s0 "To answer "
  %1 = argument @s0 $question
  %2 = text @s0 ", I need to use a "
  %3 = select @s0 "tool" choices=["calculator", "search engine"] method=token_length_normalized
  %4 = text @s0 ". The tool says: "
  %5 = var_ref @s0 %3."tool"
  %6 = gen @s0 "count" {max_new_tokens=4} dtype=int
  %7 = gen @s0 "_gen_1" {max_new_tokens=4, regex="[a-z]+"}
  %8 = role_begin @s0 user
  %9 = image @s0 "photo.png"
  %10 = role_end @s0 user
}
"""


@pytest.mark.parametrize("program, golden", [(multi_turn, MULTI_TURN), (tip_suggestion, TIPS),
                                             (tool_use, TOOL_USE)])
def test_trace_golden(program, golden):
    graph = program.trace()
    assert ir.print_graph(graph) == golden
    assert ir.loads(ir.dumps(graph)) == graph


def test_trace_records_source_lines():
    graph = multi_turn.trace()
    locs = {graph.node(nid).loc for nid in graph.order()}
    assert all(loc.startswith("test_frontend_trace.py:") for loc in locs)


def test_concrete_trace_arguments_are_baked_in():
    graph = multi_turn.trace(question_2="Why?")
    assert graph.arguments == ("question_1",)
    assert '%10 = text @s0 "Why?"' in ir.print_graph(graph)


@sgl.function
def branch_on_gen(s):
    s += sgl.gen("answer", max_tokens=4)
    if s["answer"] == "yes":
        s += "good"


@sgl.function
def fstring_arg(s, name):
    s += f"Hello {name}"


@sgl.function
def bool_arg(s, flag):
    if flag:
        s += "x"


@sgl.function
def method_on_var(s):
    s += sgl.gen("a", max_tokens=4)
    s += s["a"].strip()


@sgl.function
def str_of_arg(s, n):
    s += "count: " + str(n)


@sgl.function
def read_text(s):
    s += "a"
    s.text()


@pytest.mark.parametrize("program, message", [
    (branch_on_gen, (r"test_frontend_trace.py:\d+: `if s\[\"answer\"\] == \"yes\":`: generated variable "
                     r"'answer' is compared, but it is the free text of gen %0: its values are unbounded.*"
                     r"Fix: .*choices=\[")),
    (fstring_arg, r"`s \+= f\"Hello \{name\}\"`: argument 'name' is formatted .*concatenation"),
    (bool_arg, r"`if flag:`: argument 'flag' is used as a condition\. Fix: .*sgl.select"),
    (method_on_var, r"generated variable 'a' is used as a string \(.strip\), but it is the free text of gen"),
    (str_of_arg, r"argument 'n' is converted to str"),
    (read_text, r"cannot read its text"),
])
def test_trace_errors_name_line_and_fix(program, message):
    with pytest.raises(sgl.TraceError, match=message):
        program.trace()


def test_trace_error_for_unknown_variable_and_symbolic_params():
    @sgl.function
    def unknown(s):
        s += s["nope"]

    @sgl.function
    def symbolic_param(s, n):
        s += sgl.gen("x", max_tokens=n)

    with pytest.raises(sgl.TraceError, match="variable 'nope' is not set"):
        unknown.trace()
    with pytest.raises(sgl.TraceError, match="sampling parameter max_new_tokens is a traced value"):
        symbolic_param.trace()


def test_role_spellings_trace_identically():
    @sgl.function
    def with_block(s, q):
        with s.user():
            s += q
        with s.assistant():
            s += sgl.gen("a", max_tokens=2)

    @sgl.function
    def begin_end(s, q):
        s += sgl.user_begin() + q + sgl.user_end()
        s += sgl.assistant_begin()
        s += sgl.gen("a", max_tokens=2)
        s += sgl.assistant_end()

    @sgl.function
    def wrapped(s, q):
        s += sgl.user(q)
        s += sgl.assistant(sgl.gen("a", max_tokens=2))

    texts = {ir.print_graph(p.trace()).split("\n", 1)[1] for p in (with_block, begin_end, wrapped)}
    assert len(texts) == 1
