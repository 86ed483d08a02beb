"""Artifacts (round trip, version refusal) and the compile/viz CLI — no model needed."""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest

import passes
import sglc as sgl
from sglc.cli import main
from sglc.compiler.artifact import Artifact, ArtifactError
from sglc.compiler.build import compile_graph

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIP = f"{EXAMPLES / 'tip_suggestion.py'}:tip_suggestion"
TOOL = f"{EXAMPLES / 'tool_use.py'}:tool_use"
GOLDEN = Path(__file__).resolve().parents[1] / "passes" / "golden"
# Branches on a free-text gen: not traceable (unbounded values), so `sglc run` runs it eagerly.
FREE_TEXT = """\
import sglc as sgl


@sgl.function
def free_text(s, question):
    s += question + sgl.gen("answer", max_tokens=4)
    if s["answer"] == "yes":
        s += " Good."
"""


def free_text_program(tmp_path: Path) -> str:
    path = tmp_path / "free_text.py"
    path.write_text(FREE_TEXT)
    return f"{path}:free_text"


def _artifact() -> Artifact:
    text = (Path(__file__).resolve().parents[1] / "passes" / "golden" / "batch.in.ir").read_text()
    return compile_graph(passes.parse_graph(text), 2)


def test_artifact_round_trip() -> None:
    art = _artifact()
    back = Artifact.loads(art.dumps())
    assert back.graph == art.graph and back.plan == art.plan and not back.plan.is_empty()
    assert back.pipeline == passes.pipeline_for(2) and back.hints["forks"][0]["fanout"] == 2
    assert back.dumps() == art.dumps()


def test_artifact_from_a_newer_version_is_refused() -> None:
    doc = json.loads(_artifact().dumps())
    doc["version"] = 99
    with pytest.raises(ArtifactError, match="format version 99, newer than .* upgrade sglc"):
        Artifact.from_dict(doc)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(format="pickle"), "not an sglc artifact"),
    (lambda d: d["graph"].update(version=7), "graph is invalid.*version 7"),
    (lambda d: d["plan"].update(gen_batches=[[0, 1]]), "graph is invalid.*plan gen batch"),
    (lambda d: d["plan"]["constraints"].append({"node": 6, "kind": "regex", "source": "x", "key": "ab" * 32}),
     "missing from the table"),
])
def test_bad_artifacts_are_refused(mutate, message: str) -> None:
    doc = json.loads(_artifact().dumps())
    mutate(doc)
    with pytest.raises(ArtifactError, match=message):
        Artifact.from_dict(doc)


def test_cli_compile_emits_ir_json_dot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", TIP, "--emit", "ir", "-O2"]) == 0
    assert "batch-gen [%5, %7]" in capsys.readouterr().out
    out = tmp_path / "tip.json"
    assert main(["compile", TIP, "-O0", "-o", str(out)]) == 0
    art = Artifact.load(out)
    assert art.plan.is_empty() and art.graph.name == "tip_suggestion"
    assert main(["viz", TIP, "--emit", "dot"]) == 0
    dot = capsys.readouterr().out
    assert dot.startswith('digraph "tip_suggestion"') and "cluster_s1" in dot and "style=dashed" in dot


def test_cli_compile_binds_args_and_prints_after_each_pass(capsys: pytest.CaptureFixture[str]) -> None:
    target = f"{EXAMPLES / 'batch_qa.py'}:text_qa"
    assert main(["compile", target, "--arg", "question=Why?", "--emit", "ir", "--print-after-all"]) == 0
    out, err = capsys.readouterr()
    assert "graph text_qa()" in out and '"Q: Why?\\nA:"' in out
    assert [m for m in re.findall(r"IR after ([\w-]+)", err)] == passes.pipeline_for(2).split(",")


def test_cli_errors_are_messages_not_tracebacks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", free_text_program(tmp_path), "--emit", "ir"]) == 1
    err = capsys.readouterr().err
    assert "free_text.py:7: `if s[\"answer\"] == \"yes\":`: generated variable 'answer' is compared, but it is " \
           "the free text of gen %1" in err and "Traceback" not in err
    assert main(["compile", TIP, "--pipeline", "fold-text,nope"]) == 1
    assert "unknown pass 'nope'" in capsys.readouterr().err


