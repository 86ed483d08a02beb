"""Passes on switches: cases are mutually exclusive, so nothing is batched or hoisted across them."""
from __future__ import annotations

from pathlib import Path

import passes

GOLDEN = Path(__file__).parent / "golden"

# A fork (never joined) whose branches each end in a switch; the j-th gen of each *case* must not be batched
# with another branch's: a case not taken never arrives at the rendezvous.
BRANCH_SWITCHES = """\
graph branches() {
  %0 = text @s0 "Q:"
  %1 = fork @s0 n=2
  %2 = get_fork_item @s1 %1[0]
  %3 = get_fork_item @s2 %1[1]
  %4 = gen @s1 "a" {max_new_tokens=2}
  %5 = select @s1 "t" choices=["x", "y"] method=token_length_normalized
  %6 = switch @s1 %5."t" {"x": @s3, "y": @s4}
  %7 = case @s3 %6 "x"
  %8 = case @s4 %6 "y"
  %9 = gen @s2 "a" {max_new_tokens=2}
  %10 = select @s2 "t" choices=["x", "y"] method=token_length_normalized
  %11 = switch @s2 %10."t" {"x": @s5, "y": @s6}
  %12 = case @s5 %11 "x"
  %13 = case @s6 %11 "y"
  %14 = text @s3 "same "
  %15 = text @s3 "text"
  %16 = gen @s3 "b" {}
  %17 = text @s4 "same text"
  %18 = gen @s4 "b" {}
  %19 = gen @s5 "b" {}
  %20 = gen @s6 "b" {}
}
"""


def test_batches_stop_at_a_switch_and_never_span_cases():
    out = passes.optimize(passes.parse_graph(BRANCH_SWITCHES), 2)
    plan = passes.get_plan(out)
    assert plan.gen_batches == ((4, 9),) and plan.select_batches == ((5, 10),)
    # the cases' shared text is not a hoist (one case runs); folding stays inside each case
    assert {h.at for h in plan.hoists} == {1}
    assert '%14 = text @s3 "same text"' in passes.format_graph(out)


def test_switch_pipeline_is_idempotent():
    graph = passes.parse_graph((GOLDEN / "switch.in.ir").read_text())
    once = passes.optimize(graph, 2)
    assert passes.format_graph(passes.optimize(once, 2)) == passes.format_graph(once)
    assert passes.format_graph(graph) == (GOLDEN / "switch.in.ir").read_text()  # the input is not mutated
