"""Artifacts (round trip, version refusal) and the compile/viz CLI — no model needed."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import passes
from sglc.cli import main
from sglc.compiler.artifact import Artifact, ArtifactError
from sglc.compiler.build import compile_graph

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIP = f"{EXAMPLES / 'tip_suggestion.py'}:tip_suggestion"


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


def test_cli_errors_are_messages_not_tracebacks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", f"{EXAMPLES / 'tool_use.py'}", "--emit", "ir"]) == 1
    assert "generated variable 'tool' is compared" in capsys.readouterr().err
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