def test_viz_html_is_self_contained(tmp_path: Path) -> None:
    out = tmp_path / "tip.html"
    assert main(["viz", TIP, "-o", str(out)]) == 0
    page = out.read_text()
    views = re.findall(r'<section class="view" id="view-\d+" data-title="([^"]+)"', page)
    assert views == ["trace"] + [f"after {p}" for p in passes.pipeline_for(2).split(",")]
    last = page[page.rindex('<section class="view"'):]
    assert len(re.findall(r'<g class="node kind-', last)) == 14  # one per IR node after fold-text
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from a network


def test_artifact_with_a_switch_round_trips_and_budgets_one_case() -> None:
    # NOTE: -O2 without compile-constraints: the regex would load the tokenizer (seconds), nothing switch-specific
    art = compile_graph(passes.parse_graph((GOLDEN / "switch.in.ir").read_text()), passes.pipeline_for(2).rsplit(",", 1)[0])
    back = Artifact.loads(art.dumps())
    assert back.graph == art.graph and back.plan == art.plan and back.dumps() == art.dumps()
    assert back.graph.node(6).kind == "switch" and back.graph.switch_cases(6) == [7, 8, 9]
    # the cases are exclusive: the budget is the costliest case (8), not the sum over cases (24)
    assert back.hints["num_switches"] == 1 and back.hints["max_new_tokens_total"] == 8



@sgl.function
def hinted(s):
    s += "Pick a tool: " + sgl.select("tool", choices=["calc", "search", "none"])
    if s["tool"] == "calc":
        s += sgl.gen("x", max_tokens=8) + sgl.gen("y")
    elif s["tool"] == "search":
        s += sgl.gen("w")
    s += sgl.gen("z", max_tokens=2)  # NOTE: traced into every case (three copies)
    forks = s.fork(2)
    forks += "Shared branch prompt. Is it ok? " + sgl.select("ok", choices=["yes", "no"])
    last = forks[1]
    if last["ok"] == "yes":
        last += sgl.gen("v", max_tokens=5) + sgl.gen("u", max_tokens=1)
    else:
        last += sgl.gen("t", max_tokens=4)


def test_hints_count_one_run_through_the_costliest_cases() -> None:
    art = compile_graph(hinted.trace(), passes.pipeline_for(2).rsplit(",", 1)[0])
    hints = art.hints
    # one run: calc (x, y), z, the fork's branch 1 taking "yes" (v, u); not every copy in every case
    assert hints["num_gens"] == 5 and hints["unset_max_new_tokens"] == 1 and hints["max_new_tokens_total"] == 16
    # a branch that ends in a switch continues through its costliest case
    assert [f["branch_max_new_tokens"] for f in hints["forks"]] == [[[], [5, 1]]] * 3


def test_cli_compile_tool_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", TOOL, "--emit", "ir", "--print-after-all"]) == 0
    out, err = capsys.readouterr()
    assert '%6 = switch @s0 %4."tool" {"calculator": @s1, "search engine": @s2}' in out
    assert '%7 = case @s1 %6 "calculator"' in out and '%2 = text @s0 ". I need to use a "' in out
    assert err.count("switch @s0") == len(passes.pipeline_for(2).split(","))
    art_path = tmp_path / "tool.json"
    assert main(["compile", TOOL, "--arg", "question=What is 2+2?", "-o", str(art_path)]) == 0
    art = Artifact.load(art_path)
    assert art.graph.arguments == () and art.hints["num_switches"] == 1
    assert [art.graph.node(n).kind for n in art.graph.streams()["s2"]] == ["case", "text", "gen"]


def test_cli_viz_tool_use_shows_the_switch_and_its_case_lanes(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["viz", TOOL, "--emit", "dot"]) == 0
    dot = capsys.readouterr().out
    assert '[label="%6 switch tool", shape=octagon' in dot
    assert 'subgraph "cluster_s2" { label="s2 · case \\"search engine\\""' in dot
    assert "n6 -> n7 [color=" in dot and "n6 -> n8 [color=" in dot
    out = tmp_path / "tool.html"
    assert main(["viz", TOOL, "-o", str(out)]) == 0
    page = out.read_text()
    last = page[page.rindex('<section class="view"'):]
    assert len(re.findall(r'<g class="node kind-switch"', last)) == 1
    assert len(re.findall(r'<g class="node kind-case"', last)) == 2
    assert len(re.findall(r'<rect class="lane lane-case"', last)) == 2
    assert "s1 · case &quot;calculator&quot;" in last or 's1 · case "calculator"' in last
    assert "runs exactly one case" in html.unescape(last)
