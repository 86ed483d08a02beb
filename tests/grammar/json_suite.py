"""Runs the JSON Schema Test Suite (draft 2020-12) against the char-level automata (and the byte-level
pushdown automaton where a ``$ref`` is recursive).

Usable as a module (``run_suite``) and a script (prints the coverage table).
"""
from __future__ import annotations

import glob
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def suite_dir() -> Path | None:
    candidates = [os.environ.get("SGLC_JSON_SCHEMA_SUITE", ""),
                  str(REPO.parent / "shared/data/json-schema-test-suite/draft2020-12"),
                  "/work/shared/data/json-schema-test-suite/draft2020-12"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return None


@dataclass
class SuiteResult:
    groups: int = 0
    compiled: int = 0
    pushdown: int = 0       # compiled groups with a recursive $ref (run as a pushdown automaton)
    refused: int = 0
    instances: int = 0
    checked: int = 0
    false_accepts: list = field(default_factory=list)
    false_rejects: list = field(default_factory=list)
    refusals: dict = field(default_factory=dict)
    per_file: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)


def serialize(instance) -> str:
    """The sglc whitespace policy: json.dumps defaults, ensure_ascii=False."""
    return json.dumps(instance, ensure_ascii=False)


def run_suite(root: Path, files: list[str] | None = None) -> SuiteResult:
    from grammar import GrammarError
    from grammar.cfg import Grammar, compile_grammar
    from grammar.fsm import compile_rx
    from grammar.json_schema import schema_to_grammar

    res = SuiteResult()
    for path in sorted(glob.glob(str(root / "*.json"))):
        name = Path(path).stem
        if files is not None and name not in files:
            continue
        ok = 0
        with open(path, encoding="utf-8") as f:
            groups = json.load(f)
        for group in groups:
            res.groups += 1
            res.instances += len(group["tests"])
            try:
                built = schema_to_grammar(group["schema"])
                if isinstance(built, Grammar):
                    pda = compile_grammar(built)
                    res.pushdown += 1
                    match = lambda text, pda=pda: pda.fullmatch(text.encode("utf-8"))
                else:
                    match = compile_rx(built).fullmatch
            except GrammarError as e:
                res.refused += 1
                res.refusals.setdefault(name, []).append(f"{group['description']}: {e}")
                continue
            except Exception as e:  # noqa: BLE001 - a crash is a bug: recorded, reported by the test
                res.errors.append((name, group["description"], repr(e)))
                continue
            res.compiled += 1
            ok += 1
            for test in group["tests"]:
                res.checked += 1
                accepted = match(serialize(test["data"]))
                where = (name, group["description"], test["description"], serialize(test["data"]))
                if accepted and not test["valid"]:
                    res.false_accepts.append(where)
                elif not accepted and test["valid"]:
                    res.false_rejects.append(where)
        res.per_file[name] = ok
    return res


def main() -> None:
    root = suite_dir()
    if root is None:
        print("JSON Schema Test Suite not found")
        return
    t0 = time.perf_counter()
    res = run_suite(root, sys.argv[1:] or None)
    print(f"groups {res.groups}  compiled {res.compiled} (pushdown {res.pushdown})  refused {res.refused}  instances {res.instances} "
          f"checked {res.checked}  false accepts {len(res.false_accepts)}  false rejects {len(res.false_rejects)}"
          f"  ({time.perf_counter() - t0:.1f} s)")
    for err in res.errors:
        print("ERROR", err)
    for fa in res.false_accepts:
        print("FALSE ACCEPT", fa)
    for fr in res.false_rejects:
        print("false reject", fr)
    if os.environ.get("SHOW_REFUSALS"):
        for name, msgs in res.refusals.items():
            for m in msgs:
                print("refused", name, m[:200])


if __name__ == "__main__":
    main()
